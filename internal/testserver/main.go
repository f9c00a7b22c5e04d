// Command testserver is the application the restart tests build and run.
// Its behaviour is set by environment variables, and at each start by the
// contents of $TS_MODE_FILE, so that a test can make one successor fail:
//
//	exit     exit with status 3 before serving
//	exit0    exit with status 0 before serving
//	panic    panic before serving
//	hang     never start serving
//	sleep D  sleep for the duration D (such as "sleep 3s") before serving
//	noadmin  do not serve TS_ADMIN (a release that drops a listener)
//
// Other variables: PORT, PIDFILE, TS_EVENTS (a file events are appended
// to), TS_START_DELAY, TS_SHUTDOWN_TIMEOUT, TS_START_TIMEOUT,
// TS_HOOK_TIMEOUT, TS_DRAIN_IDLE, TS_WORKER_TIMEOUT, TS_BOOT_TIMEOUT
// (durations), TS_HOOKS (comma-separated "log", "panic", "block"), TS_UNIX
// (an extra Unix socket), TS_ADMIN (an extra TCP address), TS_WORKERS,
// TS_DIRECTORY, TS_TRIGGER (a FIFO: a line written to it asks the master
// for a phased restart), TS_TLS_CERT and TS_TLS_KEY (serve TLS), TS_PKGFUNC
// (serve with the package-level ListenAndServe instead of a Server),
// TS_CONTROL (the control socket), TS_SHUTDOWN_DELAY, TS_IDLE_TIMEOUT,
// TS_READ_TIMEOUT, TS_READ_HEADER_TIMEOUT (the http.Server's), TS_NO_HANDOFF
// (non-empty: NoHandOff), TS_WRAP (serve through a listener wrapper that
// has no socket of its own, given to Serve). /readyz is the
// ReadinessHandler. The mode "slow" sleeps a second before serving; the
// mode "badwrap" adds a service whose listener wraps a socket that did not
// come from graceful.Listen, which fails the start; the mode "servenil"
// adds a service whose Serve returns at once. TS_ZERO_SERVICES=N adds N
// services on 127.0.0.1:0, each of which writes "NAME PID" on every
// connection and closes it.
package main

import (
	"bufio"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gograceful/graceful"
)

var (
	pid      = strconv.Itoa(os.Getpid())
	inflight atomic.Int64
	version  = "dev" // set with -ldflags "-X main.version=..."
)

func event(format string, args ...any) {
	path := os.Getenv("TS_EVENTS")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, pid+" "+format+"\n", args...)
}

func dur(name string) time.Duration {
	d, _ := time.ParseDuration(os.Getenv(name))
	return d
}

func main() {
	mode := ""
	if p := os.Getenv("TS_MODE_FILE"); p != "" {
		b, _ := os.ReadFile(p)
		mode = strings.TrimSpace(string(b))
	}
	if d, ok := strings.CutPrefix(mode, "sleep "); ok {
		// A slow boot of a given length.
		bootDelay, err := time.ParseDuration(d)
		if err != nil {
			log.Fatalf("testserver: mode %q: %v", mode, err)
		}
		fmt.Fprintf(os.Stderr, "testserver: booting for %s\n", bootDelay)
		time.Sleep(bootDelay)
		mode = ""
	}
	switch mode {
	case "exit":
		fmt.Fprintln(os.Stderr, "testserver: configured to fail: exiting")
		os.Exit(3)
	case "exit0":
		fmt.Fprintln(os.Stderr, "testserver: configured to exit: status 0")
		os.Exit(0)
	case "panic":
		panic("testserver: configured to panic")
	case "hang":
		fmt.Fprintln(os.Stderr, "testserver: configured to hang")
		select {}
	case "slow":
		time.Sleep(time.Second)
	}
	time.Sleep(dur("TS_START_DELAY"))

	if os.Getenv("TS_PKGFUNC") != "" {
		// The drop-in idiom: nothing may be printed, and the exit status
		// must be 0, on a hand-over or a SIGTERM drain.
		os.WriteFile(os.Getenv("PIDFILE"), []byte(pid+"\n"), 0o644)
		log.Fatal(graceful.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), routes(func() error { return nil }, http.NotFoundHandler())))
	}

	srv := &graceful.Server{
		Server:            &http.Server{Addr: "127.0.0.1:" + os.Getenv("PORT")},
		PIDFile:           os.Getenv("PIDFILE"),
		ShutdownTimeout:   dur("TS_SHUTDOWN_TIMEOUT"),
		StartTimeout:      dur("TS_START_TIMEOUT"),
		HookTimeout:       dur("TS_HOOK_TIMEOUT"),
		DrainIdleTimeout:  dur("TS_DRAIN_IDLE"),
		WorkerTimeout:     dur("TS_WORKER_TIMEOUT"),
		WorkerBootTimeout: dur("TS_BOOT_TIMEOUT"),
		Directory:         os.Getenv("TS_DIRECTORY"),
		Control:           os.Getenv("TS_CONTROL"),
		ShutdownDelay:     dur("TS_SHUTDOWN_DELAY"),
		NoHandOff:         os.Getenv("TS_NO_HANDOFF") != "",
	}
	srv.Workers, _ = strconv.Atoi(os.Getenv("TS_WORKERS"))
	srv.IdleTimeout = dur("TS_IDLE_TIMEOUT")
	srv.ReadTimeout = dur("TS_READ_TIMEOUT")
	srv.ReadHeaderTimeout = dur("TS_READ_HEADER_TIMEOUT")
	srv.OnWorkerBoot(func() { event("boot") })
	srv.OnWorkerShutdown(func() { event("worker shutdown inflight=%d", inflight.Load()) })
	if p := os.Getenv("TS_UNIX"); p != "" {
		srv.Extra = append(srv.Extra, &http.Server{Addr: "unix:" + p, Handler: routes(srv.Restart, srv.ReadinessHandler())})
	}
	if a := os.Getenv("TS_ADMIN"); a != "" && mode != "noadmin" {
		srv.Extra = append(srv.Extra, &http.Server{Addr: a, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Pid", pid)
			ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
			time.Sleep(time.Duration(ms) * time.Millisecond)
			fmt.Fprintln(w, "admin")
		})})
	}
	for i, h := range strings.Split(os.Getenv("TS_HOOKS"), ",") {
		switch h {
		case "log":
			srv.OnRestart(func() { event("hook %d inflight=%d", i, inflight.Load()) })
		case "panic":
			srv.OnRestart(func() { panic("hook panics") })
		case "block":
			srv.OnRestart(func() { select {} })
		}
	}
	srv.Handler = routes(srv.Restart, srv.ReadinessHandler())
	if fifo := os.Getenv("TS_TRIGGER"); fifo != "" {
		if _, worker := graceful.Worker(); !worker {
			// In the master: each line written to the FIFO asks for a
			// phased restart from code, and its outcome is logged.
			go func() {
				for {
					f, err := os.Open(fifo)
					if err != nil {
						return
					}
					sc := bufio.NewScanner(f)
					for sc.Scan() {
						event("phased: %v", srv.PhasedRestart())
					}
					f.Close()
				}
			}()
		}
	}
	if mode == "badwrap" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			log.Fatal(err)
		}
		srv.AddService(&graceful.Service{Name: "badwrap", Listener: wrapped{l}, Serve: func(l net.Listener) error { select {} }})
	}
	if n, _ := strconv.Atoi(os.Getenv("TS_ZERO_SERVICES")); n > 0 {
		for i := range n {
			name := "zero" + strconv.Itoa(i)
			srv.AddService(&graceful.Service{Name: name, Addr: "127.0.0.1:0", Serve: func(l net.Listener) error {
				for {
					c, err := l.Accept()
					if err != nil {
						return err
					}
					fmt.Fprintf(c, "%s %s\n", name, pid)
					c.Close()
				}
			}})
		}
	}
	if mode == "servenil" {
		srv.AddService(&graceful.Service{Name: "servenil", Addr: "127.0.0.1:0", Serve: func(net.Listener) error { return nil }})
	}
	event("serving")
	var err error
	if os.Getenv("TS_WRAP") != "" {
		var l net.Listener
		if l, err = graceful.Listen("tcp", srv.Addr); err != nil {
			log.Fatal(err)
		}
		err = srv.Serve(wrapped{l})
	} else if cert := os.Getenv("TS_TLS_CERT"); cert != "" {
		err = srv.ListenAndServeTLS(cert, os.Getenv("TS_TLS_KEY"))
	} else {
		err = srv.ListenAndServe()
	}
	event("returned %v", err)
	if err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

// wrapped is a listener wrapper, such as a PROXY protocol or a limiting
// one, that hides the socket underneath.
type wrapped struct{ l net.Listener }

func (w wrapped) Accept() (net.Conn, error) { return w.l.Accept() }
func (w wrapped) Close() error              { return w.l.Close() }
func (w wrapped) Addr() net.Addr            { return w.l.Addr() }

func routes(restart func() error, ready http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/readyz", ready)
	mux.HandleFunc("/restart", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, restart())
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", pid)
	})
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		// Headers first, so that a client knows the request is in flight.
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		time.Sleep(time.Duration(ms) * time.Millisecond)
		fmt.Fprintf(w, "slept %d\n", ms)
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < n; i++ {
			fmt.Fprintf(w, "tick %d\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-tick.C:
			case <-graceful.Draining(r.Context()):
				fmt.Fprintln(w, "draining")
				return
			}
		}
		fmt.Fprintln(w, "done")
	})
	mux.HandleFunc("/hijack", func(w http.ResponseWriter, r *http.Request) {
		obey := r.URL.Query().Get("obey") == "1"
		drain := graceful.Draining(r.Context())
		c, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		fmt.Fprintf(rw, "hijacked %s\n", pid)
		rw.Flush()
		if obey {
			<-drain
			fmt.Fprintln(c, "bye")
			c.Close()
			return
		}
		go func() {
			defer c.Close()
			s := bufio.NewScanner(c)
			for s.Scan() {
				fmt.Fprintf(c, "echo %s\n", s.Text())
			}
		}()
	})
	mux.HandleFunc("/freeze", func(w http.ResponseWriter, r *http.Request) {
		// A hung process: stopped, it sends no heartbeat.
		fmt.Fprintln(w, "freezing")
		w.(http.Flusher).Flush()
		syscall.Kill(os.Getpid(), syscall.SIGSTOP)
	})
	mux.HandleFunc("/fds", func(w http.ResponseWriter, r *http.Request) {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, len(ents))
	})
	mux.HandleFunc("/childenv", func(w http.ResponseWriter, r *http.Request) {
		out, err := exec.Command("sh", "-c", `echo "inherit=$GRACEFUL_INHERIT"; ls /proc/self/fd | wc -l`).Output()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Write(out)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inflight.Add(1)
		defer inflight.Add(-1)
		w.Header().Set("X-Pid", pid)
		w.Header().Set("X-Build", version)
		if wi, ok := graceful.Worker(); ok {
			w.Header().Set("X-Worker", strconv.Itoa(wi.ID))
			w.Header().Set("X-Gen", strconv.Itoa(wi.Generation))
		}
		mux.ServeHTTP(w, r)
	})
}
