// Command graceful serves the benchmark application with graceful.
package main

import (
	"log"
	"log/slog"
	"net/http"
	"os"

	"github.com/gograceful/graceful"
	"github.com/gograceful/graceful/bench/app"
)

func main() {
	srv := &graceful.Server{
		Server:  &http.Server{Addr: app.Addr(), Handler: app.Handler()},
		PIDFile: os.Getenv("PIDFILE"),
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
