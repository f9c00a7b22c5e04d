// Command grpc is a gRPC server restarted by graceful, with its health
// check and metrics on an HTTP port beside it.
//
// It serves gRPC on $PORT (default 9090): the standard health service
// (grpc.health.v1.Health, unary) and example.Counter, a service defined by
// hand (no generated code) with two server-streaming methods: Count sends
// N messages $STREAM_INTERVAL apart (default 20ms) and ends; Watch sends a
// message every 100ms until the client cancels or the process drains, when
// it sends "draining" and ends with status OK. Every message names the PID
// that sent it.
//
// With $HTTP_PORT set it also serves HTTP there: /readyz (200 while this
// process serves and is not stopping) and /metrics (the server's Status as
// JSON, its "services" with the RPCs in flight). Without it, it serves
// gRPC alone. $PIDFILE, $WORKERS, $CONTROL and $SHUTDOWN_TIMEOUT are the
// graceful.Server fields of the same names.
//
// It is a module of its own (gRPC stays out of the graceful module), so
// build it from its directory:
//
//	cd examples/grpc && go build -o grpc-example .
//	PIDFILE=app.pid HTTP_PORT=8080 ./grpc-example &
//	grpc-health-probe -addr localhost:9090      # or any gRPC client
//	curl localhost:8080/metrics                 # "services": RPCs in flight
//	kill -USR2 $(cat app.pid)   # hot restart: no RPC fails, streams finish in the old process
//	kill -TERM $(cat app.pid)   # drain and exit 0
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gograceful/graceful"
	gracefulgrpc "github.com/gograceful/graceful/contrib/grpc"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "9090"
	}
	interval := 20 * time.Millisecond
	if d, err := time.ParseDuration(os.Getenv("STREAM_INTERVAL")); err == nil {
		interval = d
	}
	pid := strconv.Itoa(os.Getpid())

	// The one line that counts RPCs in flight and gives handlers the
	// drain signal: gracefulgrpc.NewServer installs its interceptors.
	gs, svc := gracefulgrpc.NewServer("grpc", "127.0.0.1:"+port)
	healthpb.RegisterHealthServer(gs, health.NewServer()) // "" reports SERVING
	gs.RegisterService(&counterDesc, &counter{pid: pid, interval: interval})

	srv := &graceful.Server{
		PIDFile: os.Getenv("PIDFILE"),
		Control: os.Getenv("CONTROL"),
	}
	srv.Workers, _ = strconv.Atoi(os.Getenv("WORKERS"))
	srv.ShutdownTimeout, _ = time.ParseDuration(os.Getenv("SHUTDOWN_TIMEOUT"))
	if hp := os.Getenv("HTTP_PORT"); hp != "" {
		mux := http.NewServeMux()
		mux.Handle("/readyz", srv.ReadinessHandler())
		mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintln(w, srv.StatusVar().String())
		})
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s\n", pid)
		})
		srv.Server = &http.Server{Addr: "127.0.0.1:" + hp, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	}
	if err := srv.AddService(svc); err != nil {
		log.Fatal(err)
	}
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

// counter implements example.Counter.
type counter struct {
	pid      string
	interval time.Duration
}

// count sends n messages ("PID i"), interval apart, then ends with OK. It
// does not stop early when the process drains: the drain waits for it, up
// to ShutdownTimeout.
func (c *counter) count(ss grpc.ServerStream) error {
	var n wrapperspb.UInt32Value
	if err := ss.RecvMsg(&n); err != nil {
		return err
	}
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for i := uint32(1); i <= n.GetValue(); i++ {
		if i > 1 {
			select {
			case <-t.C:
			case <-ss.Context().Done():
				return ss.Context().Err()
			}
		}
		if err := ss.SendMsg(wrapperspb.String(c.pid + " " + strconv.FormatUint(uint64(i), 10))); err != nil {
			return err
		}
	}
	return nil
}

// watch sends "PID tick" every 100ms until the client cancels or the
// process begins to drain: then it sends "PID draining" and ends with OK,
// so that the drain need not wait for it.
func (c *counter) watch(ss grpc.ServerStream) error {
	var e emptypb.Empty
	if err := ss.RecvMsg(&e); err != nil {
		return err
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if err := ss.SendMsg(wrapperspb.String(c.pid + " tick")); err != nil {
			return err
		}
		select {
		case <-t.C:
		case <-graceful.Draining(ss.Context()):
			return ss.SendMsg(wrapperspb.String(c.pid + " draining"))
		case <-ss.Context().Done():
			return ss.Context().Err()
		}
	}
}

// counterDesc describes example.Counter by hand, as protoc would generate
// it from:
//
//	service Counter {
//	  rpc Count(google.protobuf.UInt32Value) returns (stream google.protobuf.StringValue);
//	  rpc Watch(google.protobuf.Empty) returns (stream google.protobuf.StringValue);
//	}
var counterDesc = grpc.ServiceDesc{
	ServiceName: "example.Counter",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{
		{StreamName: "Count", ServerStreams: true, Handler: func(srv any, ss grpc.ServerStream) error { return srv.(*counter).count(ss) }},
		{StreamName: "Watch", ServerStreams: true, Handler: func(srv any, ss grpc.ServerStream) error { return srv.(*counter).watch(ss) }},
	},
	Metadata: "example/counter.proto",
}
