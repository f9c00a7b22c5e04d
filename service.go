package graceful

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
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
// (*grpc.Server has it), listening on addr. For a nil server it returns a
// Service without Serve, which AddService refuses.
func NewService(name, addr string, s interface {
	Serve(net.Listener) error
	GracefulStop()
	Stop()
}) *Service {
	if s == nil {
		return &Service{Name: name, Addr: addr} // AddService refuses it
	}
	if v := reflect.ValueOf(s); v.Kind() == reflect.Pointer && v.IsNil() {
		return &Service{Name: name, Addr: addr}
	}
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
		return fmt.Errorf("graceful: AddService: service %q: Serve is nil (a nil server given to NewService?)", svc.label())
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

// ServiceStatus is one Service in a Status. The counts are those the
// service's Begin made in the process that answers; in a cluster's master,
// those of its workers, present and past, as of their last heartbeats.
type ServiceStatus struct {
	Name string `json:"name"`
	// Listener is the address served, as network:address.
	Listener string `json:"listener"`
	// InFlight counts the units of work (see Service.Begin) in flight.
	InFlight int64 `json:"in_flight"`
	// Total counts the units of work finished.
	Total uint64 `json:"total"`
}

// The runner's side of services: they are served entries (runner.served)
// like the HTTP servers, with svc set, so that the listening, the passing
// on at restarts, the readiness and the closing of listeners are the same
// code for both.

// serviceRun is a run's state of its services.
type serviceRun struct {
	stopping atomic.Int32 // GracefulStop calls that have not returned
	pending  sync.Map     // *Service -> struct{}: GracefulStop not returned
	started  bool         // serveServicesFirst started them
}

// serviceStartGrace is how long a new process with services waits, once
// serving began, before it tells its predecessor that it serves: a Serve
// that fails at once (it serves nothing) returns within it.
const serviceStartGrace = 100 * time.Millisecond

// serveServicesFirst starts serving the services, before the HTTP
// servers, in a successor: it waits serviceStartGrace, if there are
// services, and returns the error of a Serve that returned meanwhile,
// which fails the successor's start: its predecessor then serves on
// instead of retiring in favour of a process about to stop, and no HTTP
// connection was accepted here to be lost. The listener Serve is given is
// left as it is (no wrapper to watch its Accept), so a Serve may still
// assert its type.
func (r *runner) serveServicesFirst() error {
	r.serveErr = make(chan error, len(r.served))
	r.serving = len(r.served)
	has := false
	for _, sv := range r.served {
		if sv.svc != nil {
			r.serveService(sv)
			has = true
		}
	}
	r.svcs.started = true
	if !has {
		return nil
	}
	t := time.NewTimer(serviceStartGrace)
	defer t.Stop()
	select {
	case err := <-r.serveErr:
		r.serveErr <- err // the loop's, had the start gone on
		return err
	case <-t.C:
		return nil
	}
}

// begin marks s as serving: no service may be added any more. It fails for
// a Server with neither an http.Server nor a service.
func (s *Server) begin() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Server == nil && len(s.services) == 0 {
		return errors.New("graceful: Server.Server is nil and no service is registered")
	}
	s.begun = true
	return nil
}

// checkAddrs fails, before anything is listened on, when two servers (the
// main one, Extra, services, the control socket) ask for the same address, or one of the
// services registered is unusable.
func (r *runner) checkAddrs(l net.Listener, useTLS bool) error {
	s := r.s
	type claim struct{ what, network, addr string }
	var claims []claim
	add := func(what, network, addr string) {
		network, addr = splitAddr(network, addr)
		if network == "unix" && !strings.HasPrefix(addr, "@") {
			addr = absPath(addr)
		}
		claims = append(claims, claim{what, network, addr})
	}
	if s.Server == nil && l != nil {
		return errors.New("graceful: Serve: Server.Server is nil: nothing to serve the listener")
	}
	if s.Server != nil {
		switch {
		case l != nil:
			add("the server", l.Addr().Network(), l.Addr().String())
		case s.Addr == "" && useTLS:
			add("the server", "tcp", ":https")
		default:
			add("the server", "tcp", s.Addr)
		}
	}
	for i, x := range s.Extra {
		if x != nil {
			add(fmt.Sprintf("Extra[%d]", i), "tcp", x.Addr)
		}
	}
	if r.control != "" {
		// The control socket is a Unix socket like any other.
		add("the control socket", "unix", r.control)
	}
	for _, svc := range s.services {
		what := fmt.Sprintf("service %q", svc.label())
		switch {
		case svc.Serve == nil:
			return fmt.Errorf("graceful: %s: Serve is nil", what)
		case svc.Listener != nil:
			add(what, svc.Listener.Addr().Network(), svc.Listener.Addr().String())
		case svc.Addr == "":
			return fmt.Errorf("graceful: %s: neither Addr nor Listener is set", what)
		default:
			add(what, "tcp", svc.Addr)
		}
	}
	for i, a := range claims {
		for _, b := range claims[:i] {
			if sameListenAddr(a.network, a.addr, b.network, b.addr) {
				return fmt.Errorf("graceful: %s and %s both listen on %s:%s", b.what, a.what, a.network, a.addr)
			}
		}
	}
	return nil
}

// sameListenAddr reports whether two listeners asked for as given would
// be bound to the same socket address: the same Unix path, or the same
// TCP port (not 0) on the same IP or where either is on every interface.
func sameListenAddr(n1, a1, n2, a2 string) bool {
	if (n1 == "unix") != (n2 == "unix") {
		return false
	}
	if n1 == "unix" {
		return a1 == a2
	}
	t1, err1 := net.ResolveTCPAddr(n1, a1)
	t2, err2 := net.ResolveTCPAddr(n2, a2)
	if err1 != nil || err2 != nil {
		return a1 == a2
	}
	if t1.Port == 0 || t1.Port != t2.Port {
		return false
	}
	any1 := t1.IP == nil || t1.IP.IsUnspecified()
	any2 := t2.IP == nil || t2.IP.IsUnspecified()
	return any1 || any2 || t1.IP.Equal(t2.IP)
}

// listenServices obtains each service's listener, after those of the HTTP
// servers, then finds the socket under every wrapped listener and wraps
// the services' sockets with their Wrap.
func (r *runner) listenServices() error {
	r.s.mu.Lock()
	svcs := append([]*Service{}, r.s.services...)
	r.s.mu.Unlock()
	for _, svc := range svcs {
		sv := &served{svc: svc}
		if svc.Listener != nil {
			sv.l = svc.Listener
		} else {
			l, err := Listen("tcp", svc.Addr)
			if err != nil {
				return fmt.Errorf("graceful: service %q: %w", svc.label(), err)
			}
			sv.l = l
		}
		r.served = append(r.served, sv)
	}
	owner := map[net.Listener]*served{}
	for _, sv := range r.served {
		raw, err := r.socketOf(sv.l)
		if err != nil {
			return fmt.Errorf("graceful: %s: %w", sv.what(), err)
		}
		if raw != sv.l {
			sv.serveL, sv.l = sv.l, raw
		}
		if o := owner[raw]; o != nil {
			return fmt.Errorf("graceful: %s and %s both serve the listener on %s", o.what(), sv.what(), raw.Addr())
		}
		owner[raw] = sv
	}
	for _, sv := range r.served {
		if sv.svc == nil || sv.svc.Wrap == nil {
			continue
		}
		w, err := sv.svc.Wrap(sv.listener())
		if err == nil && w == nil {
			err = errors.New("returned a nil listener")
		}
		if err != nil {
			return fmt.Errorf("graceful: %s: Wrap: %w", sv.what(), err)
		}
		sv.serveL = w
	}
	return nil
}

// socketOf returns the listening socket under l, which graceful passes on
// at restarts: l itself if it came from Listen or can be passed on, else
// the listener Listen opened at l's address, of which l is a wrapper.
func (r *runner) socketOf(l net.Listener) (net.Listener, error) {
	in := r.inh
	in.mu.Lock()
	defer in.mu.Unlock()
	if _, ok := in.keys[l]; ok {
		return l, nil
	}
	a := l.Addr()
	for k := range in.keys {
		if ka := k.Addr(); ka.Network() == a.Network() && ka.String() == a.String() && open(k) {
			return k, nil
		}
	}
	if _, ok := l.(syscall.Conn); ok || !restartSupported {
		return l, nil
	}
	return nil, fmt.Errorf("a %T listener on %s has no socket that can be passed on at a restart: obtain it, or the listener it wraps, from graceful.Listen", l, a)
}

// open reports whether l's socket is still open: a listener from Listen
// that the program closed is still in the table.
func open(l net.Listener) bool {
	sc, ok := l.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	return err == nil && rc.Control(func(uintptr) {}) == nil
}

// what names sv's server in errors.
func (sv *served) what() string {
	switch {
	case sv.svc != nil:
		return fmt.Sprintf("service %q", sv.svc.label())
	case sv.l != nil:
		return "the server on " + sv.l.Addr().String()
	}
	return "the server"
}

// listener is what sv's server serves on: a wrapper of the socket, or the
// socket itself.
func (sv *served) listener() net.Listener {
	if sv.serveL != nil {
		return sv.serveL
	}
	return sv.l
}

// serveService starts serving sv's service. As for HTTP, Serve's return
// while the process is not draining fails the server.
func (r *runner) serveService(sv *served) {
	go func() {
		err := sv.svc.Serve(sv.listener())
		if err == nil {
			err = errors.New("Serve returned")
		}
		r.serveErr <- fmt.Errorf("graceful: serving service %q on %s %s: %w", sv.svc.label(), sv.key.network, sv.key.addr, err)
	}()
}

// drainServices, as a drain begins and the listeners are closed, tells
// the services' handlers (Draining) and calls every GracefulStop, each in
// a goroutine of its own. The drain is over only once they have returned.
func (r *runner) drainServices() {
	for _, sv := range r.served {
		svc := sv.svc
		if svc == nil {
			continue
		}
		svc.drainOne.Do(func() { close(svc.drain()) })
		if svc.GracefulStop == nil {
			continue
		}
		r.svcs.stopping.Add(1)
		r.svcs.pending.Store(svc, struct{}{})
		go func() {
			defer r.svcs.stopping.Add(-1)
			if err := callHook(svc.GracefulStop); err != nil {
				r.log.Error("graceful: GracefulStop failed", "service", svc.label(), "err", err)
			}
			r.svcs.pending.Delete(svc)
		}()
	}
}

// servicesStopped reports whether every GracefulStop has returned.
func (r *runner) servicesStopped() bool { return r.svcs.stopping.Load() == 0 }

// stopServices calls Stop on every service whose GracefulStop has not
// returned: the drain timed out, or Close was called. It waits for them,
// each bounded by HookTimeout.
func (r *runner) stopServices() {
	var wg sync.WaitGroup
	for _, sv := range r.served {
		svc := sv.svc
		if svc == nil || svc.Stop == nil {
			continue
		}
		if _, ok := r.svcs.pending.Load(svc); !ok && svc.GracefulStop != nil {
			continue
		}
		r.log.Warn("graceful: stopping a service at once", "service", svc.label())
		wg.Add(1)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := callHook(svc.Stop); err != nil {
				r.log.Error("graceful: Stop failed", "service", svc.label(), "err", err)
			}
		}()
		go func() {
			defer wg.Done()
			select {
			case <-done:
			case <-time.After(durationOr(r.s.HookTimeout, DefaultHookTimeout)):
				r.log.Error("graceful: Stop still running; moving on", "service", svc.label())
			}
		}()
	}
	wg.Wait()
}

// services lists the run's services in the order they are served, the
// order a worker's heartbeat numbers them in.
func (r *runner) services() []*Service {
	var out []*Service
	for _, sv := range r.served {
		if sv.svc != nil {
			out = append(out, sv.svc)
		}
	}
	return out
}

// serviceStatus lists the run's services for Status.
func (r *runner) serviceStatus() []ServiceStatus {
	var out []ServiceStatus
	for _, sv := range r.served {
		if svc := sv.svc; svc != nil {
			a := sv.l.Addr()
			out = append(out, ServiceStatus{Name: svc.label(), Listener: a.Network() + ":" + a.String(), InFlight: svc.inflight.Load(), Total: svc.total.Load()})
		}
	}
	return out
}
