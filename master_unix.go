//go:build unix

package graceful

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"sort"
	"syscall"
	"time"
)

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

type worker struct {
	id, gen  int
	p        *successor
	state    wstate
	goSent   bool
	started  time.Time
	lastBeat time.Time
	drainAt  time.Time
	inflight int64  // as of the last heartbeat
	total    uint64 // as of the last heartbeat
}

type evKind int

const (
	evReady evKind = iota
	evBootFailed
	evBeat
	evExit
)

type masterEvent struct {
	w        *worker
	kind     evKind
	err      error
	inflight int64  // evBeat
	total    uint64 // evBeat
}

// phase is a phased restart under way.
type phase struct {
	gen     int
	rel     release
	todo    []int   // slots still to replace
	cur     *worker // the new worker booting
	waiters []chan error
	started time.Time
}

// master supervises the workers. Its loop, in runMaster, is the only
// goroutine that touches its fields.
type master struct {
	r        *runner
	n        int // workers wanted
	gen      int
	rel      release // what respawned and added workers run: the last completed phase's
	slots    map[int]*worker
	draining map[*worker]bool
	events   chan masterEvent
	crashes  map[int]int
	respawn  map[int]time.Time
	phase    *phase
	canGo    bool   // workers may accept: false in a new master until its predecessor says go
	booted   bool   // every slot has had a ready worker
	retired  uint64 // requests served by workers that have exited
}

// runMaster runs the master of a cluster until it is replaced or stopped.
func (r *runner) runMaster() error {
	s := r.s
	rel, err := s.resolveRelease(r.exeRel, true)
	if err != nil {
		return fmt.Errorf("graceful: starting workers: %w", err)
	}
	m := &master{
		r: r, n: s.Workers, rel: rel,
		slots:    map[int]*worker{},
		draining: map[*worker]bool{},
		events:   make(chan masterEvent, 16),
		crashes:  map[int]int{},
		respawn:  map[int]time.Time{},
		canGo:    r.inh.ctrl == nil,
	}
	if m.canGo && s.PIDFile != "" {
		if err := writePIDFile(s.PIDFile, os.Getpid()); err != nil {
			return err
		}
	}
	r.log.Info("graceful: master starting workers", "pid", os.Getpid(), "workers", m.n, "addrs", r.addrs(), "exe", rel.exe)
	for id := 0; id < m.n; id++ {
		m.slots[id] = m.start(id, m.gen, m.rel)
	}
	return m.loop()
}

// start boots a worker for slot id.
func (m *master) start(id, gen int, rel release) *worker {
	w := &worker{id: id, gen: gen, started: time.Now()}
	spec := &inheritDesc{WorkerID: id, Gen: gen, Heartbeat: int(m.r.s.heartbeat() / time.Millisecond)}
	p, err := m.r.spawn(spawnSpec{rel: rel, timeout: m.r.s.workerBootTimeout(), worker: spec})
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
		ev := masterEvent{w: w, kind: evBeat}
		if _, err := fmt.Sscanf(line, "beat %d %d\n", &ev.inflight, &ev.total); err == nil {
			m.events <- ev
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
	w.p.tell("go") // if it fails, the worker is exiting; its exit event follows
}

// The master's orders to a ready worker.
const (
	msgDrain   = "drain"         // drain and exit
	msgReplace = "drain restart" // drain, run the OnRestart hooks, exit
	msgStop    = "stop"          // not ready; ShutdownDelay; drain and exit
)

// drain tells a worker to drain with msg.
func (m *master) drain(w *worker, msg string) {
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
	w.p.tell(msg)
}

func (m *master) live() int { return len(m.slots) + len(m.draining) }

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

// event handles what a worker's goroutines report. It returns an error
// only when a new master's first workers cannot boot.
func (m *master) event(ev masterEvent) error {
	w, log := ev.w, m.r.log
	if !m.known(w) {
		return nil
	}
	switch ev.kind {
	case evBeat:
		w.lastBeat = time.Now()
		w.inflight, w.total = ev.inflight, ev.total
	case evReady:
		if w.state == wDraining {
			w.p.abort()
			return nil
		}
		w.state = wReady
		log.Info("graceful: worker ready", "worker", w.id, "gen", w.gen, "pid", w.pid(), "took", time.Since(w.started).Round(time.Millisecond))
		if m.phase != nil && m.phase.cur == w {
			old := m.slots[w.id]
			m.slots[w.id] = w
			m.phase.cur = nil
			if m.canGo {
				m.sendGo(w)
			}
			if old != nil {
				m.drain(old, msgReplace)
			}
			m.advance()
			return nil
		}
		if m.canGo {
			m.sendGo(w)
		}
		if !m.booted && len(m.slots) == m.n && m.allReady() {
			m.booted = true
			if !m.canGo {
				return m.confirm()
			}
			m.r.notify.ready("")
			m.r.stopGraceParent()
		}
	case evBootFailed:
		log.Error("graceful: worker failed to boot", "worker", w.id, "gen", w.gen, "pid", w.pid(), "err", ev.err)
		if m.phase != nil && m.phase.cur == w {
			m.phase.cur = nil
			m.endPhase(fmt.Errorf("graceful: phased restart stopped: the new worker %d failed to boot: %w; the old workers keep serving", w.id, ev.err))
			return nil
		}
		delete(m.draining, w)
		if m.slots[w.id] == w {
			delete(m.slots, w.id)
			if !m.canGo {
				return fmt.Errorf("graceful: worker %d failed to boot: %w", w.id, ev.err)
			}
			m.backoff(w)
		}
	case evExit:
		m.retired += w.total
		if m.draining[w] {
			delete(m.draining, w)
			log.Info("graceful: worker exited", "worker", w.id, "gen", w.gen, "pid", w.pid(), "status", exitStatus(ev.err))
			return nil
		}
		if m.slots[w.id] == w {
			delete(m.slots, w.id)
			log.Error("graceful: worker died; replacing it", "worker", w.id, "gen", w.gen, "pid", w.pid(), "status", exitStatus(ev.err))
			m.backoff(w)
		}
	}
	return nil
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
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
func (m *master) confirm() error {
	if err := m.r.confirmReady(); err != nil {
		return err
	}
	m.canGo = true
	for _, w := range m.slots {
		if w.state == wReady && !w.goSent {
			m.sendGo(w)
		}
	}
	m.r.log.Info("graceful: master serving", "pid", os.Getpid(), "workers", m.n)
	m.r.notify.ready("")
	return nil
}

// tick checks heartbeats, drain deadlines and pending respawns.
func (m *master) tick(now time.Time) {
	s := m.r.s
	for _, w := range m.slots {
		if w.state == wReady && w.goSent && now.Sub(w.lastBeat) > s.workerTimeout() {
			m.r.log.Error("graceful: worker missed its heartbeat; killing it", "worker", w.id, "pid", w.pid(), "silent", now.Sub(w.lastBeat).Round(time.Millisecond))
			syscall.Kill(w.pid(), syscall.SIGKILL)
			w.lastBeat = now // its exit event follows
		}
	}
	limit := durationOr(s.ShutdownTimeout, DefaultShutdownTimeout) + 5*time.Second
	for w := range m.draining {
		if w.p != nil && now.Sub(w.drainAt) > limit {
			m.r.log.Error("graceful: worker still draining; killing it", "worker", w.id, "pid", w.pid())
			syscall.Kill(w.pid(), syscall.SIGKILL)
			w.drainAt = now
		}
	}
	for id, at := range m.respawn {
		if now.Before(at) {
			continue
		}
		delete(m.respawn, id)
		if id < m.n && m.slots[id] == nil && !(m.phase != nil && m.phase.cur != nil && m.phase.cur.id == id) {
			m.slots[id] = m.start(id, m.gen, m.rel)
		}
	}
}

// startPhase begins a phased restart with the release found now.
func (m *master) startPhase(waiter chan error) {
	if m.phase != nil {
		if waiter != nil {
			m.phase.waiters = append(m.phase.waiters, waiter)
		}
		m.r.log.Warn("graceful: phased restart already in progress")
		return
	}
	m.r.began("phased")
	m.r.notify.reloading()
	rel, err := m.r.s.resolveRelease(m.r.exeRel, true)
	if err != nil {
		err = fmt.Errorf("graceful: phased restart: %w; the workers keep serving", err)
		m.r.log.Error(err.Error())
		m.r.ended(err)
		m.r.notify.ready("phased restart failed: " + err.Error())
		if waiter != nil {
			waiter <- err
		}
		return
	}
	m.gen++
	var todo []int
	for id := 0; id < m.n; id++ {
		todo = append(todo, id)
	}
	m.phase = &phase{gen: m.gen, rel: rel, todo: todo, started: time.Now()}
	if waiter != nil {
		m.phase.waiters = append(m.phase.waiters, waiter)
	}
	m.r.log.Info("graceful: phased restart", "gen", m.gen, "exe", rel.exe, "workers", m.n)
	m.advance()
}

// advance starts the next new worker of the phase, or completes it.
func (m *master) advance() {
	p := m.phase
	for len(p.todo) > 0 && p.todo[0] >= m.n {
		p.todo = p.todo[1:]
	}
	if len(p.todo) == 0 {
		m.rel = p.rel
		m.r.log.Info("graceful: phased restart complete", "gen", p.gen, "took", time.Since(p.started).Round(time.Millisecond))
		m.endPhase(nil)
		return
	}
	id := p.todo[0]
	p.todo = p.todo[1:]
	delete(m.respawn, id)
	p.cur = m.start(id, p.gen, p.rel)
}

func (m *master) endPhase(err error) {
	if err != nil {
		m.r.log.Error(err.Error())
	}
	m.r.ended(err)
	switch {
	case m.r.stopping.Load():
		// STOPPING=1 is said; nothing is ready again.
	case err != nil:
		m.r.notify.ready("phased restart failed: " + err.Error())
	default:
		m.r.notify.ready("")
	}
	for _, w := range m.phase.waiters {
		w <- err
	}
	if c := m.phase.cur; c != nil && c.p != nil {
		c.p.abort()
	}
	m.phase = nil
}

// resize adds or removes a worker (SIGTTIN, SIGTTOU).
func (m *master) resize(delta int) error {
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
	return nil
}

// status is the master's Status, with its workers.
func (m *master) status(state string) *Status {
	st := m.r.snapshot(state)
	st.Mode = "cluster"
	st.Generation = m.gen
	st.WorkersWanted = m.n
	st.RequestsTotal = m.retired
	add := func(w *worker) {
		st.Workers = append(st.Workers, WorkerStatus{
			ID: w.id, PID: w.pid(), Generation: w.gen, State: w.state.String(), WorkingDir: w.p.rel.dir,
			Started: w.started, LastCheckin: w.lastBeat,
			RequestsInFlight: w.inflight, RequestsTotal: w.total,
		})
		st.RequestsInFlight += w.inflight
		st.RequestsTotal += w.total
	}
	for _, w := range m.slots {
		if w.p != nil {
			add(w)
		}
	}
	if m.phase != nil && m.phase.cur != nil && m.phase.cur.p != nil {
		add(m.phase.cur)
	}
	for w := range m.draining {
		if w.p != nil {
			add(w)
		}
	}
	sort.Slice(st.Workers, func(i, j int) bool {
		a, b := st.Workers[i], st.Workers[j]
		return a.ID < b.ID || a.ID == b.ID && a.Generation < b.Generation
	})
	return st
}

// loop is the master's state machine.
func (m *master) loop() error {
	r := m.r
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	hot := &hotRestart{r: r}
	restart := func(by string, done chan error) {
		if m.phase != nil {
			r.log.Warn("graceful: restart ignored: a phased restart is in progress", "by", by)
			if done != nil {
				done <- errPhaseInProgress
			}
			return
		}
		hot.begin(by, done)
	}
	phased := func(by string, done chan error) {
		if hot.succ != nil {
			r.log.Warn("graceful: phased restart ignored: a restart is in progress", "by", by)
			if done != nil {
				done <- ErrRestartInProgress
			}
			return
		}
		m.startPhase(done)
	}
	for {
		select {
		case ev := <-m.events:
			if err := m.event(ev); err != nil {
				r.log.Error("graceful: new master could not start its workers", "err", err)
				m.stop(false, nil)
				return err
			}
		case now := <-ticker.C:
			m.tick(now)
		case <-r.notify.watchdog():
			r.notify.ping()
		case sig := <-r.sigs:
			switch sig {
			case syscall.SIGUSR2:
				restart(sig.String(), nil)
			case syscall.SIGUSR1:
				r.log.Info("graceful: phased restart requested", "signal", sig.String())
				phased(sig.String(), nil)
			case syscall.SIGTTIN:
				m.resize(+1)
			case syscall.SIGTTOU:
				m.resize(-1)
			default:
				hot.abort("received " + sig.String())
				r.log.Info("graceful: shutting down", "reason", sig.String(), "pid", os.Getpid())
				return m.stop(false, nil)
			}
		case req := <-r.reqs:
			switch req.kind {
			case reqRestart:
				restart("Restart", req.done)
			case reqPhased:
				phased("PhasedRestart", req.done)
			case reqResize:
				req.done <- m.resize(req.delta)
			case reqStatus:
				state := hot.state()
				if m.phase != nil {
					state = "phased-restart"
				}
				req.status <- m.status(state)
			case reqShutdown:
				hot.abort("Shutdown called")
				r.log.Info("graceful: shutting down", "reason", "Shutdown", "pid", os.Getpid())
				return m.stop(false, req.done)
			}
		case err := <-hot.result():
			if succ := hot.settle(err); succ != nil {
				r.log.Info("graceful: handed over; draining workers", "pid", os.Getpid(), "successor", succ.pid())
				err := m.stop(true, nil)
				succ.release()
				return err
			}
		}
	}
}

// stop drains every worker and waits for them to exit. replaced says a new
// master took over: the workers run their OnRestart hooks, and so does the
// master after them; the pidfile and socket files are left to the new
// master.
func (m *master) stop(replaced bool, done chan error) error {
	r := m.r
	if !replaced {
		r.stopping.Store(true)
		r.notify.stopping()
	}
	if m.phase != nil {
		m.endPhase(errors.New("graceful: phased restart stopped: the master is shutting down"))
	}
	msg := msgStop
	if replaced {
		msg = msgReplace
	}
	for _, w := range m.slots {
		m.drain(w, msg)
	}
	m.respawn = map[int]time.Time{}
	var waiters []chan error
	if done != nil {
		waiters = append(waiters, done)
	}
	limit := time.NewTimer(max(r.s.ShutdownDelay, 0) + durationOr(r.s.ShutdownTimeout, DefaultShutdownTimeout) + 5*time.Second)
	defer limit.Stop()
	killed := false
	kill := func() {
		killed = true
		for w := range m.draining {
			if w.p != nil {
				syscall.Kill(w.pid(), syscall.SIGKILL)
			}
		}
	}
	for m.live() > 0 {
		select {
		case ev := <-m.events:
			if ev.kind == evBootFailed || (ev.kind == evReady && m.draining[ev.w]) {
				if ev.kind == evReady {
					ev.w.p.abort()
				}
				delete(m.draining, ev.w)
				continue
			}
			m.event(ev)
		case <-limit.C:
			r.log.Error("graceful: workers still draining; killing them", "workers", len(m.draining))
			kill()
		case sig := <-r.sigs:
			if (sig == syscall.SIGTERM || sig == syscall.SIGINT) && !killed {
				r.log.Warn("graceful: second stop signal; killing the workers", "signal", sig.String())
				kill()
			}
		case req := <-r.reqs:
			waiters = whileStopping(req, waiters, func() *Status { return m.status("draining") })
		case <-r.notify.watchdog():
			r.notify.ping()
		}
	}
	r.closeListeners()
	if replaced {
		r.runServerHooks(&r.s.hooks)
		r.log.Info("graceful: master retired", "pid", os.Getpid())
	} else {
		r.removeSocketFiles()
		if r.s.PIDFile != "" {
			removePIDFile(r.s.PIDFile, os.Getpid())
		}
		r.log.Info("graceful: stopped", "pid", os.Getpid())
	}
	for _, w := range waiters {
		w <- nil
	}
	return http.ErrServerClosed
}
