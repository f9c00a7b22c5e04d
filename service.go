package graceful

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
)

// A Service is a server of any protocol that a Server serves beside its HTTP
// servers and restarts with them: a gRPC server, a raw TCP server.
//
// Its listening socket is obtained as the HTTP servers' are (inherited from
// a predecessor, or handed to a worker by its master) and passed on at every
// restart. Serving starts, as HTTP's does, once the process is told to go;
// when a drain begins (a successor took over, the server stops, a phased
// restart replaces the worker), the listener is closed, the RegisterOnShutdown
// hooks run, GracefulStop is called, and the drain is over only once it has
// returned, or ShutdownTimeout ended it with a call to Stop.
//
// Register a Service with [Server.AddService] before serving starts.
type Service struct {
	// Name labels the service in logs and in Status. Empty means its
	// address.
	Name string

	// Addr is where the service listens: "host:port", or "unix:/path"
	// for a Unix socket. It is ignored if Listener is set.
	Addr string

	// Listener, if set, is served instead of listening on Addr: a
	// listener from [Listen], or a wrapper of one (whose Addr is that of
	// the listener it wraps). Graceful passes on the socket it opened in
	// Listen for that address.
	Listener net.Listener

	// Wrap, if set, wraps the listener before Serve sees it: PROXY
	// protocol, netutil.LimitListener, TLS set up by hand. Graceful keeps
	// the socket underneath to pass on at restarts. An error, or a nil
	// listener, fails the start.
	Wrap func(net.Listener) (net.Listener, error)

	// Serve serves on l until l is closed or the service is stopped, as
	// grpc.Server.Serve does. It is required.
	Serve func(l net.Listener) error

	// GracefulStop stops accepting, lets the work in flight finish and
	// returns when it is done, as grpc.Server.GracefulStop does. It is
	// called, in a goroutine of its own, when a drain begins. Nil means the
	// service has nothing to finish once its listener is closed.
	GracefulStop func()

	// Stop stops the service at once, as grpc.Server.Stop does: when
	// GracefulStop has not returned within ShutdownTimeout, and on
	// Server.Close. Nil means nothing to do.
	Stop func()

	inflight atomic.Int64
	total    atomic.Uint64

	once     sync.Once
	drainCh  chan struct{} // closed when the service's drain begins
	drainOne sync.Once
}

// NewService returns a Service for a server with gRPC's method set
// (*grpc.Server has it), listening on addr.
func NewService(name, addr string, s interface {
	Serve(net.Listener) error
	GracefulStop()
	Stop()
}) *Service {
	return &Service{Name: name, Addr: addr, Serve: s.Serve, GracefulStop: s.GracefulStop, Stop: s.Stop}
}

// AddService registers svc with s, to be served with s's HTTP servers. It
// fails, registering nothing, for a nil svc, a nil Serve, a Service
// already registered, or once s has started serving.
func (s *Server) AddService(svc *Service) error {
	if svc == nil {
		return errors.New("graceful: AddService: nil service")
	}
	if svc.Serve == nil {
		return fmt.Errorf("graceful: AddService: service %q: Serve is nil", svc.label())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.run != nil || s.begun {
		return fmt.Errorf("graceful: AddService: service %q: the server has already started serving", svc.label())
	}
	for _, o := range s.services {
		if o == svc {
			return fmt.Errorf("graceful: AddService: service %q registered twice", svc.label())
		}
	}
	s.services = append(s.services, svc)
	return nil
}

// Begin counts one unit of work of the service (an RPC, a connection) as
// in flight in Status until the returned func is called. For gRPC, an
// interceptor or a stats handler calls it. The returned func may be called
// more than once; only the first call counts.
func (svc *Service) Begin() (end func()) {
	svc.inflight.Add(1)
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			svc.inflight.Add(-1)
			svc.total.Add(1)
		}
	}
}

// Context returns ctx carrying the service's drain signal, so that
// [Draining] works in a handler of the service (e.g. a gRPC streaming
// handler, through the stats handler or interceptor that calls Context).
func (svc *Service) Context(ctx context.Context) context.Context {
	return context.WithValue(ctx, drainKey{}, svc.drain())
}

// drain returns the channel closed when the service's drain begins.
func (svc *Service) drain() chan struct{} {
	svc.once.Do(func() { svc.drainCh = make(chan struct{}) })
	return svc.drainCh
}

// label names svc in errors and logs.
func (svc *Service) label() string {
	switch {
	case svc.Name != "":
		return svc.Name
	case svc.Listener != nil:
		return svc.Listener.Addr().String()
	}
	return svc.Addr
}

// ServiceStatus is one Service in a Status.
type ServiceStatus struct {
	Name string `json:"name"`
	// Listener is the address served, as network:address.
	Listener string `json:"listener"`
	// InFlight counts the units of work (see Service.Begin) in flight.
	InFlight int64 `json:"in_flight"`
	// Total counts the units of work finished.
	Total uint64 `json:"total"`
}
