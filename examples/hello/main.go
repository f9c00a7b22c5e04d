// Command hello is a gorilla/mux application served by graceful.
//
// It listens on $PORT (default 8080) and, if $PIDFILE is set, keeps that
// file naming the serving process (the master, in cluster mode). With
// $WORKERS set to N it runs as a master with N worker processes: SIGUSR1
// then replaces the workers one at a time. $CONTROL names a control socket
// for gracectl, $DIRECTORY a release directory, and $SHUTDOWN_DELAY (such as
// 5s) how long a SIGTERM keeps it serving while /readyz answers 503. Every
// response carries the serving process's PID in the X-Pid header, so a
// restart can be watched:
//
//	go build -o hello ./examples/hello && PIDFILE=hello.pid ./hello &
//	curl -i localhost:8080/
//	kill -USR2 $(cat hello.pid)   # hot restart: X-Pid changes, no request fails
//	curl -i 'localhost:8080/sleep?ms=2000'
//	kill -TERM $(cat hello.pid)   # drain and exit 0
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/gograceful/graceful"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	pid := strconv.Itoa(os.Getpid())

	r := mux.NewRouter()
	r.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			w.Header().Set("X-Pid", pid)
			next.ServeHTTP(w, req)
		})
	})
	r.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", pid)
	})
	r.HandleFunc("/sleep", func(w http.ResponseWriter, req *http.Request) {
		ms, _ := strconv.Atoi(req.URL.Query().Get("ms"))
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-req.Context().Done():
			return
		}
		fmt.Fprintf(w, "slept %d ms in %s\n", ms, pid)
	})

	srv := &graceful.Server{
		Server:    &http.Server{Addr: ":" + port, Handler: r, ReadHeaderTimeout: 10 * time.Second},
		PIDFile:   os.Getenv("PIDFILE"),
		Control:   os.Getenv("CONTROL"),
		Directory: os.Getenv("DIRECTORY"),
	}
	srv.Workers, _ = strconv.Atoi(os.Getenv("WORKERS"))
	srv.ShutdownDelay, _ = time.ParseDuration(os.Getenv("SHUTDOWN_DELAY"))
	r.Handle("/readyz", srv.ReadinessHandler())
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
