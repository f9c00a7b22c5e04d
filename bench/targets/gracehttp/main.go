// Command gracehttp serves the benchmark application with
// github.com/facebookgo/grace's gracehttp: SIGUSR2 restarts it.
package main

import (
	"log"
	"net/http"

	"github.com/facebookgo/grace/gracehttp"

	"github.com/gograceful/graceful/bench/app"
)

func main() {
	app.WritePID()
	if err := gracehttp.Serve(&http.Server{Addr: app.Addr(), Handler: app.Handler()}); err != nil {
		log.Fatal(err)
	}
}
