package gracefulgrpc_test

import (
	"log"
	"net/http"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/gograceful/graceful"
	gracefulgrpc "github.com/gograceful/graceful/contrib/grpc"
)

// gRPC on one port and HTTP (readiness) on another, hot-restarted by
// SIGUSR2 and phased-restarted by SIGUSR1 together.
func ExampleNewServer() {
	gs, svc := gracefulgrpc.NewServer("grpc", ":9090")
	healthpb.RegisterHealthServer(gs, health.NewServer())

	srv := &graceful.Server{Workers: 4}
	mux := http.NewServeMux()
	mux.Handle("/readyz", srv.ReadinessHandler())
	srv.Server = &http.Server{Addr: ":8080", Handler: mux}
	if err := srv.AddService(svc); err != nil {
		log.Fatal(err)
	}
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
