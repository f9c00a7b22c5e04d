// Package gracefulgrpc serves a gRPC server as a [graceful.Service]: its
// listener is inherited across hot restarts and handed to a cluster's
// workers, a drain stops it with GracefulStop (then Stop, once the
// Server's ShutdownTimeout has passed), and every RPC in flight is counted
// in the Server's Status. It is a module of its own, so that the graceful
// module itself depends on no gRPC code.
//
//	gs, svc := gracefulgrpc.NewServer("grpc", ":9090")
//	healthpb.RegisterHealthServer(gs, health.NewServer())
//	srv := &graceful.Server{Server: &http.Server{Addr: ":8080", Handler: mux}}
//	if err := srv.AddService(svc); err != nil {
//		log.Fatal(err)
//	}
//	log.Fatal(srv.ListenAndServe())
//
// A handler reaches the drain signal through its context: a long
// server-streaming RPC can end early, with a status of its choosing, once
// [graceful.Draining] is closed, instead of keeping the old process until
// ShutdownTimeout.
package gracefulgrpc

import (
	"context"

	"google.golang.org/grpc"

	"github.com/gograceful/graceful"
)

// NewServer returns a gRPC server created with opt and the interceptors of
// ServerOptions, and the graceful.Service that serves it on addr under
// name. Register the gRPC services on the server, then add the Service to
// a graceful.Server with AddService before it serves.
func NewServer(name, addr string, opt ...grpc.ServerOption) (*grpc.Server, *graceful.Service) {
	var svc *graceful.Service // set below, before any RPC can run
	get := func() *graceful.Service { return svc }
	opts := append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary(get)),
		grpc.ChainStreamInterceptor(stream(get)),
	}, opt...)
	gs := grpc.NewServer(opts...)
	svc = graceful.NewService(name, addr, gs)
	return gs, svc
}

// ServerOptions returns the options that install, on a gRPC server, the
// interceptors of svc (UnaryInterceptor and StreamInterceptor), for a
// Service built by hand:
//
//	svc := &graceful.Service{Name: "grpc", Addr: ":9090"}
//	gs := grpc.NewServer(gracefulgrpc.ServerOptions(svc)...)
//	svc.Serve, svc.GracefulStop, svc.Stop = gs.Serve, gs.GracefulStop, gs.Stop
//
// They run first, before any interceptor given in other options.
func ServerOptions(svc *graceful.Service) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(UnaryInterceptor(svc)),
		grpc.ChainStreamInterceptor(StreamInterceptor(svc)),
	}
}

// UnaryInterceptor counts each unary RPC as in flight in svc until its
// handler returns, and gives the handler a context carrying svc's drain
// signal.
func UnaryInterceptor(svc *graceful.Service) grpc.UnaryServerInterceptor {
	return unary(func() *graceful.Service { return svc })
}

// StreamInterceptor counts each streaming RPC as in flight in svc until
// its handler returns, and gives the handler a stream whose Context
// carries svc's drain signal, so that graceful.Draining(ss.Context())
// tells a long stream to wind down.
func StreamInterceptor(svc *graceful.Service) grpc.StreamServerInterceptor {
	return stream(func() *graceful.Service { return svc })
}

func unary(svc func() *graceful.Service) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		s := svc()
		defer s.Begin()()
		return handler(s.Context(ctx), req)
	}
}

func stream(svc func() *graceful.Service) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		s := svc()
		defer s.Begin()()
		return handler(srv, &drainStream{ServerStream: ss, ctx: s.Context(ss.Context())})
	}
}

// drainStream is a grpc.ServerStream whose context carries the drain
// signal.
type drainStream struct {
	grpc.ServerStream
	ctx context.Context
}

// Context returns the stream's context with the drain signal.
func (d *drainStream) Context() context.Context { return d.ctx }
