package graceful

import (
	"os"
	"sync/atomic"
	"time"
)

// Connection hand-off between processes (issue 11), as the loops of each
// role use it; the socket and its datagrams are in handoff_wire.go.
//
// Hot restart (single mode): the successor says hello on its hand-off
// socket just before it tells its predecessor "serving". The predecessor,
// as it begins its drain, sees the hello and turns the tracker's hand-off
// on: each idle cleartext HTTP/1.1 keep-alive connection, and each busy
// one once its response is complete, is passed open to the successor,
// which serves it on. The drain is over once every connection is closed,
// handed and acked, or taken back.
//
// Phased restart (cluster): each worker says hello to its master once it
// serves. When a phase replaces a worker, the master, once the new worker
// has said hello, says hello to the old one, which hands its connections
// to the master; the master relays each batch to the new worker.
//
// A hot restart of a whole cluster keeps the drain: the new master's
// workers are not serving yet when the old ones drain.

// handOffState is a process's part in hand-off. Its fields are the loop's,
// but for the counts.
type handOffState struct {
	up      *hoLink // to the predecessor (single mode) or the master (a worker)
	down    *hoLink // the link this process's drain hands connections on
	replace bool    // a worker: the master ordered a drain to be replaced
	conns   int     // connections open when the drain began

	// The last restart's counts, as the process that took over (or a
	// master) learns them: connections handed, and closed instead.
	handed, closed atomic.Int64
}

// isMaster reports whether this run is a cluster's master.
func (r *runner) isMaster() bool { return !r.worker() && r.s.Workers > 0 && clusterSupported }

// handOffPair makes the hand-off socket for a child about to be spawned:
// nil, nil when connections are not to be passed to it.
func (r *runner) handOffPair(sp spawnSpec) (ours, theirs *os.File) {
	if r.s.NoHandOff || !restartSupported || (sp.worker == nil && r.isMaster()) {
		return nil, nil
	}
	ours, theirs, err := seqpacketPair()
	if err != nil {
		r.log.Warn("graceful: no hand-off socket; connections will be drained", "err", err)
		return nil, nil
	}
	return ours, theirs
}

// handOffHello is called once this process serves: if its parent passed
// a hand-off socket, it says hello on it, and adopts what comes.
func (r *runner) handOffHello() {
	if r.inh == nil || r.inh.ho == nil {
		return
	}
	f := r.inh.ho
	r.inh.ho = nil
	if r.s.NoHandOff || r.isMaster() {
		f.Close()
		return
	}
	peer := "predecessor"
	if r.worker() {
		peer = "master"
	}
	l := newHOLink(r, f, peer)
	if l == nil {
		return
	}
	r.hand.up = l
	if err := l.say("hello"); err != nil {
		return
	}
	if r.worker() {
		return
	}
	go func() {
		<-l.dead
		if n := l.adoptedN.Load(); n > 0 || l.peerDone.Load() {
			r.log.Info("graceful: connections adopted from the predecessor", "adopted", n, "predecessor_closed", l.peerClosed.Load())
		}
	}()
}

// handOffBegin is called as the drain begins, before anything is closed
// or responses are told "Connection: close": if a process adopts this
// one's connections, the tracker hands them to it from now on.
func (r *runner) handOffBegin() {
	r.hand.conns = r.track.count()
	var l *hoLink
	var wait time.Duration
	switch {
	case r.s.NoHandOff:
		return
	case r.retired != nil:
		// The successor said hello before it said "serving".
		l, wait = r.retired.ho, hoHelloWait
	case r.worker() && r.hand.replace:
		// The master says hello once the replacement has.
		l, wait = r.hand.up, hoReplaceWait
	}
	if l == nil {
		return
	}
	if err := handoffSupported(); err != nil {
		r.log.Warn("graceful: connection hand-off unavailable; draining the connections", "err", err)
		return
	}
	r.hand.down = l
	if l.waitHello(wait) {
		l.startSending()
		return
	}
	go func() {
		// A late hello: connections not yet closed are still handed.
		select {
		case <-l.hello:
			l.startSending()
		case <-l.dead:
		case <-l.none:
		case <-l.stopSend:
		}
	}()
}

// handOffSettled reports whether every connection taken from net/http for
// a hand-off is acked or taken back: until then the drain is not over.
func (r *runner) handOffSettled() bool { return r.hand.down.settled() }

// handOffEnd is called once the drain is over: it reports the counts to
// the peer and the log, and closes the links.
func (r *runner) handOffEnd() {
	if d := r.hand.down; d != nil && d.sending.Load() {
		handed := d.handedN.Load()
		closed := max(int64(r.hand.conns)-handed, 0)
		d.say("done %d %d", handed, closed)
		r.log.Info("graceful: connections handed over", "to", d.peer, "handed", handed, "taken_back", d.backN.Load(), "closed", closed)
	}
	r.hand.down.close()
	r.hand.up.close()
}

// fillHandOff adds the last restart's hand-off counts to a Status.
func (r *runner) fillHandOff(st *Status) {
	st.ConnsHanded = r.hand.handed.Load()
	st.ConnsClosed = r.hand.closed.Load()
	if r.isMaster() || r.hand.up == nil {
		return
	}
	if l := r.hand.up; l.peerDone.Load() {
		st.ConnsHanded, st.ConnsClosed = l.peerHanded.Load(), l.peerClosed.Load()
	} else {
		st.ConnsHanded = l.adoptedN.Load()
	}
}

// relayHandOff prepares a phase's hand-off from old, the worker being
// replaced, to w, its replacement: what old hands goes to w, and old is
// told it may hand once w has said hello.
func (m *master) relayHandOff(old, w *worker) {
	if old == nil || old.p == nil || old.p.ho == nil || w.p == nil || w.p.ho == nil {
		return
	}
	ol, nl := old.p.ho, w.p.ho
	ol.relay.Store(nl)
	nl.whenHello(func() { ol.say("hello") })
}

// noRelay tells w, about to be told to drain, that nothing will adopt
// its connections, unless relayHandOff arranged it: it drains at once.
func (m *master) noRelay(w *worker) {
	if w.p != nil && w.p.ho != nil && w.p.ho.relay.Load() == nil {
		w.p.ho.say("none")
	}
}

// noteDone records a peer's final counts: in a master, summed over the
// phase's replaced workers.
func (l *hoLink) noteDone(handed, closed int64) {
	if !l.r.isMaster() {
		return
	}
	l.r.hand.handed.Add(handed)
	l.r.hand.closed.Add(closed)
	l.r.log.Info("graceful: worker handed its connections", "worker", l.peer, "handed", handed, "closed", closed)
}
