// Command grpc-tableflip serves the gRPC benchmark application with
// github.com/cloudflare/tableflip, as its documentation shows for any
// server: the listener from Fds.Listen, SIGUSR2 upgrades, and once the new
// process is ready the old one stops its server gracefully (here gRPC's
// GracefulStop), with a deadline on its exit.
package main

import (
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
	"google.golang.org/grpc"

	"github.com/gograceful/graceful/bench/app"
	"github.com/gograceful/graceful/bench/grpcapp"
)

func main() {
	upg, err := tableflip.New(tableflip.Options{PIDFile: os.Getenv("PIDFILE")})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGUSR2, syscall.SIGTERM)
		for s := range sig {
			if s == syscall.SIGTERM {
				upg.Stop()
				return
			}
			if err := upg.Upgrade(); err != nil {
				log.Println("upgrade failed:", err)
			}
		}
	}()
	ln, err := upg.Fds.Listen("tcp", app.Addr())
	if err != nil {
		log.Fatal(err)
	}
	gs := grpc.NewServer()
	grpcapp.Register(gs)
	go gs.Serve(ln)
	if err := upg.Ready(); err != nil {
		log.Fatal(err)
	}
	<-upg.Exit()
	time.AfterFunc(30*time.Second, func() {
		log.Println("graceful shutdown timed out")
		os.Exit(1)
	})
	gs.GracefulStop()
}
