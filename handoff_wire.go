package graceful

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The hand-off socket: how open connections pass from one process to
// another (the process layer of connection hand-off; handoff.go takes a
// connection from net/http and gives one to it).
//
// Every child a process starts, a successor or a worker, gets one end of
// a SOCK_SEQPACKET socket pair besides its control socket (the "ho" field
// of GRACEFUL_INHERIT). Both ends speak the same datagrams:
//
//	"hello"            I adopt connections: you may hand me yours
//	"b <seq> <n>\n..."  a batch: n connections, their descriptors in
//	                   SCM_RIGHTS, then for each "<network> <addr> <len>\n"
//	                   (addr query-escaped) and len bytes already read
//	"ack <seq>"        batch seq received: its sender closes its copies
//	"nak <seq>"        batch seq refused: its sender serves it again
//	"none"             I will not adopt (a master that does not relay)
//	"done <h> <c>"     the sender's drain is over: h connections handed,
//	                   c closed instead (for the receiver's Status)
//
// A process hands off only to a peer that said hello: a child of an older
// release, which knows nothing of the socket, never does, and an older
// parent passes none, so mixed releases simply do not hand off.
//
// At every moment one process owns a connection. The sender keeps its
// copy of each descriptor until the batch is acked; the receiver acks
// right after recvmsg, before it reads any of the connections. A batch
// that cannot be sent, is refused, or is still unacked when the peer goes
// away is adopted back by its sender (runner.adopt) and drained as before
// a hand-off existed. A peer that dies after its ack takes the
// connections with it, as any crash does.
//
// In a cluster the master relays: a replaced worker hands its connections
// to the master, which passes each batch on to the worker that replaces
// it and acks the old worker only once the new one has acked.

const (
	hoMaxFDs       = 200      // descriptors per batch (SCM_MAX_FD is 253)
	hoMaxBytes     = 48 << 10 // payload per batch, below the socket buffer
	hoSendTimeout  = 3 * time.Second
	hoHelloWait    = 100 * time.Millisecond // for a successor's hello, sent before "serving"
	hoReplaceWait  = time.Second            // for the master's hello to a replaced worker
	hoMaxPreLength = 1 << 16
)

// hoTestDie, set only in a build for tests (handoff_testhook.go), kills
// the process that receives a batch before it acks it.
var hoTestDie func()

// hoLink is this process's end of a hand-off socket.
type hoLink struct {
	r    *runner
	c    *net.UnixConn
	peer string // who is at the other end, for messages

	hello     chan struct{} // closed when the peer says hello
	helloOnce sync.Once
	none      chan struct{} // closed when the peer says it will not adopt
	noneOnce  sync.Once
	dead      chan struct{} // closed when the peer is gone or the link closed
	deadOnce  sync.Once

	wmu sync.Mutex // one write at a time

	mu       sync.Mutex
	seq      uint64
	pending  map[uint64]*hoBatch // sent, not yet acked
	onHello  []func()
	closed   bool
	stopSend chan struct{} // closed by close: the sending loop ends

	// Sending side: connections taken from net/http and not yet acked or
	// taken back; the counts of this process's drain.
	unsettled atomic.Int64
	received  atomic.Int64                    // taken from out
	out       atomic.Pointer[chan handedConn] // what the tracker hands out on
	handedN   atomic.Int64                    // acked by the peer
	backN     atomic.Int64                    // taken back
	lostN     atomic.Int64                    // taken back but could not be served again
	sending   atomic.Bool

	// Receiving side.
	adoptedN   atomic.Int64
	peerHanded atomic.Int64 // from the peer's "done"
	peerClosed atomic.Int64
	peerDone   atomic.Bool

	// In a master: the link of the worker that adopts what this one hands.
	relay atomic.Pointer[hoLink]
}

// hoBatch is a batch sent and not yet acked.
type hoBatch struct {
	conns []handedConn
	done  func(ok bool) // a relayed batch: called instead of closing or taking back
}

// newHOLink makes a link on f, an end of a hand-off socket, and starts
// reading it. It returns nil for a nil f or one that is not a socket.
func newHOLink(r *runner, f *os.File, peer string) *hoLink {
	if f == nil {
		return nil
	}
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		r.log.Warn("graceful: hand-off socket unusable; connections will be drained", "err", err)
		return nil
	}
	c, ok := fc.(*net.UnixConn)
	if !ok {
		fc.Close()
		return nil
	}
	l := &hoLink{
		r: r, c: c, peer: peer,
		hello:    make(chan struct{}),
		none:     make(chan struct{}),
		dead:     make(chan struct{}),
		pending:  map[uint64]*hoBatch{},
		stopSend: make(chan struct{}),
	}
	go l.read()
	return l
}

// saidHello reports whether the peer adopts connections.
func (l *hoLink) saidHello() bool {
	select {
	case <-l.hello:
		return true
	default:
		return false
	}
}

// waitHello waits up to d for the peer's hello, and reports whether it
// came.
func (l *hoLink) waitHello(d time.Duration) bool {
	if l == nil {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-l.hello:
		return true
	case <-l.dead:
		return l.saidHello()
	case <-l.none:
		return false
	case <-t.C:
		return false
	}
}

// whenHello runs f once the peer has said hello: now, or from the reader.
func (l *hoLink) whenHello(f func()) {
	l.mu.Lock()
	if !l.saidHello() {
		l.onHello = append(l.onHello, f)
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	f()
}

// say writes a short message.
func (l *hoLink) say(format string, args ...any) error {
	if l == nil {
		return errors.New("no hand-off socket")
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.c.SetWriteDeadline(time.Now().Add(hoSendTimeout))
	_, err := l.c.Write([]byte(fmt.Sprintf(format, args...)))
	return err
}

// read handles the peer's datagrams until the socket closes.
func (l *hoLink) read() {
	buf := make([]byte, hoMaxBytes+4096)
	oob := make([]byte, oobSpace(hoMaxFDs)+64)
	for {
		n, oobn, flags, _, err := l.c.ReadMsgUnix(buf, oob)
		fds := parseRights(oob[:oobn])
		if err != nil || n == 0 {
			closeFDs(fds)
			l.gone()
			return
		}
		l.handle(buf[:n], fds, flags&msgCtrunc != 0)
	}
}

// handle acts on one datagram.
func (l *hoLink) handle(msg []byte, fds []int, trunc bool) {
	head, body, _ := bytes.Cut(msg, []byte("\n"))
	f := strings.Fields(string(head))
	if len(f) == 0 {
		closeFDs(fds)
		return
	}
	num := func(i int) uint64 {
		if i >= len(f) {
			return 0
		}
		n, _ := strconv.ParseUint(f[i], 10, 63)
		return n
	}
	if f[0] != "b" {
		closeFDs(fds) // no descriptors ride on any other message
	}
	switch f[0] {
	case "hello":
		l.helloOnce.Do(func() {
			l.mu.Lock()
			close(l.hello)
			fs := l.onHello
			l.onHello = nil
			l.mu.Unlock()
			for _, f := range fs {
				f()
			}
		})
	case "none":
		l.noneOnce.Do(func() { close(l.none) })
	case "ack":
		l.resolve(num(1), true)
	case "nak":
		l.resolve(num(1), false)
	case "done":
		l.peerHanded.Store(int64(num(1)))
		l.peerClosed.Store(int64(num(2)))
		l.peerDone.Store(true)
		l.noteDone(int64(num(1)), int64(num(2)))
	case "b":
		seq := num(1)
		conns, err := decodeBatch(body, fds, int(num(2)))
		if err == nil && trunc {
			err = errors.New("descriptors truncated (the descriptor limit?)")
		}
		if err != nil {
			closeFDs(fds)
			l.r.log.Warn("graceful: refused a batch of connections; its sender drains them", "from", l.peer, "err", err)
			l.say("nak %d", seq)
			return
		}
		l.receive(seq, conns)
	}
}

// receive takes a batch: in a master, to relay it; elsewhere, to serve it.
func (l *hoLink) receive(seq uint64, conns []handedConn) {
	if l.r.isMaster() {
		l.relayBatch(seq, conns)
		return
	}
	if hoTestDie != nil {
		hoTestDie()
	}
	// Ack first, before any of the connections is read: from now on they
	// are this process's. (If the ack cannot be written the sender has
	// closed its end, after which it takes nothing back.)
	l.say("ack %d", seq)
	for _, h := range conns {
		if err := l.r.adopt(h); err != nil {
			h.file.Close()
			l.r.log.Warn("graceful: could not serve a handed connection; closed it", "err", err)
			continue
		}
		l.adoptedN.Add(1)
	}
}

// relayBatch passes a batch from a replaced worker on to its replacement,
// and answers the old worker with the new one's answer.
func (l *hoLink) relayBatch(seq uint64, conns []handedConn) {
	answer := func(ok bool) {
		for _, h := range conns {
			h.file.Close() // the master's copies
		}
		if ok {
			l.say("ack %d", seq)
			l.handedN.Add(int64(len(conns)))
		} else {
			l.say("nak %d", seq)
		}
	}
	to := l.relay.Load()
	if to == nil || !to.saidHello() {
		answer(false)
		return
	}
	to.send(conns, answer)
}

// startSending makes this process hand its connections over l from now
// on: the peer said hello. It returns at once; a goroutine batches what
// the tracker hands out.
func (l *hoLink) startSending() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || !l.sending.CompareAndSwap(false, true) {
		return
	}
	out := make(chan handedConn, hoMaxFDs)
	l.out.Store(&out)
	go l.sendLoop(out)
	l.r.track.handOff(out)
}

// sendLoop batches the connections the tracker hands out: whatever is
// waiting is sent at once (a connection on its way is a client that may
// be waiting), up to hoMaxFDs per datagram; while the peer is slow to
// read, the next batch fills up.
func (l *hoLink) sendLoop(out chan handedConn) {
	for {
		var batch []handedConn
		select {
		case h := <-out:
			l.unsettled.Add(1)
			l.received.Add(1)
			batch = append(batch, h)
		case <-l.stopSend:
			return
		}
		size := entrySize(batch[0])
	more:
		for len(batch) < hoMaxFDs {
			select {
			case h := <-out:
				l.unsettled.Add(1)
				l.received.Add(1)
				l.received.Add(1)
				if s := entrySize(h); size+s > hoMaxBytes {
					l.send(batch, nil)
					batch, size = nil, 0
				}
				batch = append(batch, h)
				size += entrySize(h)
			default:
				break more
			}
		}
		l.send(batch, nil)
	}
}

// settled reports whether every connection the tracker handed out has
// been acked or taken back.
func (l *hoLink) settled() bool {
	if l == nil {
		return true
	}
	if out := l.out.Load(); out != nil && len(*out) > 0 {
		return false
	}
	// The tracker counts a connection handed before net/http lets it go:
	// one it counted and the loop here has not is on its way.
	return l.unsettled.Load() == 0 && l.received.Load() >= l.r.track.handedN.Load()
}

// send sends one batch. A batch that is not sent is resolved at once:
// done(false), or taken back.
func (l *hoLink) send(conns []handedConn, done func(bool)) {
	l.mu.Lock()
	if l.closed || l.isDead() {
		l.mu.Unlock()
		l.fail(&hoBatch{conns: conns, done: done})
		return
	}
	l.seq++
	seq := l.seq
	l.pending[seq] = &hoBatch{conns: conns, done: done}
	l.mu.Unlock()

	data, fds := encodeBatch(seq, conns)
	l.wmu.Lock()
	l.c.SetWriteDeadline(time.Now().Add(hoSendTimeout))
	_, _, err := l.c.WriteMsgUnix(data, unixRights(fds), nil)
	l.wmu.Unlock()
	runtime.KeepAlive(conns)
	if err == nil {
		return
	}
	// A datagram is sent whole or not at all: this one was not.
	l.mu.Lock()
	b, ok := l.pending[seq]
	delete(l.pending, seq)
	l.mu.Unlock()
	if !ok {
		return // resolved already, by the peer going away
	}
	if errors.Is(err, errMsgSize) && done == nil && len(conns) > 1 {
		l.send(conns[:len(conns)/2], nil)
		l.send(conns[len(conns)/2:], nil)
		return
	}
	l.r.log.Warn("graceful: could not hand connections over; draining them here", "to", l.peer, "connections", len(conns), "err", err)
	if done == nil && !errors.Is(err, errMsgSize) {
		// The peer does not read, or is gone: no more hand-offs.
		l.r.track.stopHandOff()
		l.markDead()
	}
	l.fail(b)
}

// resolve settles a batch the peer answered.
func (l *hoLink) resolve(seq uint64, ok bool) {
	l.mu.Lock()
	b := l.pending[seq]
	delete(l.pending, seq)
	l.mu.Unlock()
	if b == nil {
		return
	}
	if !ok {
		if b.done == nil {
			l.r.log.Warn("graceful: the process adopting connections refused a batch; draining them here", "peer", l.peer, "taken_back", len(b.conns))
		}
		l.fail(b)
		return
	}
	if b.done != nil {
		b.done(true)
		return
	}
	for _, h := range b.conns {
		h.file.Close()
	}
	l.handedN.Add(int64(len(b.conns)))
	l.unsettled.Add(-int64(len(b.conns)))
}

// fail settles a batch that did not reach the peer: a relayed one is
// refused; this process's own connections are served here again.
func (l *hoLink) fail(b *hoBatch) {
	if b.done != nil {
		b.done(false)
		return
	}
	for _, h := range b.conns {
		if err := l.r.adopt(h); err != nil {
			h.file.Close()
			l.lostN.Add(1)
		}
	}
	l.backN.Add(int64(len(b.conns)))
	l.unsettled.Add(-int64(len(b.conns)))
}

func (l *hoLink) isDead() bool {
	select {
	case <-l.dead:
		return true
	default:
		return false
	}
}

func (l *hoLink) markDead() { l.deadOnce.Do(func() { close(l.dead) }) }

// gone is the peer going away (or this end closing): what it did not ack
// is taken back, and nothing more is handed.
func (l *hoLink) gone() {
	l.markDead()
	if l.sending.Load() {
		l.r.track.stopHandOff()
	}
	l.mu.Lock()
	closed := l.closed
	var bs []*hoBatch
	for seq, b := range l.pending {
		bs = append(bs, b)
		delete(l.pending, seq)
	}
	l.mu.Unlock()
	if !closed && l.sending.Load() {
		n := 0
		for _, b := range bs {
			n += len(b.conns)
		}
		l.r.log.Warn("graceful: the process adopting connections went away; draining them here", "peer", l.peer, "taken_back", n)
	}
	for _, b := range bs {
		if closed && b.done == nil {
			// This end closed at the end of its drain: its copies go.
			for _, h := range b.conns {
				h.file.Close()
			}
			continue
		}
		l.fail(b)
	}
}

// close ends the link: the peer reads its end of file. Batches still
// unacked are not taken back (the drain is over); the peer, if it
// receives them, serves them.
func (l *hoLink) close() {
	if l == nil {
		return
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	close(l.stopSend)
	sending := l.sending.Load()
	l.mu.Unlock()
	if sending {
		l.r.track.stopHandOff()
	}
	l.c.Close()
}

// encodeBatch is a batch's datagram and its descriptors.
func encodeBatch(seq uint64, conns []handedConn) ([]byte, []int) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "b %d %d\n", seq, len(conns))
	fds := make([]int, len(conns))
	for i, h := range conns {
		fds[i] = rawFD(h.file)
		fmt.Fprintf(&b, "%s %s %d\n", h.key.network, url.QueryEscape(h.key.addr), len(h.pre))
		b.Write(h.pre)
	}
	return b.Bytes(), fds
}

// rawFD is f's descriptor. Not f.Fd(), which would switch the socket,
// shared with the process that serves it next, to blocking mode.
func rawFD(f *os.File) int {
	fd := -1
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(d uintptr) { fd = int(d) })
	}
	return fd
}

func entrySize(h handedConn) int { return len(h.key.network) + 3*len(h.key.addr) + 16 + len(h.pre) }

// decodeBatch parses a batch's entries and pairs them with fds. On error
// the caller closes fds.
func decodeBatch(body []byte, fds []int, n int) ([]handedConn, error) {
	if n <= 0 || n > hoMaxFDs || len(fds) != n {
		return nil, fmt.Errorf("%d descriptors for %d connections", len(fds), n)
	}
	conns := make([]handedConn, 0, n)
	for i := 0; i < n; i++ {
		line, rest, ok := bytes.Cut(body, []byte("\n"))
		f := strings.Fields(string(line))
		if !ok || len(f) != 3 {
			return nil, fmt.Errorf("entry %d malformed", i)
		}
		addr, err := url.QueryUnescape(f[1])
		k, err2 := strconv.Atoi(f[2])
		if err != nil || err2 != nil || k < 0 || k > hoMaxPreLength || k > len(rest) {
			return nil, fmt.Errorf("entry %d malformed", i)
		}
		conns = append(conns, handedConn{key: lnKey{f[0], addr}, pre: bytes.Clone(rest[:k])})
		body = rest[k:]
	}
	for i := range conns {
		conns[i].file = os.NewFile(uintptr(fds[i]), "handed-conn")
	}
	return conns, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		closeFD(fd)
	}
}
