package graceful

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"time"
)

// The master of a cluster holds the listening sockets and supervises the
// workers; it serves nothing itself. Its loop (master.loop) owns every
// field of master: the workers, a phase under way (phased.go), a hot
// restart of the whole tree (restart.go), and the stop.

// A worker's life as the master sees it.
type wstate int

const (
	wBooting  wstate = iota // started, not ready
	wReady                  // serving (or ready and waiting for go)
	wDraining               // told to drain
)

func (s wstate) String() string {
	return [...]string{wBooting: "booting", wReady: "ready", wDraining: "draining"}[s]
}

// worker is the master's record of one worker process.
type worker struct {
	id, gen  int
	p        *successor
	state    wstate
	goSent   bool
	started  time.Time
	lastBeat time.Time
	drainAt  time.Time
	inflight int64      // as of the last heartbeat
	total    uint64     // as of the last heartbeat
	svcs     []svcCount // each service's counts, as of the last heartbeat
}

// svcCount is a service's counts in a worker.
type svcCount struct {
	inflight int64
	total    uint64
}

type evKind int

const (
	evReady evKind = iota
	evBootFailed
	evBeat
	evSvcBeat
	evServing
	evExit
)

type masterEvent struct {
	w        *worker
	kind     evKind
	err      error
	inflight int64  // evBeat, evSvcBeat
	total    uint64 // evBeat, evSvcBeat
	idx      int    // evSvcBeat
}

// How a master's run ends.
type stopKind int

const (
	notStopping  stopKind = iota
	stopFinal             // for good: workers get ShutdownDelay, files are removed
	stopReplaced          // a new master took over: hooks run, files stay
	stopAbandon           // a new master whose workers could not boot: files stay
)

type master struct {
	r        *runner
	n        int     // workers wanted
	gen      int     // the generation of the last completed phase
	begun    int     // phases begun: the generation of the next is begun+1
	rel      release // what respawned and added workers run: the last completed phase's
	slots    map[int]*worker
	draining map[*worker]bool
	events   chan masterEvent
	crashes  map[int]int
	respawn  map[int]time.Time
	phase    *phase
	hot      hotRestart
	canGo    bool     // workers may accept: false in a new master until its predecessor says go
	booted   bool     // every slot has had a ready worker
	retired  uint64   // requests served by workers that have exited
	svcDone  []uint64 // each service's work done by workers that have exited

	stopping stopKind
	stops    int         // stop signals since the stop began
	limit    *time.Timer // the stop's bound
	killed   bool
}

// runMaster runs the master of a cluster until it is replaced or stopped.
func (r *runner) runMaster() error {
	rel, err := r.resolveRelease(true)
	if err != nil {
		return fmt.Errorf("graceful: starting workers: %w", err)
	}
	m := &master{
		r: r, n: r.s.Workers, rel: rel,
		slots:    map[int]*worker{},
		draining: map[*worker]bool{},
		events:   make(chan masterEvent, 16),
		crashes:  map[int]int{},
		respawn:  map[int]time.Time{},
		canGo:    r.inh.ctrl == nil,
		hot:      hotRestart{r: r},
	}
	defer func() { m.rel.close() }() // the release pinned last
	if m.canGo {
		if _, err := r.takeOver(); err != nil {
			return err
		}
	}
	r.log.Info("graceful: master starting workers", "pid", os.Getpid(), "workers", m.n, "addrs", r.addrs(), "exe", rel.exe)
	for id := 0; id < m.n; id++ {
		m.slots[id] = m.start(id, m.gen, m.rel)
	}
	return m.loop()
}

// loop is the master's state machine.
func (m *master) loop() error {
	r := m.r
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for {
		if m.stopping != notStopping && m.live() == 0 {
			return m.end()
		}
		select {
		case ev := <-m.events:
			m.event(ev)
		case now := <-ticker.C:
			m.tick(now)
		case <-r.notify.watchdog():
			r.notify.ping()
		case sig := <-r.sigs:
			m.signal(sig)
		case req := <-r.reqs:
			m.request(req)
		case <-r.ctxDone:
			r.ctxDone = nil
			m.stop(stopFinal, "context done")
		case err := <-m.hot.result():
			succ := m.hot.settle(err)
			held := m.hot.heldSignal()
			if succ != nil {
				r.log.Info("graceful: handed over; draining workers", "pid", os.Getpid(), "successor", succ.pid())
				r.retired = succ
				r.hooks = append(r.hooks, &r.s.hooks)
				m.hot.answer(nil)
				m.stop(stopReplaced, "handed over")
			} else if held != "" {
				m.stop(stopFinal, held) // the restart failed: stop as asked
			}
		case <-timerC(m.limit):
			r.log.Error("graceful: workers still draining; killing them", "workers", len(m.draining))
			m.kill()
		}
	}
}

// signal handles a signal in the state it finds.
func (m *master) signal(sig os.Signal) {
	switch sig {
	case sigRestart:
		m.restart(sig.String(), nil)
	case sigPhased:
		m.phased(sig.String(), nil)
	case sigMore:
		m.resize(+1)
	case sigFewer:
		m.resize(-1)
	default:
		m.stops++
		switch {
		case m.stopping == notStopping && m.hot.hold(sig.String()):
			m.stops--
		case m.stopping == notStopping:
			m.stop(stopFinal, sig.String())
		case m.stops >= 2 && !m.killed:
			m.r.log.Warn("graceful: second stop signal; killing the workers", "signal", sig.String())
			m.kill()
		default:
			m.r.log.Warn("graceful: stop signal while the workers drain: they finish; send it again to cut it short", "signal", sig.String())
		}
	}
}

// request answers a call or control request in the state it finds.
func (m *master) request(req request) {
	switch req.kind {
	case reqStatus:
		req.status <- m.status()
	case reqShutdown, reqClose:
		m.r.waiters = append(m.r.waiters, req.done)
		if m.stopping == notStopping {
			m.stop(stopFinal, "Shutdown called")
		}
		if req.kind == reqClose && !m.killed {
			m.kill()
			m.hot.kill()
		}
	case reqRestart:
		m.restart("Restart", req.done)
	case reqPhased:
		m.phased("PhasedRestart", req.done)
	case reqResize:
		req.done <- m.resize(req.delta)
	}
}

func (m *master) restart(by string, done chan error) {
	switch {
	case m.stopping != notStopping:
		m.r.log.Warn("graceful: restart ignored: stopping", "by", by)
		answer(done, ErrDraining)
	case m.phase != nil:
		m.r.log.Warn("graceful: restart ignored: a phased restart is in progress", "by", by)
		answer(done, errPhaseInProgress)
	default:
		m.hot.begin(by, done)
	}
}

func (m *master) phased(by string, done chan error) {
	switch {
	case m.stopping != notStopping:
		m.r.log.Warn("graceful: phased restart ignored: stopping", "by", by)
		answer(done, ErrDraining)
	case m.hot.succ != nil:
		m.r.log.Warn("graceful: phased restart ignored: a restart is in progress", "by", by)
		answer(done, ErrRestartInProgress)
	default:
		m.r.log.Info("graceful: phased restart requested", "by", by)
		m.startPhase(done)
	}
}

// start boots a worker for slot id.
func (m *master) start(id, gen int, rel release) *worker {
	w := &worker{id: id, gen: gen, started: time.Now()}
	spec := &inheritDesc{WorkerID: id, Gen: gen, Heartbeat: int(m.r.s.heartbeat() / time.Millisecond)}
	p, err := m.r.spawnFn(spawnSpec{rel: rel, timeout: m.r.s.workerBootTimeout(), worker: spec})
	if err != nil {
		go func() { m.events <- masterEvent{w: w, kind: evBootFailed, err: err} }()
		return w
	}
	w.p = p
	m.r.log.Info("graceful: worker booting", "worker", id, "gen", gen, "pid", p.pid())
	go func() {
		if err := <-p.result; err != nil {
			m.events <- masterEvent{w: w, kind: evBootFailed, err: err}
			return
		}
		m.events <- masterEvent{w: w, kind: evReady}
		beats := make(chan struct{})
		go m.readBeats(w, beats)
		<-p.exited
		// Its last heartbeat, with its final request counts, may still be
		// in the socket: read it before reporting the exit.
		select {
		case <-beats:
		case <-time.After(time.Second):
		}
		p.ctrl.Close()
		p.ho.close()
		<-beats
		m.events <- masterEvent{w: w, kind: evExit, err: p.err}
	}()
	return w
}

// readBeats passes on a worker's heartbeats until its end of the control
// socket closes, then closes done. A worker sends them once told to go.
func (m *master) readBeats(w *worker, done chan struct{}) {
	defer close(done)
	for {
		line, err := w.p.br.ReadString('\n')
		if err != nil {
			return
		}
		switch b, err := parseMessage(line); {
		case err != nil:
		case b.kind == msgBeat:
			m.events <- masterEvent{w: w, kind: evBeat, inflight: b.inflight, total: b.total}
		case b.kind == msgSvcBeat:
			m.events <- masterEvent{w: w, kind: evSvcBeat, idx: b.idx, inflight: b.inflight, total: b.total}
		case b.kind == msgServing:
			m.events <- masterEvent{w: w, kind: evServing}
		}
	}
}

func (w *worker) pid() int {
	if w.p == nil {
		return 0
	}
	return w.p.pid()
}

// sendGo lets a ready worker accept.
func (m *master) sendGo(w *worker) {
	w.goSent = true
	w.lastBeat = time.Now()
	w.p.tell(msgGo) // if it fails, the worker is exiting; its exit event follows
}

// drain tells a worker to drain with the order given.
func (m *master) drain(w *worker, order msgKind) {
	if w.state == wDraining {
		return
	}
	if m.slots[w.id] == w {
		delete(m.slots, w.id)
	}
	w.state, w.drainAt = wDraining, time.Now()
	m.draining[w] = true
	if w.p == nil {
		return
	}
	if !w.goSent {
		// Never served: nothing to drain.
		w.p.abort()
		return
	}
	m.noRelay(w) // before the order: handoff_proc.go
	w.p.tell(order)
}

func (m *master) live() int {
	n := len(m.slots) + len(m.draining)
	if m.phase != nil && m.phase.cur != nil {
		n++
	}
	return n
}

func (m *master) known(w *worker) bool {
	return m.slots[w.id] == w || m.draining[w] || (m.phase != nil && m.phase.cur == w)
}

// backoff schedules a new worker for slot id after one failed, waiting
// longer the more often the slot failed quickly, so that a crash loop does
// not spin a core.
func (m *master) backoff(w *worker) {
	if time.Since(w.started) > 30*time.Second {
		m.crashes[w.id] = 0
	}
	m.crashes[w.id]++
	delay := time.Duration(0)
	if k := m.crashes[w.id]; k > 1 {
		delay = min(250*time.Millisecond<<min(k-2, 10), 10*time.Second)
	}
	m.respawn[w.id] = time.Now().Add(delay)
	m.r.log.Info("graceful: worker will be replaced", "worker", w.id, "in", delay)
}

// event handles what a worker's goroutines report.
func (m *master) event(ev masterEvent) {
	w, log := ev.w, m.r.log
	if !m.known(w) {
		return
	}
	switch ev.kind {
	case evBeat:
		w.lastBeat = time.Now()
		w.inflight, w.total = ev.inflight, ev.total
		m.phaseServing(w) // a worker of an older release says "serving" by its first heartbeat
	case evServing:
		m.phaseServing(w)
	case evSvcBeat:
		if ev.idx < len(m.r.services()) {
			for len(w.svcs) <= ev.idx {
				w.svcs = append(w.svcs, svcCount{})
			}
			w.svcs[ev.idx] = svcCount{ev.inflight, ev.total}
		}
	case evReady:
		if w.state == wDraining || m.stopping != notStopping {
			m.drain(w, msgDrain)
			w.p.abort()
			return
		}
		w.state = wReady
		log.Info("graceful: worker ready", "worker", w.id, "gen", w.gen, "pid", w.pid(), "took", time.Since(w.started).Round(time.Millisecond))
		if m.phase != nil && m.phase.cur == w {
			if m.canGo {
				// The worker it replaces drains once it serves
				// (phaseServing).
				m.sendGo(w)
				return
			}
			m.phaseReady(w)
			return
		}
		if m.canGo {
			m.sendGo(w)
		}
		if !m.booted && len(m.slots) == m.n && m.allReady() {
			m.booted = true
			if !m.canGo {
				m.confirm()
				return
			}
			m.r.notify.ready("")
			m.r.stopGraceParent()
		}
	case evBootFailed:
		log.Error("graceful: worker failed to boot", "worker", w.id, "gen", w.gen, "pid", w.pid(), "err", ev.err)
		if m.phase != nil && m.phase.cur == w {
			m.phase.cur = nil
			m.endPhase(fmt.Errorf("graceful: phased restart stopped: the new worker %d failed to boot: %w; the old workers keep serving", w.id, ev.err))
			return
		}
		delete(m.draining, w)
		if m.slots[w.id] == w {
			delete(m.slots, w.id)
			if !m.canGo {
				m.r.fail = fmt.Errorf("graceful: worker %d failed to boot: %w", w.id, ev.err)
				log.Error("graceful: new master could not start its workers", "err", m.r.fail)
				m.stop(stopAbandon, "workers failed to boot")
				return
			}
			if m.stopping == notStopping {
				m.backoff(w)
			}
		}
	case evExit:
		m.retired += w.total
		for i, c := range w.svcs {
			for len(m.svcDone) <= i {
				m.svcDone = append(m.svcDone, 0)
			}
			m.svcDone[i] += c.total
		}
		if m.draining[w] {
			delete(m.draining, w)
			m.r.counts.drain = time.Since(w.drainAt)
			log.Info("graceful: worker exited", "worker", w.id, "gen", w.gen, "pid", w.pid(), "status", exitStatus(ev.err))
			return
		}
		if m.phase != nil && m.phase.cur == w {
			m.phase.cur = nil
			m.endPhase(fmt.Errorf("graceful: phased restart stopped: the new worker %d exited before it served (%s); the old workers keep serving", w.id, exitStatus(ev.err)))
			return
		}
		if m.slots[w.id] == w {
			delete(m.slots, w.id)
			log.Error("graceful: worker died; replacing it", "worker", w.id, "gen", w.gen, "pid", w.pid(), "status", exitStatus(ev.err))
			m.backoff(w)
		}
	}
}

func (m *master) allReady() bool {
	for _, w := range m.slots {
		if w.state != wReady {
			return false
		}
	}
	return true
}

// confirm is a new master's hand-over: its workers are ready, so it tells
// its predecessor, and once told to go lets its workers accept.
func (m *master) confirm() {
	r := m.r
	serving, err := r.takeOver()
	if err != nil {
		m.r.fail = err
		m.stop(stopAbandon, "the hand-over was withdrawn")
		return
	}
	m.canGo = true
	for _, w := range m.slots {
		if w.state == wReady && !w.goSent {
			m.sendGo(w)
		}
	}
	serving()
	r.log.Info("graceful: master serving", "pid", os.Getpid(), "workers", m.n)
	r.notify.ready("")
}

// tick checks heartbeats, drain deadlines and pending respawns.
func (m *master) tick(now time.Time) {
	s := m.r.s
	for _, w := range m.slots {
		if w.state == wReady && w.goSent && now.Sub(w.lastBeat) > s.workerTimeout() {
			m.r.log.Error("graceful: worker missed its heartbeat; killing it", "worker", w.id, "pid", w.pid(), "silent", now.Sub(w.lastBeat).Round(time.Millisecond))
			w.p.signal(os.Kill)
			w.lastBeat = now // its exit event follows
		}
	}
	m.phaseSilent(now) // the phase's new worker, told to go, not yet in a slot (phased.go)
	limit := max(s.ShutdownDelay, 0) + durationOr(s.ShutdownTimeout, DefaultShutdownTimeout) + 5*time.Second
	for w := range m.draining {
		if w.p != nil && now.Sub(w.drainAt) > limit {
			m.r.log.Error("graceful: worker still draining; killing it", "worker", w.id, "pid", w.pid())
			w.p.signal(os.Kill)
			w.drainAt = now
		}
	}
	if m.stopping != notStopping {
		return
	}
	for id, at := range m.respawn {
		if now.Before(at) {
			continue
		}
		delete(m.respawn, id)
		if id < m.n && m.slots[id] == nil {
			m.slots[id] = m.start(id, m.gen, m.rel)
			m.r.counts.respawns++
		}
	}
	m.advance()
}

// resize adds or removes a worker (SIGTTIN, SIGTTOU).
func (m *master) resize(delta int) error {
	if m.stopping != notStopping {
		m.r.log.Warn("graceful: workers not changed: stopping")
		return ErrDraining
	}
	if m.n+delta < 1 {
		m.r.log.Warn("graceful: at least one worker stays", "workers", m.n)
		return errMinWorkers
	}
	m.n += delta
	m.r.log.Info("graceful: workers", "workers", m.n)
	if delta > 0 {
		m.slots[m.n-1] = m.start(m.n-1, m.gen, m.rel)
		return nil
	}
	if w := m.slots[m.n]; w != nil {
		m.drain(w, msgDrain)
	}
	delete(m.respawn, m.n)
	if p := m.phase; p != nil && p.cur != nil && p.cur.id >= m.n {
		// The phase's new worker boots for the slot that went away: once
		// ready it would serve outside every slot, unsupervised.
		m.dropCur()
		m.advance()
	}
	return nil
}

// stop begins the end of the master's run: every worker drains, and the
// loop ends once all have exited.
func (m *master) stop(kind stopKind, why string) {
	if m.stopping != notStopping {
		return
	}
	r := m.r
	m.stopping = kind
	order := msgDrain
	switch kind {
	case stopFinal:
		m.hot.abort(why)
		r.log.Info("graceful: shutting down", "reason", why, "pid", os.Getpid())
		r.stopping.Store(true)
		r.notify.stopping()
		order = msgStop
	case stopReplaced:
		order = msgReplace
	}
	if m.phase != nil {
		m.endPhase(errors.New("graceful: phased restart stopped: the master is shutting down"))
	}
	for _, w := range m.slots {
		m.drain(w, order)
	}
	// Its own copies of the sockets, the control socket's among them:
	// from now on, whoever connects reaches the new master, or no one.
	r.closeListeners()
	m.respawn = map[int]time.Time{}
	m.limit = time.NewTimer(max(r.s.ShutdownDelay, 0) + durationOr(r.s.ShutdownTimeout, DefaultShutdownTimeout) + 5*time.Second)
}

// kill ends the workers at once.
func (m *master) kill() {
	m.killed = true
	for w := range m.draining {
		if w.p != nil {
			w.p.signal(os.Kill)
		}
	}
}

// end finishes the run once every worker has exited.
func (m *master) end() error {
	m.limit.Stop()
	m.hot.reap(max(m.r.s.ShutdownDelay, 0) + durationOr(m.r.s.ShutdownTimeout, DefaultShutdownTimeout) + 5*time.Second)
	if m.stopping == stopFinal {
		m.r.removeSocketFiles()
	}
	return m.r.end()
}

// status is the master's Status, with its workers.
func (m *master) status() *Status {
	state := "serving"
	switch {
	case m.stopping != notStopping:
		state = "draining"
	case m.phase != nil:
		state = "phased-restart"
	case m.hot.succ != nil:
		state = "restarting"
	}
	st := m.r.snapshot(state)
	st.Mode = "cluster"
	st.Generation = m.begun
	st.WorkersWanted = m.n
	st.RequestsTotal = m.retired
	for i, n := range m.svcDone {
		if i < len(st.Services) {
			st.Services[i].Total += n
		}
	}
	add := func(w *worker) {
		if w.p == nil {
			return
		}
		st.Workers = append(st.Workers, WorkerStatus{
			ID: w.id, PID: w.pid(), Generation: w.gen, State: w.state.String(), WorkingDir: w.p.rel.dir,
			Started: w.started, LastCheckin: w.lastBeat,
			RequestsInFlight: w.inflight, RequestsTotal: w.total,
		})
		st.RequestsInFlight += w.inflight
		st.RequestsTotal += w.total
		for i, c := range w.svcs {
			if i < len(st.Services) {
				st.Services[i].InFlight += c.inflight
				st.Services[i].Total += c.total
			}
		}
	}
	for _, w := range m.slots {
		add(w)
	}
	if m.phase != nil && m.phase.cur != nil {
		add(m.phase.cur)
	}
	for w := range m.draining {
		add(w)
	}
	sort.Slice(st.Workers, func(i, j int) bool {
		a, b := st.Workers[i], st.Workers[j]
		return a.ID < b.ID || a.ID == b.ID && a.Generation < b.Generation
	})
	return st
}
