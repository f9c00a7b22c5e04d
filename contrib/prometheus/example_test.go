package prometheus_test

import (
	"log"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gograceful/graceful"
	gracefulprom "github.com/gograceful/graceful/contrib/prometheus"
)

// The metrics on a port of their own, restarted with the server. In a
// cluster, Control lets the worker that a scrape reaches report the whole
// tree.
func ExampleNewCollector() {
	srv := &graceful.Server{
		Server:  &http.Server{Addr: ":8080", Handler: http.NotFoundHandler()},
		Workers: 4,
		Control: "/run/app/control.sock",
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(gracefulprom.NewCollector(srv))
	srv.Extra = append(srv.Extra, &http.Server{
		Addr:    "127.0.0.1:9100",
		Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
	})
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
