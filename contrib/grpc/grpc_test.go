package gracefulgrpc_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gograceful/graceful"
	gracefulgrpc "github.com/gograceful/graceful/contrib/grpc"
)

// A stream handler behind the interceptors is counted in flight in the
// Server's Status and sees graceful.Draining close when the server stops;
// a unary handler is counted too and sees the drain signal in its context.
func TestInterceptors(t *testing.T) {
	port := freePort(t)
	gs, svc := gracefulgrpc.NewServer("grpc", "127.0.0.1:"+port)
	streaming := make(chan struct{})
	unarySaw := make(chan bool, 1)
	gs.RegisterService(&grpc.ServiceDesc{
		ServiceName: "test.T",
		HandlerType: (*any)(nil),
		// As protoc-gen-go-grpc generates it: the handler calls the
		// interceptor.
		Methods: []grpc.MethodDesc{{MethodName: "Unary", Handler: func(_ any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			var e emptypb.Empty
			if err := dec(&e); err != nil {
				return nil, err
			}
			h := func(ctx context.Context, req any) (any, error) {
				unarySaw <- graceful.Draining(ctx) != nil
				return req, nil
			}
			return icpt(ctx, &e, &grpc.UnaryServerInfo{FullMethod: "/test.T/Unary"}, h)
		}}},
		Streams: []grpc.StreamDesc{{StreamName: "Wait", ServerStreams: true, Handler: func(_ any, ss grpc.ServerStream) error {
			var e emptypb.Empty
			if err := ss.RecvMsg(&e); err != nil {
				return err
			}
			close(streaming)
			<-graceful.Draining(ss.Context()) // never closes without the interceptor's context
			return ss.SendMsg(wrapperspb.String("drained"))
		}}},
	}, struct{}{})

	srv := &graceful.Server{NoSignals: true, ShutdownTimeout: 20 * time.Second}
	if err := srv.AddService(svc); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx) }()

	cc, err := grpc.NewClient("passthrough:///127.0.0.1:"+port, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The server may not listen yet: wait for it.
	for {
		err := cc.Invoke(rctx, "/test.T/Unary", &emptypb.Empty{}, &emptypb.Empty{}, grpc.WaitForReady(true))
		if err == nil {
			break
		}
		if rctx.Err() != nil {
			t.Fatal(err)
		}
	}
	if !<-unarySaw {
		t.Error("the unary handler's context carries no drain signal")
	}

	cs, err := cc.NewStream(rctx, &grpc.StreamDesc{ServerStreams: true}, "/test.T/Wait")
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.SendMsg(&emptypb.Empty{}); err != nil {
		t.Fatal(err)
	}
	cs.CloseSend()
	<-streaming
	st, err := srv.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Services) != 1 || st.Services[0].Name != "grpc" || st.Services[0].InFlight != 1 || st.Services[0].Total != 1 {
		t.Errorf("Status services: %+v; want grpc with 1 in flight, 1 done", st.Services)
	}

	stop() // the drain begins: the stream ends, then Run returns
	var m wrapperspb.StringValue
	if err := cs.RecvMsg(&m); err != nil || m.GetValue() != "drained" {
		t.Fatalf("stream: %q, %v", m.GetValue(), err)
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after the drain")
	}
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}
