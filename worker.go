package graceful

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"time"
)

// A worker of a cluster runs the same loop as a single-mode process
// (runner.loop); what differs is that its master decides its life. It runs
// its boot hooks, reports ready, serves once told to go, sends heartbeats
// in every state, and drains when the master says so or goes away. Signals
// are left to the master.

// masterLink is a worker's end of the control socket to its master.
type masterLink struct {
	ctrl   *os.File
	msgs   chan message // the master's orders; closed when it goes away
	ticker *time.Ticker // heartbeats
}

// runWorker serves as a worker of the master that started this process.
func (r *runner) runWorker() error {
	d := r.inh.desc
	r.log = r.log.With("worker", d.WorkerID, "gen", d.Gen)
	r.s.mu.Lock()
	boot := append([]func(){}, r.s.bootHooks...)
	r.s.mu.Unlock()
	for i, f := range boot {
		if err := callHook(f); err != nil {
			return fmt.Errorf("graceful: OnWorkerBoot hook %d: %w", i, err)
		}
	}
	ctrl, br, _, err := r.handshake()
	if err != nil {
		return err
	}
	l := &masterLink{ctrl: ctrl, msgs: make(chan message), ticker: time.NewTicker(time.Duration(d.Heartbeat) * time.Millisecond)}
	go l.read(br)
	r.link = l
	r.hooks = []*[]func(){&r.s.workerHooks}
	// As a successor does (runner.start): a worker whose service's Serve
	// returns at once fails before it says it serves, so that a phase
	// keeps the worker it was to replace.
	if err := r.serveServicesFirst(); err != nil {
		return err
	}
	r.serve()
	ctrl.Write([]byte(message{kind: msgServing}.String() + "\n")) // if it fails, the master is gone; read says so
	r.handOffHello()
	return r.loop()
}

// read passes the master's orders on until its end closes.
func (l *masterLink) read(br *bufio.Reader) {
	defer close(l.msgs)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if m, err := parseMessage(line); err == nil {
			l.msgs <- m
		}
	}
}

func (l *masterLink) orders() <-chan message {
	if l == nil {
		return nil
	}
	return l.msgs
}

func (l *masterLink) beats() <-chan time.Time {
	if l == nil {
		return nil
	}
	return l.ticker.C
}

// beat sends a heartbeat with the worker's request counts, then one line
// with the counts of each service (a master of an older release ignores
// those).
func (l *masterLink) beat(r *runner) {
	var b strings.Builder
	b.WriteString(message{kind: msgBeat, inflight: r.inflight.Load(), total: r.total.Load()}.String() + "\n")
	for i, svc := range r.services() {
		b.WriteString(message{kind: msgSvcBeat, idx: i, inflight: svc.inflight.Load(), total: svc.total.Load()}.String() + "\n")
	}
	l.ctrl.Write([]byte(b.String())) // if it fails, the master is gone; read says so
}

// close sends a last heartbeat, so that the master counts every request,
// and closes the link.
func (l *masterLink) close(r *runner) {
	if l == nil {
		return
	}
	l.ticker.Stop()
	l.beat(r)
	l.ctrl.Close()
}

// order carries out the master's order m; ok false says the master went
// away.
func (r *runner) order(m message, ok bool) {
	if !ok {
		r.link.msgs = nil
		r.log.Warn("graceful: master gone; draining", "master", r.inh.desc.PPID)
	}
	switch {
	case ok && m.kind == msgStop:
		// The master stops for good: not ready from now, serving on for
		// ShutdownDelay.
		r.stop("the master is stopping", false)
	case r.state == stateDraining:
	case ok && m.kind == msgReplace:
		r.log.Info("graceful: worker draining", "pid", os.Getpid(), "replaced", true)
		r.hooks = []*[]func(){&r.s.hooks, &r.s.workerHooks}
		r.hand.replace = true // hand connections to the replacement (handoff_proc.go)
		r.drainNow()
	case !ok || m.kind == msgDrain:
		r.log.Info("graceful: worker draining", "pid", os.Getpid(), "replaced", false)
		r.drainNow()
	}
}
