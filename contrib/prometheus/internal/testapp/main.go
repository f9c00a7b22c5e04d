// Command testapp is the server the collector's tests run: a
// graceful.Server on 127.0.0.1:$PORT whose Extra server on $METRICS serves
// the collector's metrics. Other variables: PIDFILE, WORKERS, CONTROL, and
// MODE_FILE: when the file says "exit", the process exits with status 3
// before serving, so that a test can make a restart fail.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gograceful/graceful"
	gracefulprom "github.com/gograceful/graceful/contrib/prometheus"
)

func main() {
	if p := os.Getenv("MODE_FILE"); p != "" {
		if b, _ := os.ReadFile(p); strings.TrimSpace(string(b)) == "exit" {
			fmt.Fprintln(os.Stderr, "testapp: configured to fail: exiting")
			os.Exit(3)
		}
	}
	srv := &graceful.Server{
		Server:  &http.Server{Addr: "127.0.0.1:" + os.Getenv("PORT"), Handler: http.HandlerFunc(hello)},
		PIDFile: os.Getenv("PIDFILE"),
		Control: os.Getenv("CONTROL"),
	}
	srv.Workers, _ = strconv.Atoi(os.Getenv("WORKERS"))
	reg := prometheus.NewRegistry()
	reg.MustRegister(gracefulprom.NewCollector(srv))
	srv.Extra = []*http.Server{{Addr: os.Getenv("METRICS"), Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}}
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

func hello(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "hello from %d\n", os.Getpid())
}
