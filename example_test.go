package graceful_test

import (
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/gograceful/graceful"
)

// The one-line drop-in for http.ListenAndServe. SIGUSR2 hot-restarts the
// process; SIGTERM drains it and exits 0.
func ExampleListenAndServe() {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello")
	})
	log.Fatal(graceful.ListenAndServe(":8080", mux))
}

// A Server with a pidfile, bounds on restarts, and an admin port on a Unix
// socket that survives restarts with the main port.
func ExampleServer() {
	srv := &graceful.Server{
		Server:          &http.Server{Addr: ":8080", Handler: http.DefaultServeMux},
		Extra:           []*http.Server{{Addr: "unix:/run/app/admin.sock", Handler: http.NotFoundHandler()}},
		PIDFile:         "/run/app/app.pid",
		ShutdownTimeout: 20 * time.Second,
		StartTimeout:    30 * time.Second,
	}
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

// OnRestart hooks run in the replaced process once it has drained, so they
// may close what handlers were using.
func ExampleServer_OnRestart() {
	logFile := &closer{name: "access.log"}
	srv := &graceful.Server{Server: &http.Server{Addr: ":8080"}}
	srv.OnRestart(func() {
		logFile.Close() // no request is being served any more
	})
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

type closer struct{ name string }

func (c *closer) Close() error { return nil }

// A server-sent events handler that ends its stream when the process
// begins to drain, so the client reconnects to the successor at once
// instead of holding the old process until ShutdownTimeout.
func ExampleDraining() {
	events := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case t := <-tick.C:
				fmt.Fprintf(w, "data: %s\n\n", t.Format(time.RFC3339))
				w.(http.Flusher).Flush()
			case <-graceful.Draining(r.Context()):
				fmt.Fprint(w, "event: reconnect\ndata: server restarting\n\n")
				return
			case <-r.Context().Done():
				return
			}
		}
	}
	log.Fatal(graceful.ListenAndServe(":8080", http.HandlerFunc(events)))
}

// Listen returns the listener inherited from the predecessor when there is
// one, so a server built on its own listener survives restarts too.
func ExampleListen() {
	l, err := graceful.Listen("tcp", "127.0.0.1:8080")
	if err != nil {
		log.Fatal(err)
	}
	srv := &graceful.Server{Server: &http.Server{Handler: http.DefaultServeMux}}
	if err := srv.Serve(l); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

// A cluster: a master holds the sockets and runs four worker processes.
// SIGUSR1 replaces the workers one at a time with the release that
// /srv/app/current names at that moment; SIGUSR2 replaces the whole tree.
func ExampleServer_cluster() {
	srv := &graceful.Server{
		Server:    &http.Server{Addr: ":8080", Handler: http.DefaultServeMux},
		Workers:   4,
		Directory: "/srv/app/current",
		PIDFile:   "/run/app/app.pid", // names the master
	}
	var pool *closer
	srv.OnWorkerBoot(func() { pool = &closer{name: "db"} }) // in each worker, not the master
	srv.OnWorkerShutdown(func() { pool.Close() })
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

// Worker tells a worker from the master, before serving too.
func ExampleWorker() {
	if w, ok := graceful.Worker(); ok {
		log.Printf("worker %d of generation %d, master %d", w.ID, w.Generation, w.Master)
	}
}

// Behind a load balancer: on SIGTERM, /readyz answers 503 at once while the
// server keeps serving for ShutdownDelay, then it drains. The control socket
// lets `gracectl` show the status and restart the server, waiting for the
// outcome.
func ExampleServer_ReadinessHandler() {
	mux := http.NewServeMux()
	srv := &graceful.Server{
		Server:        &http.Server{Addr: ":8080", Handler: mux},
		ShutdownDelay: 10 * time.Second,
		Control:       "/run/app/control.sock",
	}
	mux.Handle("/readyz", srv.ReadinessHandler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello")
	})
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

// Status reports what the server is doing, for a health page or a log
// line; gracectl stats prints the same as JSON.
func ExampleServer_Status() {
	srv := &graceful.Server{Server: &http.Server{Addr: ":8080"}, Workers: 2}
	go func() {
		for range time.Tick(time.Minute) {
			if st, err := srv.Status(); err == nil {
				log.Printf("%s pid %d: %d requests in flight, %d served, %d workers",
					st.State, st.PID, st.RequestsInFlight, st.RequestsTotal, len(st.Workers))
			}
		}
	}()
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
