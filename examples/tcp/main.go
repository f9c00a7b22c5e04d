// Command tcp is a raw TCP line-echo server served by graceful as a
// Service: it restarts as an HTTP server does, without resetting a
// connection or losing a byte.
//
// Every line a client sends is written back to it as it is. Connections
// are long-lived: a client sends as many lines as it likes and closes when
// done. It listens on $PORT (default 7070) and, if $PIDFILE is set, keeps
// that file naming the serving process. $WORKERS=N runs it as a cluster of
// N workers (SIGUSR1: phased restart); $HTTP_PORT adds an HTTP server on
// that port, answering "hello from PID", restarted with the echo server;
// $CONTROL names a control socket for gracectl.
//
//	go build -o echo ./examples/tcp && PIDFILE=echo.pid ./echo &
//	nc localhost 7070            # type lines; each comes back
//	kill -USR2 $(cat echo.pid)   # hot restart: nc goes on (on the old process) until idle for 1s
//
// How it stops (its GracefulStop): it stops accepting, then lets every
// open connection go on until its client closes it, except that a
// connection that stays idle for a second (no byte received, and the last
// line it sent fully echoed) is closed: at a line boundary, so a client
// never loses part of a line. A client that reads EOF after its last echo
// dials again and reaches the new process. The server's ShutdownTimeout
// bounds it all: Stop then closes what is left.
package main

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/gograceful/graceful"
)

// idleClose is how long a connection may stay idle, at a line boundary,
// once the server drains.
const idleClose = time.Second

// echoServer echoes lines on every connection it accepts.
type echoServer struct {
	svc *graceful.Service // counts the connections in Status

	mu       sync.Mutex
	ls       []net.Listener
	conns    map[net.Conn]struct{}
	draining bool
	stopped  bool           // Stop was called
	wg       sync.WaitGroup // the accept loops and the connections
}

// Serve accepts connections on l until l is closed or the server stops.
func (e *echoServer) Serve(l net.Listener) error {
	e.mu.Lock()
	if e.draining {
		e.mu.Unlock()
		l.Close()
		return errors.New("echo: stopped")
	}
	e.ls = append(e.ls, l)
	// The accept loop counts in wg: GracefulStop then waits for it, and
	// so for a connection it accepted just as the drain began.
	e.wg.Add(1)
	e.mu.Unlock()
	defer e.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			e.mu.Lock()
			stopped := e.draining
			e.mu.Unlock()
			if stopped {
				return nil
			}
			return err
		}
		e.mu.Lock()
		if e.stopped {
			e.mu.Unlock()
			c.Close()
			continue
		}
		// Accepted as the drain began, its client may have sent lines
		// already: it is served as the others are, drain deadline and
		// all, not closed unanswered.
		e.conns[c] = struct{}{}
		e.wg.Add(1)
		e.mu.Unlock()
		go e.handle(c)
	}
}

// handle echoes c's bytes back as they come. During a drain each read has
// a deadline; when it passes at a line boundary, the connection ends.
func (e *echoServer) handle(c net.Conn) {
	end := e.svc.Begin()
	defer func() {
		c.Close()
		e.mu.Lock()
		delete(e.conns, c)
		e.mu.Unlock()
		end()
		e.wg.Done()
	}()
	buf := make([]byte, 32<<10)
	atBoundary := true // the last byte echoed ended a line
	for {
		e.mu.Lock()
		if e.draining {
			c.SetReadDeadline(time.Now().Add(idleClose))
		}
		e.mu.Unlock()
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
			atBoundary = buf[n-1] == '\n'
		}
		var ne net.Error
		switch {
		case err == nil:
		case errors.As(err, &ne) && ne.Timeout() && !atBoundary:
			// Idle in the middle of a line: wait for its end.
		case errors.As(err, &ne) && ne.Timeout():
			return // idle at a line boundary during a drain
		case errors.Is(err, io.EOF):
			return
		default:
			return
		}
	}
}

// GracefulStop stops accepting and returns once every connection has
// ended: closed by its client, or idle for idleClose at a line boundary.
func (e *echoServer) GracefulStop() {
	e.mu.Lock()
	e.draining = true
	for _, l := range e.ls {
		l.Close()
	}
	for c := range e.conns {
		// Wake the reads up to apply the drain's deadline now.
		c.SetReadDeadline(time.Now().Add(idleClose))
	}
	e.mu.Unlock()
	e.wg.Wait()
}

// Stop closes the listeners and every connection at once.
func (e *echoServer) Stop() {
	e.mu.Lock()
	e.draining, e.stopped = true, true
	for _, l := range e.ls {
		l.Close()
	}
	for c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
}

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "7070"
	}
	srv := &graceful.Server{PIDFile: os.Getenv("PIDFILE"), Control: os.Getenv("CONTROL")}
	srv.Workers, _ = strconv.Atoi(os.Getenv("WORKERS"))
	if hp := os.Getenv("HTTP_PORT"); hp != "" {
		pid := strconv.Itoa(os.Getpid())
		srv.Server = &http.Server{Addr: ":" + hp, ReadHeaderTimeout: 10 * time.Second,
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Pid", pid)
				fmt.Fprintf(w, "hello from %s\n", pid)
			})}
	}
	echo := &echoServer{conns: map[net.Conn]struct{}{}}
	echo.svc = &graceful.Service{
		Name:         "echo",
		Addr:         ":" + port,
		Serve:        echo.Serve,
		GracefulStop: echo.GracefulStop,
		Stop:         echo.Stop,
	}
	if err := srv.AddService(echo.svc); err != nil {
		log.Fatal(err)
	}
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
