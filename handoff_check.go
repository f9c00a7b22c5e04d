package graceful

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// handoffSupported reports why connections cannot be handed off in this
// process, or nil if they can. It runs the self-check once.
func handoffSupported() error {
	if !handoffOS {
		return errors.New("graceful: handing connections off needs Unix")
	}
	return handoffCheck()
}

var handoffCheck = sync.OnceValue(func() error { return checkHandoff(5 * time.Second) })

// checkHandoff confirms that this build's net/http behaves as the hand-off
// expects (see handoff.go), over an in-memory connection: a keep-alive
// request; then two pipelined ones, the second cut after its request line,
// where net/http must set the read deadline a second time before reading
// on (without it, a take there would lose the request line); the hand-off
// begins, the rest of the second request comes, and during it the first
// byte of a third (net/http's background read takes it). net/http must
// answer both, then the connection must be taken with that byte, and
// net/http must close it without writing more. If not, connections are
// left to the drain as before.
func checkHandoff(limit time.Duration) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
		if err != nil {
			err = fmt.Errorf("graceful: net/http does not behave as connection hand-off expects: %w", err)
		}
	}()
	t := newTracker()
	t.dup = func(net.Conn) (*os.File, error) { return nil, nil }
	started, release := make(chan struct{}, 1), make(chan struct{})
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/wait" {
				started <- struct{}{}
				<-release
			}
			io.WriteString(w, r.URL.Path)
		}),
		ConnState: t.connState,
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	srvEnd, cli := net.Pipe()
	al := newAdoptListener(lnKey{"pipe", "self-check"}, srv, srvEnd.LocalAddr())
	tc := t.addVia(srvEnd, al.via)
	al.push(tc)
	go srv.Serve(al)
	defer srv.Close()
	defer cli.Close()
	defer close(release)
	deadline := time.Now().Add(limit)
	cli.SetDeadline(deadline)
	br := bufio.NewReader(cli)
	get := func(path string) error {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(body) != path {
			return fmt.Errorf("response %q to %s, %v", body, path, err)
		}
		return nil
	}
	if _, err := io.WriteString(cli, "GET /a HTTP/1.1\r\nHost: check\r\n\r\n"); err != nil {
		return err
	}
	if err := get("/a"); err != nil {
		return err
	}
	if _, err := io.WriteString(cli, "GET /b HTTP/1.1\r\nHost: check\r\n\r\nGET /wait HTTP/1.1\r\n"); err != nil {
		return err
	}
	if err := get("/b"); err != nil {
		return err
	}
	for w := tc.state.Load(); http.ConnState(w&stateMask) != http.StateIdle || w&spoilBit == 0; w = tc.state.Load() {
		if time.Now().After(deadline) {
			return errors.New("reading a pipelined request did not set the read deadline again")
		}
		time.Sleep(time.Millisecond)
	}
	out := make(chan handedConn, 1)
	t.startHandOff(out)
	if _, err := io.WriteString(cli, "Host: check\r\n\r\n"); err != nil {
		return err
	}
	select {
	case <-started:
	case <-time.After(time.Until(deadline)):
		return errors.New("timed out")
	}
	// Returns once net/http's background read has taken the byte.
	if _, err := io.WriteString(cli, "G"); err != nil {
		return err
	}
	release <- struct{}{}
	if err := get("/wait"); err != nil {
		return err
	}
	select {
	case h := <-out:
		if string(h.pre) != "G" {
			return fmt.Errorf("took the connection with %q, not %q", h.pre, "G")
		}
	case <-time.After(time.Until(deadline)):
		return errors.New("the idle connection was not taken")
	}
	if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		return fmt.Errorf("after the take, read %d bytes, %v; want none and EOF", n, err)
	}
	return nil
}
