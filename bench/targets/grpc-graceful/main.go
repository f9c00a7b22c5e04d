// Command grpc-graceful serves the gRPC benchmark application with
// graceful: the gRPC server is a graceful.Service (contrib/grpc), alone in
// the process. $WORKERS runs it as a cluster.
package main

import (
	"log"
	"net/http"
	"os"
	"strconv"

	"github.com/gograceful/graceful"
	gracefulgrpc "github.com/gograceful/graceful/contrib/grpc"

	"github.com/gograceful/graceful/bench/app"
	"github.com/gograceful/graceful/bench/grpcapp"
)

func main() {
	gs, svc := gracefulgrpc.NewServer("grpc", app.Addr())
	grpcapp.Register(gs)
	srv := &graceful.Server{PIDFile: os.Getenv("PIDFILE")}
	srv.Workers, _ = strconv.Atoi(os.Getenv("WORKERS"))
	if err := srv.AddService(svc); err != nil {
		log.Fatal(err)
	}
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
