package graceful

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// runner is one serving run of a Server. In single mode and in a worker,
// its loop goroutine owns the state of the process: serving (with perhaps
// a successor starting), delaying (a stop under way: not ready, serving for
// ShutdownDelay) and draining (no longer accepting). Signals, calls such as
// Restart and Shutdown, control requests, the master's orders, the
// watchdog and the drain's timers all reach it in that one loop, so each
// is answered by the state it finds. A cluster's master has a loop of its
// own (master.go).
type runner struct {
	s      *Server
	log    *slog.Logger
	inh    *inheritance
	track  *tracker
	exeRel string // the executable's path inside Directory

	// Paths of the configuration, resolved once at start.
	dir, control, pidFile string

	served   []*served
	ctl      *control // the control socket, if Control is set
	draining atomic.Bool
	stopping atomic.Bool // a stop for good has begun: not ready
	drainCh  chan struct{}
	started  time.Time

	inflight  atomic.Int64   // requests being served
	total     atomic.Uint64  // requests finished
	last      *RestartStatus // the last restart begun; owned by the loop
	counts    counters       // restarts, respawns, drains (metrics.go); owned by the loop
	successor atomic.Int64   // the process that took over, once one has

	notify   *notifier // nil in a worker
	reqs     chan request
	serveErr chan error
	serving  int // Serve calls that have not returned
	sigs     chan os.Signal
	finished chan struct{}
	ctxDone  <-chan struct{} // Run's context

	// The loop's state.
	state   runState
	stops   int          // stop signals received since the stop began
	delay   *time.Timer  // ShutdownDelay, while delaying
	drain   *drainer     // while draining
	hot     hotRestart   // a successor starting
	retired *successor   // the successor that took over, when retiring
	waiters []chan error // Shutdown calls waiting for the end
	fail    error        // why serving failed, if it did
	link    *masterLink  // a worker's link to its master
	hooks   []*[]func()  // hook lists to run once drained
	hand    handOffState // connection hand-off (handoff_proc.go)

	spawner func(spawnSpec) (*successor, error) // tests' fake children; nil: spawn

	svcs serviceRun // the services' stops (service.go)
}

type runState int

const (
	stateServing  runState = iota
	stateDelaying          // stopping: not ready, serving on for ShutdownDelay
	stateDraining          // not accepting; connections finishing
)

// served is one listener and the server that serves it.
type served struct {
	srv      *http.Server
	svc      *Service     // a Service instead of srv (service.go)
	l        net.Listener // the socket, as listened on, before tracking and TLS
	serveL   net.Listener // if set, the wrapper of l that is served (service.go)
	key      lnKey
	useTLS   bool
	certFile string
	keyFile  string
}

type reqKind int

const (
	reqRestart reqKind = iota
	reqShutdown
	reqClose
	reqPhased
	reqStatus
	reqResize
)

type request struct {
	kind   reqKind
	done   chan error   // buffered: the loop never blocks on a reply
	status chan *Status // buffered, for reqStatus
	delta  int          // for reqResize
}

// start listens, tells a predecessor it is ready (or writes the pidfile),
// serves, and runs the loop until the server is replaced or stopped.
func (s *Server) start(ctx context.Context, l net.Listener, useTLS bool, certFile, keyFile string) error {
	if err := s.begin(); err != nil { // service.go
		return err
	}
	s.mu.Lock()
	if s.run != nil {
		s.mu.Unlock()
		return errors.New("graceful: server is already serving")
	}
	r := &runner{
		s:        s,
		log:      s.logger(),
		track:    newTracker(),
		drainCh:  make(chan struct{}),
		reqs:     make(chan request),
		sigs:     make(chan os.Signal, 4),
		finished: make(chan struct{}),
		started:  time.Now(),
		dir:      absPath(s.Directory),
		control:  absPath(s.Control),
		pidFile:  absPath(s.PIDFile),
	}
	r.hot.r = r
	r.ctxDone = ctx.Done() // nil, never done, for Background
	s.run = r
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.run = nil
		s.mu.Unlock()
		close(r.finished)
	}()

	inh, err := inherited()
	if err != nil {
		return err
	}
	r.inh = inh
	if inh.stale != "" {
		r.log.Warn("graceful: ignored the inherited environment", "reason", inh.stale)
	}
	fail := func(err error) error {
		if err != nil && err != http.ErrServerClosed {
			// Serving never started, or ended without a drain.
			r.closeListeners()
			r.ctl.close()
		}
		return err
	}
	if err := r.listen(l, useTLS, certFile, keyFile); err != nil {
		return fail(err)
	}
	switch {
	case r.control == "" || r.worker():
	case !restartSupported:
		// As with Workers: what needs Unix is left out, with a word.
		r.log.Warn("graceful: the control socket needs Unix; serving without it", "control", r.control)
	default:
		if err := r.openControl(r.control); err != nil {
			return fail(err)
		}
	}
	for _, a := range inh.closeUnclaimed() {
		r.log.Info("graceful: closed an inherited listener no server asked for", "addr", a)
	}
	if r.worker() {
		// Left caught (and ignored) when the worker returns: what the
		// program does then must not be cut by a signal to the group.
		r.handleSignals(notifyWorkerSignals)
		return fail(r.runWorker())
	}
	r.notify = newNotifier(r.log)
	defer r.notify.stopPings()
	if r.dir != "" {
		if r.exeRel, err = exeInDirectory(r.dir); err != nil {
			return fail(fmt.Errorf("graceful: Directory: %w", err))
		}
	}
	if s.Workers > 0 && clusterSupported {
		r.handleSignals(notifyMasterSignals)
		defer stopSignals(r.sigs)
		return fail(r.runMaster())
	}
	if s.Workers > 0 {
		r.log.Warn("graceful: workers need Unix; serving in single mode", "workers", s.Workers)
	}
	r.handleSignals(notifySignals)
	defer stopSignals(r.sigs)
	handingOver := r.inh.ctrl != nil
	serving, err := r.takeOver()
	if err != nil {
		return fail(err)
	}
	if handingOver { // service.go: a successor whose service's Serve returns at once does not take over
		if err := r.serveServicesFirst(); err != nil {
			return fail(err)
		}
	}
	r.serve()
	serving()
	r.notify.ready("")
	r.stopGraceParent()
	return r.loop()
}

// handleSignals routes the role's signals to the loop, unless the program
// keeps signals to itself.
func (r *runner) handleSignals(notify func(chan os.Signal)) {
	if !r.s.NoSignals {
		notify(r.sigs)
	}
}

// takeOver is a new process's side of the hand-over, or the first
// process's pidfile. The process calls serving once it accepts.
func (r *runner) takeOver() (serving func(), err error) {
	serving = func() {}
	if r.inh.ctrl == nil {
		if r.pidFile == "" {
			return serving, nil
		}
		if err := writePIDFile(r.pidFile, os.Getpid()); err != nil {
			return serving, fmt.Errorf("graceful: %w", err)
		}
		r.stateTakenOver()
		return serving, nil
	}
	ctrl, _, orphaned, err := r.handshake()
	if err != nil {
		return serving, err
	}
	if orphaned {
		// The predecessor died before it could name this process.
		if r.pidFile != "" {
			if err := writePIDFile(r.pidFile, os.Getpid()); err != nil {
				r.log.Error("graceful: could not take over the pidfile", "err", err)
			}
		}
		r.notify.mainPID(os.Getpid())
	}
	return func() {
		r.stateTakenOver() // before "serving": the predecessor then writes no more
		r.handOffHello()   // before "serving": the predecessor's drain then sees it
		ctrl.Write([]byte(message{kind: msgServing}.String() + "\n"))
		ctrl.Close()
		r.tookOver()
	}, nil
}

// listen obtains a listener for the main server, each Extra one and each
// service.
func (r *runner) listen(l net.Listener, useTLS bool, certFile, keyFile string) error {
	s := r.s
	if err := r.checkAddrs(l, useTLS); err != nil { // service.go
		return err
	}
	main := &served{srv: s.Server, useTLS: useTLS, certFile: certFile, keyFile: keyFile}
	if useTLS && (certFile != "" || keyFile != "") {
		// Fail before telling a predecessor we are ready, not after.
		if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			return fmt.Errorf("graceful: TLS key pair: %w", err)
		}
	}
	switch {
	case s.Server == nil:
		// Services only (service.go).
	case l != nil:
		main.l = l
	default:
		addr := s.Addr
		if addr == "" && useTLS {
			addr = ":https"
		}
		var err error
		if main.l, err = Listen("tcp", addr); err != nil {
			return err
		}
	}
	if main.l != nil {
		r.served = append(r.served, main)
	}
	for i, x := range s.Extra {
		if x == nil {
			return fmt.Errorf("graceful: Extra[%d] is nil", i)
		}
		xl, err := Listen("tcp", x.Addr)
		if err != nil {
			return err
		}
		r.served = append(r.served, &served{srv: x, l: xl, useTLS: hasCert(x.TLSConfig)})
	}
	// The services' listeners, the sockets under wrapped listeners, Wrap.
	if err := r.listenServices(); err != nil {
		return err
	}
	for _, sv := range r.served {
		sv.key = r.inh.keyOf(sv.l)
	}
	return nil
}

func hasCert(c *tls.Config) bool {
	return c != nil && (len(c.Certificates) > 0 || c.GetCertificate != nil || c.GetConfigForClient != nil)
}

// closeListeners closes every listener of the run: to stop accepting, or
// for a run that ends before serving.
func (r *runner) closeListeners() {
	for _, sv := range r.served {
		if sv.serveL != nil {
			sv.serveL.Close() // a wrapper: its Accept may not wait on the socket alone
		}
	}
	for _, l := range r.listeners() {
		r.inh.forget(l)
		l.Close()
	}
}

// listeners lists the run's open listeners: those served, then the
// control socket's.
func (r *runner) listeners() []net.Listener {
	var ls []net.Listener
	for _, sv := range r.served {
		if sv.l != nil {
			ls = append(ls, sv.l)
		}
	}
	if r.ctl != nil {
		ls = append(ls, r.ctl.l)
	}
	return ls
}

// serve wraps each server's hooks and starts serving every listener.
func (r *runner) serve() {
	if r.serveErr == nil { // else serveServicesFirst began (service.go)
		r.serveErr = make(chan error, len(r.served))
		r.serving = len(r.served)
	}
	for _, sv := range r.served {
		if sv.svc != nil {
			if !r.svcs.started {
				r.serveService(sv) // service.go
			}
			continue
		}
		srv := sv.srv
		h := srv.Handler
		if h == nil {
			h = http.DefaultServeMux
		}
		srv.Handler = r.wrap(h)
		userState := srv.ConnState
		srv.ConnState = func(c net.Conn, st http.ConnState) {
			r.track.connState(c, st)
			if userState != nil {
				userState(c, st)
			}
		}
		userBase := srv.BaseContext
		srv.BaseContext = func(l net.Listener) context.Context {
			ctx := context.Background()
			if userBase != nil {
				ctx = userBase(l)
			}
			return context.WithValue(ctx, drainKey{}, r.drainCh)
		}
		r.track.setupHTTP2(srv)
		// Connection hand-off (handoff.go): handed-in connections are
		// served too, and accepted ones can be handed off.
		tl := &trackedListener{Listener: sv.listener(), t: r.track, via: r.serveHandedIn(sv)}
		go func(sv *served) {
			var err error
			if sv.useTLS {
				err = srv.ServeTLS(tl, sv.certFile, sv.keyFile)
			} else {
				err = srv.Serve(tl)
			}
			r.serveErr <- fmt.Errorf("graceful: serving %s %s: %w", sv.key.network, sv.key.addr, err)
		}(sv)
	}
	r.log.Info("graceful: serving", "pid", os.Getpid(), "addrs", r.addrs())
}

// wrap counts h's requests and, during a drain, asks clients to close
// their connections, unless the connection is handed off (handoff.go).
func (r *runner) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.inflight.Add(1)
		defer r.finish()
		if r.draining.Load() && !r.track.keepOpen(req) {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, req)
	})
}

// finish counts a request done, also when its handler panics.
func (r *runner) finish() {
	r.inflight.Add(-1)
	r.total.Add(1)
}

func (r *runner) addrs() []string {
	var a []string
	for _, sv := range r.served {
		a = append(a, sv.l.Addr().Network()+":"+sv.l.Addr().String())
	}
	return a
}

// worker reports whether this run is a worker of a cluster.
func (r *runner) worker() bool { return r.inh != nil && r.inh.desc != nil && r.inh.desc.Worker }

// call hands a request to the loop and waits for its answer.
func (r *runner) call(ctx context.Context, kind reqKind) error {
	req := request{kind: kind, done: make(chan error, 1)}
	if err := r.send(ctx, req); err != nil {
		return err
	}
	return r.await(ctx, req)
}

// send hands a request to the loop.
func (r *runner) send(ctx context.Context, req request) error {
	select {
	case r.reqs <- req:
		return nil
	case <-r.finished:
		return ErrNotServing
	case <-ctx.Done():
		return ctx.Err()
	}
}

// await waits for the loop's answer to req.
func (r *runner) await(ctx context.Context, req request) error {
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// loop is the state machine of a single-mode process or a worker. It
// returns once the drain is over.
func (r *runner) loop() error {
	for {
		if r.state == stateDraining && r.drain.over {
			return r.end()
		}
		select {
		case sig := <-r.sigs:
			r.signal(sig)
		case req := <-r.reqs:
			r.request(req)
		case <-r.notify.watchdog():
			r.notify.ping()
		case <-r.ctxDone:
			r.ctxDone = nil
			r.stop("context done", false)
		case err := <-r.hot.result():
			succ := r.hot.settle(err)
			held := r.hot.heldSignal()
			if succ != nil {
				r.retired = succ
				r.log.Info("graceful: handed over; draining", "pid", os.Getpid(), "successor", succ.pid())
				r.hooks = append(r.hooks, &r.s.hooks)
				r.startDrain(false)
				r.answerHanded()
			} else if held != "" {
				r.stop(held, false) // the restart failed: stop as asked
			}
		case err := <-r.serveErr:
			r.serving--
			r.answerHanded()
			if r.state != stateDraining {
				r.log.Error("graceful: serving failed", "err", err)
				r.fail = err
				r.stop("serving failed", true)
			}
		case <-timerC(r.delay):
			r.delay = nil
			r.startDrain(true)
		case <-r.drain.tick():
			r.drain.sweep()
		case <-r.drain.deadline():
			r.drain.expire()
		case m, ok := <-r.link.orders():
			r.order(m, ok)
		case <-r.link.beats():
			r.link.beat(r)
		}
	}
}

// answerHanded tells the Restart calls that a successor took over, once
// this process has stopped accepting: whoever asked then reaches only the
// successor.
func (r *runner) answerHanded() {
	if r.retired != nil && r.serving == 0 {
		r.hot.answer(nil)
	}
}

// signal handles a signal in the state it finds.
func (r *runner) signal(sig os.Signal) {
	switch {
	case r.worker():
		// A worker's life is its master's to decide: a stop signal sent to
		// the whole process group, as systemd and Ctrl-C do, must not cut
		// the requests it is serving.
		r.log.Info("graceful: signal ignored by a worker; signal the master", "signal", sig.String(), "master", r.inh.desc.PPID)
	case isRestartSignal(sig):
		if r.state != stateServing {
			r.log.Warn("graceful: signal ignored: stopping", "signal", sig.String())
			return
		}
		r.hot.begin(sig.String(), nil)
	default:
		r.stops++
		switch {
		case r.state == stateServing && r.hot.hold(sig.String()):
			r.stops--
		case r.state == stateServing:
			r.stop(sig.String(), false)
		case r.state == stateDelaying:
			r.log.Warn("graceful: second stop signal; draining now", "signal", sig.String())
			r.stop(sig.String(), true)
		case r.stops >= 2:
			r.log.Warn("graceful: second stop signal; closing the remaining connections", "signal", sig.String())
			r.drain.force()
		default:
			r.log.Warn("graceful: stop signal during the drain: the drain finishes; send it again to cut it short", "signal", sig.String())
		}
	}
}

// request answers a call or control request in the state it finds.
func (r *runner) request(req request) {
	switch req.kind {
	case reqStatus:
		req.status <- r.snapshot(r.stateName())
	case reqShutdown:
		r.waiters = append(r.waiters, req.done)
		if r.state == stateServing {
			r.stop("Shutdown called", false)
		}
	case reqClose:
		r.waiters = append(r.waiters, req.done)
		r.stop("Close called", true)
		r.hot.kill()
		r.drain.force()
	case reqRestart:
		switch {
		case r.worker():
			req.done <- ErrNotMaster
		case r.state != stateServing:
			req.done <- ErrDraining
		default:
			r.hot.begin("Restart", req.done)
		}
	default:
		req.done <- ErrNotMaster
	}
}

func (r *runner) stateName() string {
	switch {
	case r.state == stateDelaying:
		return "stopping"
	case r.state == stateDraining:
		return "draining"
	case r.hot.succ != nil:
		return "restarting"
	}
	return "serving"
}

// stop begins a stop for good: no successor takes over. now skips
// ShutdownDelay, or ends it. A stop already under way goes on.
func (r *runner) stop(why string, now bool) {
	switch r.state {
	case stateDraining:
		return
	case stateDelaying:
		if now {
			r.drainNow()
		}
		return
	}
	r.hot.abort(why)
	r.log.Info("graceful: shutting down", "reason", why, "pid", os.Getpid())
	r.stopping.Store(true)
	r.notify.stopping()
	if d := r.s.ShutdownDelay; d > 0 && !now {
		r.log.Info("graceful: not ready; serving on before the drain", "delay", d)
		r.state, r.delay = stateDelaying, time.NewTimer(d)
		return
	}
	r.startDrain(true)
}

// drainNow ends ShutdownDelay, if under way, and begins the drain, if not
// begun: what a worker does when its master says so. Unlike stop, it does
// not mark the process not ready: a worker replaced in a phase drains, but
// the service it belongs to is not stopping.
func (r *runner) drainNow() {
	if r.delay != nil {
		r.delay.Stop()
		r.delay = nil
	}
	if r.state != stateDraining {
		r.startDrain(true)
	}
}

// end finishes the run once drained: hooks, pidfile, answers.
func (r *runner) end() error {
	r.hot.reap(max(r.s.ShutdownDelay, 0) + durationOr(r.s.ShutdownTimeout, DefaultShutdownTimeout) + 5*time.Second)
	r.runServerHooks(r.hooks...)
	if r.retired != nil {
		r.retired.release()
		r.log.Info("graceful: retired", "pid", os.Getpid())
	} else {
		if r.pidFile != "" && !r.worker() {
			removePIDFile(r.pidFile, os.Getpid())
			removeStateFile(r.pidFile, os.Getpid())
		}
		r.log.Info("graceful: stopped", "pid", os.Getpid())
	}
	r.link.close(r)
	for _, w := range r.waiters {
		w <- nil
	}
	r.ctl.close()
	if r.fail != nil {
		return r.fail
	}
	return http.ErrServerClosed
}

// timerC is t's channel, or nil, which never fires, for no timer.
func timerC(t *time.Timer) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C
}
