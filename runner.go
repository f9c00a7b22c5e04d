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
	"strings"
	"sync/atomic"
	"time"
)

// runner is one serving run of a Server. Its loop goroutine owns the
// restart state (serving, successor starting, draining); signals, Restart
// and Shutdown reach it over channels, so a request that arrives in the
// middle of a restart is answered by the state it finds, not by a lock.
type runner struct {
	s      *Server
	log    *slog.Logger
	inh    *inheritance
	track  *tracker
	exeRel string // the executable's path inside Directory

	served   []*served
	ctl      *control // the control socket, if Control is set
	draining atomic.Bool
	stopping atomic.Bool // a stop for good has begun: not ready
	drainCh  chan struct{}
	started  time.Time

	inflight  atomic.Int64   // requests being served
	total     atomic.Uint64  // requests finished
	last      *RestartStatus // the last restart begun; owned by the loop
	successor atomic.Int64   // the process that took over, once one has

	notify   *notifier // nil in a worker
	reqs     chan request
	serveErr chan error
	serving  int // Serve calls that have not returned
	sigs     chan os.Signal
	finished chan struct{}
}

// served is one listener and the server that serves it.
type served struct {
	srv      *http.Server
	l        net.Listener // as listened on, before tracking and TLS
	key      lnKey
	useTLS   bool
	certFile string
	keyFile  string
}

type reqKind int

const (
	reqRestart reqKind = iota
	reqShutdown
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
func (s *Server) start(l net.Listener, useTLS bool, certFile, keyFile string) error {
	if s.Server == nil {
		return errors.New("graceful: Server.Server is nil")
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
	}
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
		r.log.Warn("graceful: " + inh.stale)
	}
	if err := r.listen(l, useTLS, certFile, keyFile); err != nil {
		r.closeListeners()
		return err
	}
	if s.Control != "" && !r.worker() {
		if err := r.openControl(s.Control); err != nil {
			r.closeListeners()
			return err
		}
		defer r.ctl.close()
	}
	for _, a := range inh.closeUnclaimed() {
		r.log.Info("graceful: closed an inherited listener no server asked for", "addr", a)
	}
	if inh.desc != nil && inh.desc.Worker {
		notifyWorkerSignals(r.sigs)
		defer stopSignals(r.sigs)
		return r.runWorker()
	}
	r.notify = newNotifier(r.log)
	if s.Directory != "" {
		if r.exeRel, err = exeInDirectory(s.Directory); err != nil {
			r.closeListeners()
			return fmt.Errorf("graceful: Directory: %w", err)
		}
	}
	if s.Workers > 0 && clusterSupported {
		notifyMasterSignals(r.sigs)
		defer stopSignals(r.sigs)
		err := r.runMaster()
		if err != nil {
			r.closeListeners()
		}
		return err
	}
	if s.Workers > 0 {
		r.log.Warn("graceful: workers need Unix; serving in single mode", "workers", s.Workers)
	}
	notifySignals(r.sigs)
	defer stopSignals(r.sigs)

	if inh.ctrl != nil {
		if err := r.confirmReady(); err != nil {
			r.closeListeners()
			return err
		}
	} else if s.PIDFile != "" {
		if err := writePIDFile(s.PIDFile, os.Getpid()); err != nil {
			r.closeListeners()
			return err
		}
	}
	r.serve()
	r.notify.ready("")
	r.stopGraceParent()
	return r.loop()
}

// listen obtains a listener for the main server and for each Extra one.
func (r *runner) listen(l net.Listener, useTLS bool, certFile, keyFile string) error {
	s := r.s
	main := &served{srv: s.Server, useTLS: useTLS, certFile: certFile, keyFile: keyFile}
	if useTLS && (certFile != "" || keyFile != "") {
		// Fail before telling a predecessor we are ready, not after.
		if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			return fmt.Errorf("graceful: TLS key pair: %w", err)
		}
	}
	if l != nil {
		main.l = l
	} else {
		addr := s.Addr
		if addr == "" && useTLS {
			addr = ":https"
		}
		var err error
		if main.l, err = Listen("tcp", addr); err != nil {
			return err
		}
	}
	r.served = append(r.served, main)
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
	r.serveErr = make(chan error, len(r.served))
	r.serving = len(r.served)
	for _, sv := range r.served {
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
		tl := &trackedListener{Listener: sv.l, t: r.track}
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
// their connections.
func (r *runner) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.inflight.Add(1)
		defer r.finish()
		if r.draining.Load() {
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

// removeSocketFiles removes the files of Unix socket listeners, once no
// process will listen on them again.
func (r *runner) removeSocketFiles() {
	for _, l := range r.listeners() {
		if ua, ok := l.Addr().(*net.UnixAddr); ok && !strings.HasPrefix(ua.Name, "@") {
			os.Remove(ua.Name)
		}
	}
}

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

// loop owns the restart state until the run ends.
func (r *runner) loop() error {
	hot := &hotRestart{r: r}
	for {
		select {
		case sig := <-r.sigs:
			if isRestartSignal(sig) {
				hot.begin(sig.String(), nil)
				continue
			}
			hot.abort("received " + sig.String())
			return r.stop(nil, sig.String())
		case req := <-r.reqs:
			switch req.kind {
			case reqRestart:
				hot.begin("Restart", req.done)
			case reqShutdown:
				hot.abort("Shutdown called")
				return r.stop(req.done, "Shutdown")
			case reqPhased, reqResize:
				req.done <- ErrNotMaster
			case reqStatus:
				req.status <- r.snapshot(hot.state())
			}
		case <-r.notify.watchdog():
			r.notify.ping()
		case err := <-hot.result():
			if succ := hot.settle(err); succ != nil {
				return r.retire(succ)
			}
		case err := <-r.serveErr:
			r.serving--
			r.log.Error("graceful: serving failed", "err", err)
			hot.abort("serving failed")
			r.stop(nil, "serving failed")
			return err
		}
	}
}

// stop drains for good: no successor takes over.
func (r *runner) stop(done chan error, why string) error {
	r.log.Info("graceful: shutting down", "reason", why, "pid", os.Getpid())
	r.notify.stopping()
	waiters := r.delayStop()
	waiters = append(waiters, r.drain(true)...)
	if r.s.PIDFile != "" {
		removePIDFile(r.s.PIDFile, os.Getpid())
	}
	r.log.Info("graceful: stopped", "pid", os.Getpid())
	if done != nil {
		done <- nil
	}
	for _, w := range waiters {
		w <- nil
	}
	return http.ErrServerClosed
}

// retire drains after a successor took over, then runs the hooks.
func (r *runner) retire(succ *successor) error {
	r.log.Info("graceful: handed over; draining", "pid", os.Getpid(), "successor", succ.pid())
	waiters := r.drain(false)
	r.runServerHooks(&r.s.hooks)
	succ.release()
	r.log.Info("graceful: retired", "pid", os.Getpid())
	for _, w := range waiters {
		w <- nil
	}
	return http.ErrServerClosed
}

// delayStop marks the server not ready and, for ShutdownDelay, serves on
// so that load balancers notice. A second stop signal ends the delay. It
// returns the Shutdown calls that arrived meanwhile.
func (r *runner) delayStop() []chan error {
	r.stopping.Store(true)
	delay := r.s.ShutdownDelay
	if delay <= 0 {
		return nil
	}
	r.log.Info("graceful: not ready; serving on before the drain", "delay", delay)
	timer := time.NewTimer(delay)
	defer timer.Stop()
	var waiters []chan error
	for {
		select {
		case <-timer.C:
			return waiters
		case sig := <-r.sigs:
			if !isRestartSignal(sig) && !r.worker() {
				r.log.Warn("graceful: second stop signal; draining now", "signal", sig.String())
				return waiters
			}
			r.log.Warn("graceful: signal ignored: stopping", "signal", sig.String())
		case req := <-r.reqs:
			waiters = whileStopping(req, waiters, func() *Status { return r.snapshot("stopping") })
		case <-r.notify.watchdog():
			r.notify.ping()
		}
	}
}

// whileStopping answers a request that arrives while the server stops:
// a Shutdown call joins the waiters, which it returns; a status request
// gets status(); anything else is refused.
func whileStopping(req request, waiters []chan error, status func() *Status) []chan error {
	switch req.kind {
	case reqShutdown:
		return append(waiters, req.done)
	case reqStatus:
		req.status <- status()
	default:
		req.done <- ErrDraining
	}
	return waiters
}

// drainTick is how often the drain looks at its connections.
const drainTick = 10 * time.Millisecond

// drain stops accepting, lets every connection finish, and returns the
// Shutdown calls that arrived meanwhile. final says no successor holds the
// listening sockets, so Unix socket files are removed.
func (r *runner) drain(final bool) []chan error {
	r.draining.Store(true)
	close(r.drainCh)
	r.closeListeners()
	if final {
		r.removeSocketFiles()
	}
	timeout := durationOr(r.s.ShutdownTimeout, DefaultShutdownTimeout)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	// Until every Serve has returned, its accept loop may hold a connection
	// that the kernel handed it just before the close and that the tracker
	// does not know yet: counting connections before then could end the
	// drain with that one unserved.
	expired := false
	for ; r.serving > 0 && !expired; r.serving-- {
		select {
		case <-r.serveErr:
		case <-deadline.C:
			r.log.Warn("graceful: a listener did not stop accepting within the drain timeout")
			expired = true
		}
	}
	tick := time.NewTicker(drainTick)
	defer tick.Stop()
	grace := int64(durationOr(r.s.DrainIdleTimeout, DefaultDrainIdleTimeout) / drainTick)
	marks := map[*trackedConn]idleMark{}
	var waiters []chan error
	start := time.Now()
	for i := int64(0); ; i++ {
		n := r.track.sweep(marks, i, grace)
		if n == 0 {
			break
		}
		if expired {
			r.track.closeAll()
			break
		}
		forced := false
		select {
		case <-tick.C:
		case <-deadline.C:
			r.log.Warn("graceful: drain timed out; closing the remaining connections", "timeout", timeout, "connections", n)
			forced = true
		case sig := <-r.sigs:
			if isRestartSignal(sig) || r.worker() {
				// A worker's drain is the master's to cut short: a
				// SIGTERM sent to the whole process group, as systemd
				// does, must not cut the requests it is finishing.
				r.log.Warn("graceful: signal ignored: draining", "signal", sig.String())
				continue
			}
			r.log.Warn("graceful: second stop signal; closing the remaining connections", "signal", sig.String(), "connections", n)
			forced = true
		case req := <-r.reqs:
			waiters = whileStopping(req, waiters, func() *Status { return r.snapshot("draining") })
		}
		if forced {
			r.track.closeAll()
			break
		}
	}
	for _, sv := range r.served {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := sv.srv.Shutdown(ctx); err != nil {
			sv.srv.Close()
		}
		cancel()
	}
	r.log.Info("graceful: drained", "pid", os.Getpid(), "took", time.Since(start).Round(time.Millisecond))
	return waiters
}
