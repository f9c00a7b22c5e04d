// Command graceful serves the benchmark application with graceful: in
// single mode, or with $WORKERS worker processes. $GRACEFUL_LOG=info shows
// the library's progress messages (warnings only by default); $NO_HANDOFF
// (non-empty) turns connection hand-off off.
package main

import (
	"log"
	"log/slog"
	"net/http"
	"os"
	"strconv"

	"github.com/gograceful/graceful"
	"github.com/gograceful/graceful/bench/app"
)

func main() {
	level := slog.LevelWarn
	if os.Getenv("GRACEFUL_LOG") == "info" {
		level = slog.LevelInfo
	}
	h := app.Handler()
	if w, ok := graceful.Worker(); ok {
		gen := strconv.Itoa(w.Generation)
		inner := h
		h = http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			rw.Header().Set("X-Gen", gen)
			inner.ServeHTTP(rw, r)
		})
	}
	srv := &graceful.Server{
		Server:  &http.Server{Addr: app.Addr(), Handler: h},
		PIDFile: os.Getenv("PIDFILE"),
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	}
	srv.Workers, _ = strconv.Atoi(os.Getenv("WORKERS"))
	srv.NoHandOff = os.Getenv("NO_HANDOFF") != ""
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
