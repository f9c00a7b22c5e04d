// Package app is the application every benchmark target serves: "/" and
// "/sleep?ms=N", each response carrying the serving process's PID in X-Pid.
package app

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"
)

// Handler returns the benchmark application.
func Handler() http.Handler {
	pid := strconv.Itoa(os.Getpid())
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pid", pid)
		fmt.Fprintln(w, "hello")
	})
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pid", pid)
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		time.Sleep(time.Duration(ms) * time.Millisecond)
		fmt.Fprintln(w, "slept")
	})
	return mux
}

// Addr is the address a target listens on: 127.0.0.1:$PORT.
func Addr() string { return "127.0.0.1:" + os.Getenv("PORT") }

// WritePID writes this process's PID to $PIDFILE, if set.
func WritePID() {
	if p := os.Getenv("PIDFILE"); p != "" {
		os.WriteFile(p, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	}
}
