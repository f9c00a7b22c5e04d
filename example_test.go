package graceful_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"strings"
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

// A Server with a pidfile, bounds on restarts, an admin port on a Unix
// socket that survives restarts with the main port, and a control socket
// through which `gracectl` shows the status and restarts the server,
// waiting for the outcome.
func ExampleServer() {
	srv := &graceful.Server{
		Server:          &http.Server{Addr: ":8080", Handler: http.DefaultServeMux},
		Extra:           []*http.Server{{Addr: "unix:/run/app/admin.sock", Handler: http.NotFoundHandler()}},
		PIDFile:         "/run/app/app.pid",
		ShutdownTimeout: 20 * time.Second,
		StartTimeout:    30 * time.Second,
		Control:         "/run/app/control.sock",
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
// instead of holding the old process until ShutdownTimeout. Here Shutdown
// starts the drain; a hot restart (SIGUSR2) does the same.
func ExampleDraining() {
	events := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: hello\n\n")
		w.(http.Flusher).Flush()
		ping := time.NewTicker(15 * time.Second)
		defer ping.Stop()
		for {
			select {
			case <-ping.C:
				fmt.Fprint(w, ": ping\n\n")
				w.(http.Flusher).Flush()
			case <-graceful.Draining(r.Context()):
				fmt.Fprint(w, "event: reconnect\ndata: server restarting\n\n")
				return
			case <-r.Context().Done():
				return
			}
		}
	}
	l, err := graceful.Listen("tcp", "127.0.0.1:0") // ":8080" in production
	if err != nil {
		log.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	srv := &graceful.Server{Server: &http.Server{Handler: http.HandlerFunc(events)}}
	go srv.Serve(l)

	resp, err := client.Get("http://" + l.Addr().String() + "/events")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	stream := bufio.NewScanner(resp.Body)
	for stream.Scan() && stream.Text() != "" { // the first event
		fmt.Println(stream.Text())
	}
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Shutdown(context.Background()) }()
	for stream.Scan() { // the rest of the stream, until the handler returns
		if stream.Text() != "" {
			fmt.Println(stream.Text())
		}
	}
	if err := <-stopped; err != nil {
		log.Fatal(err)
	}
	// Output:
	// data: hello
	// event: reconnect
	// data: server restarting
}

// Listen returns the listener inherited from the predecessor when there is
// one, so a server built on its own listener survives restarts too.
// Shutdown drains the server as SIGTERM does, and Serve returns
// http.ErrServerClosed.
func ExampleListen() {
	l, err := graceful.Listen("tcp", "127.0.0.1:0") // ":8080" in production
	if err != nil {
		log.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	hello := func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "hello") }
	srv := &graceful.Server{Server: &http.Server{Handler: http.HandlerFunc(hello)}}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()

	resp, err := client.Get("http://" + l.Addr().String() + "/")
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Printf("%s: %s", resp.Status, body)

	if err := srv.Shutdown(context.Background()); err != nil {
		log.Fatal(err)
	}
	fmt.Println(<-served)
	// Output:
	// 200 OK: hello
	// http: Server closed
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

// Worker tells a worker from the master, before serving too. Run by go
// test, this process is no worker.
func ExampleWorker() {
	if w, ok := graceful.Worker(); ok {
		fmt.Printf("worker %d of generation %d, master %d\n", w.ID, w.Generation, w.Master)
	} else {
		fmt.Println("not a worker: single mode or a cluster's master")
	}
	// Output: not a worker: single mode or a cluster's master
}

// Behind a load balancer: when a stop begins (SIGTERM, or Shutdown here),
// /readyz answers 503 at once while the server keeps serving for
// ShutdownDelay, so that the balancer stops sending before connections
// close; then it drains.
func ExampleServer_ReadinessHandler() {
	l, err := graceful.Listen("tcp", "127.0.0.1:0") // ":8080" in production
	if err != nil {
		log.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	mux := http.NewServeMux()
	srv := &graceful.Server{
		Server:        &http.Server{Handler: mux},
		ShutdownDelay: 3 * time.Second, // a few of the balancer's check intervals
	}
	mux.Handle("/readyz", srv.ReadinessHandler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello")
	})
	go srv.Serve(l)

	get := func(path string) string {
		resp, err := client.Get("http://" + l.Addr().String() + path)
		if err != nil {
			return err.Error() + "\n"
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%s %d %s", path, resp.StatusCode, body)
	}
	fmt.Print(get("/readyz"))
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Shutdown(context.Background()) }()
	ready := get("/readyz")
	for i := 0; i < 500 && strings.Contains(ready, " 200 "); i++ { // as a balancer polls
		time.Sleep(10 * time.Millisecond)
		ready = get("/readyz")
	}
	fmt.Print(ready)
	fmt.Print(get("/")) // still served during ShutdownDelay
	fmt.Println(<-stopped)
	// Output:
	// /readyz 200 ready
	// /readyz 503 stopping
	// / 200 hello
	// <nil>
}

// Status reports what the server is doing, for a health page or a log
// line; gracectl stats prints the same as JSON. Once the server has
// stopped, Status returns ErrNotServing.
func ExampleServer_Status() {
	l, err := graceful.Listen("tcp", "127.0.0.1:0") // ":8080" in production
	if err != nil {
		log.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	srv := &graceful.Server{Server: &http.Server{}}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, err := srv.Status()
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "%s mode, %s, %d request in flight, %d workers\n",
			st.Mode, st.State, st.RequestsInFlight, len(st.Workers))
	})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()

	resp, err := client.Get("http://" + l.Addr().String() + "/status")
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(string(body))

	if err := srv.Shutdown(context.Background()); err != nil {
		log.Fatal(err)
	}
	<-served
	_, err = srv.Status()
	fmt.Println(err)
	// Output:
	// single mode, serving, 1 request in flight, 0 workers
	// graceful: the server is not serving
}
