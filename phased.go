package graceful

import (
	"context"
	"fmt"
	"os"
	"time"
)

// PhasedRestart replaces the workers of a cluster one at a time, as SIGUSR1
// does, with the program found now (through Directory if set): for each
// worker, a new one is started and, once it serves, the old one drains.
// It returns nil when every worker has been replaced, or an error, with the
// old workers still serving, when a new worker failed to boot.
// It returns ErrNotMaster outside a cluster's master.
func (s *Server) PhasedRestart() error {
	r := s.runner()
	if r == nil {
		return ErrNotServing
	}
	return r.call(context.Background(), reqPhased)
}

// phase is a phased restart under way. It is a target, not a script: the
// master brings every slot to generation gen, running rel, one slot at a
// time, each new worker serving before the old one of its slot drains, so
// capacity never drops. A slot left empty by a crash is simply filled with
// the new generation.
type phase struct {
	gen     int
	rel     release
	cur     *worker // the new worker booting
	waiters []chan error
	started time.Time
}

// startPhase begins a phased restart with the release found now; a
// request that arrives during a phase joins it.
func (m *master) startPhase(done chan error) {
	r := m.r
	if m.phase != nil {
		if done != nil {
			m.phase.waiters = append(m.phase.waiters, done)
		}
		r.log.Warn("graceful: phased restart already in progress", "gen", m.phase.gen)
		return
	}
	r.began("phased")
	r.notify.reloading()
	rel, err := r.resolveRelease(true)
	if err != nil {
		err = fmt.Errorf("graceful: phased restart: %w; the workers keep serving", err)
		r.log.Error("graceful: phased restart failed", "err", err)
		r.ended(err)
		r.notify.ready("phased restart failed: " + err.Error())
		answer(done, err)
		return
	}
	m.begun++
	r.hand.handed.Store(0) // this phase's hand-off counts (handoff_proc.go)
	r.hand.closed.Store(0)
	m.phase = &phase{gen: m.begun, rel: rel, started: time.Now()}
	if done != nil {
		m.phase.waiters = append(m.phase.waiters, done)
	}
	r.log.Info("graceful: phased restart", "gen", m.phase.gen, "exe", rel.exe, "workers", m.n)
	m.advance()
}

// advance reconciles the workers with the phase: unless a new worker is
// booting, it starts one for the lowest slot that is empty or whose ready
// worker is older than the phase; once every slot runs the phase's
// generation, the phase is complete.
func (m *master) advance() {
	p := m.phase
	if p == nil || p.cur != nil {
		return
	}
	pending := false
	for id := 0; id < m.n; id++ {
		w := m.slots[id]
		switch {
		case w == nil || w.state == wReady && w.gen < p.gen:
			delete(m.respawn, id)
			p.cur = m.start(id, p.gen, p.rel)
			return
		case w.gen < p.gen:
			pending = true // booting: replace it once ready
		}
	}
	if pending {
		return
	}
	m.rel.close()
	m.gen, m.rel = p.gen, p.rel
	m.r.log.Info("graceful: phased restart complete", "gen", p.gen, "took", time.Since(p.started).Round(time.Millisecond))
	m.endPhase(nil)
}

// phaseServing is told that w serves (it said so, or sent a heartbeat):
// if it is the phase's new worker, it takes its slot.
func (m *master) phaseServing(w *worker) {
	if m.phase != nil && m.phase.cur == w && w.state == wReady && w.goSent {
		m.phaseReady(w)
	}
}

// phaseSilent kills the phase's new worker if, told to go, it has said
// nothing (neither "serving" nor a heartbeat) for WorkerTimeout: it is not
// in a slot yet, so tick's heartbeat check does not see it, and the phase
// would wait on it for ever. Its exit stops the phase; the old workers
// serve on.
func (m *master) phaseSilent(now time.Time) {
	if m.phase == nil {
		return
	}
	w := m.phase.cur
	if w == nil || w.p == nil || w.state != wReady || !w.goSent || now.Sub(w.lastBeat) <= m.r.s.workerTimeout() {
		return
	}
	m.r.log.Error("graceful: the phase's new worker said nothing once told to go; killing it", "worker", w.id, "pid", w.pid(), "silent", now.Sub(w.lastBeat).Round(time.Millisecond))
	w.p.signal(os.Kill)
	w.lastBeat = now // its exit event follows
}

// phaseReady puts the phase's new worker in its slot, drains the one it
// replaces, and moves on.
func (m *master) phaseReady(w *worker) {
	old := m.slots[w.id]
	m.slots[w.id] = w
	m.phase.cur = nil
	m.crashes[w.id] = 0
	if m.canGo && !w.goSent {
		m.sendGo(w)
	}
	if old != nil {
		m.relayHandOff(old, w) // its connections go to w (handoff_proc.go)
		m.drain(old, msgReplace)
	}
	m.advance()
}

// endPhase reports the phase's outcome to those waiting on it.
func (m *master) endPhase(err error) {
	r := m.r
	if err != nil {
		r.log.Error("graceful: phased restart failed", "err", err)
	}
	r.ended(err)
	switch {
	case r.stopping.Load():
		// STOPPING=1 is said; nothing is ready again.
	case err != nil:
		r.notify.ready("phased restart failed: " + err.Error())
	default:
		r.notify.ready("")
	}
	for _, w := range m.phase.waiters {
		w <- err
	}
	m.dropCur()
	if err != nil {
		m.phase.rel.close() // never pinned
	}
	m.phase = nil
}

// dropCur ends the phase's new worker, if any, that will not take a slot:
// killed while it boots, as it has accepted nothing; drained once told to
// go, as it may have.
func (m *master) dropCur() {
	c := m.phase.cur
	m.phase.cur = nil
	switch {
	case c == nil || c.p == nil:
	case c.goSent:
		m.drain(c, msgDrain)
	default:
		c.p.abort()
	}
}
