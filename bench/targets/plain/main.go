// Command plain serves the benchmark application with net/http alone: the
// baseline for throughput.
package main

import (
	"log"
	"net"
	"net/http"

	"github.com/gograceful/graceful/bench/app"
)

func main() {
	l, err := net.Listen("tcp", app.Addr())
	if err != nil {
		log.Fatal(err)
	}
	app.WritePID()
	log.Fatal(http.Serve(l, app.Handler()))
}
