// Package grpcapp is the gRPC application the gRPC benchmark targets
// serve: the standard health service (unary Check) and bench.Counter, a
// service defined by hand with one server-streaming method, Count, which
// sends N messages 20 ms apart, each naming the serving process's PID.
package grpcapp

import (
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Interval is the time between two messages of a Count stream.
const Interval = 20 * time.Millisecond

// Register registers the application's services on gs.
func Register(gs *grpc.Server) {
	healthpb.RegisterHealthServer(gs, health.NewServer())
	pid := strconv.Itoa(os.Getpid())
	gs.RegisterService(&grpc.ServiceDesc{
		ServiceName: "bench.Counter",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{StreamName: "Count", ServerStreams: true, Handler: func(_ any, ss grpc.ServerStream) error {
			var n wrapperspb.UInt32Value
			if err := ss.RecvMsg(&n); err != nil {
				return err
			}
			for i := uint32(0); i < n.GetValue(); i++ {
				if i > 0 {
					time.Sleep(Interval)
				}
				if err := ss.SendMsg(wrapperspb.String(pid)); err != nil {
					return err
				}
			}
			return nil
		}}},
	}, struct{}{})
}
