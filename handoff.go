package graceful

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"
)

// Connection hand-off, inside one process: taking an idle cleartext
// HTTP/1.1 keep-alive connection from net/http at a point where net/http is
// between requests, with the bytes of the next request it already holds,
// so that another process can serve it on; and adopting such a connection
// into an http.Server. Moving the descriptors between processes is the
// process layer's (handoff_wire.go).
//
// Where net/http is between requests. After a response, net/http reports
// StateIdle, sets the read deadline (the idle timeout, or none), then waits
// in its buffered reader's Peek(4): every Read it makes there passes a
// slice as long as the buffer (4096 bytes) minus what it already holds, 0
// to 3 bytes (counting the byte of its background read, kept outside the
// buffer until asked for). Those are the last bytes this wrapper returned,
// which it remembers. Once Peek has returned, net/http sets the read
// deadline again before reading any more, so "StateIdle, one
// SetReadDeadline, Read" is the idle wait, and a second SetReadDeadline
// means a request (maybe pipelined, already in the buffer) is being read.
// A new connection is at a safe point until its first byte.
//
// Taking. While connections are handed off, one at a safe point gets a
// past read deadline (a "poke", under the connection's lock, which orders
// it with net/http's own SetReadDeadline calls); its Read returns, and
// there, in net/http's goroutine, the wrapper duplicates the socket, sends
// it with the held bytes and those that arrived meanwhile (which net/http
// never sees), and returns io.EOF: net/http closes the connection without
// writing a byte, which closes only this process's descriptor. If the
// connection cannot be taken after all, the wrapper puts back the deadline
// net/http asked for and reads again: a poke never costs a request.

// Facts about net/http the hand-off relies on; the self-check confirms them.
const (
	httpBufSize = 4096 // the size of net/http's buffered reader
	maxHeld     = 3    // the most bytes it holds while waiting in Peek(4)
)

// handedConn is one connection on its way to another process. (The seam
// named it "handed", a name activation_unix.go already uses for what a
// service manager passes at start-up.)
type handedConn struct {
	// A duplicate of the connection's socket (this process's copy; close
	// it once sent and acked). Its descriptor is non-blocking, shared with
	// the socket: get it with SyscallConn, not Fd, which makes it blocking.
	file *os.File
	key  lnKey  // the address of the listener it was accepted on (runner.served[i].key)
	pre  []byte // bytes already read from the socket that net/http had not consumed: read them first
}

// handoffState is a hand-off under way.
type handoffState struct {
	out  chan<- handedConn
	stop chan struct{} // closed by stopHandOff
	mu   sync.RWMutex  // read-held while sending on out
}

// end stops st and waits until nothing is being sent on its channel.
func (st *handoffState) end() {
	close(st.stop)
	// Taking the write lock waits for every sender to leave.
	st.mu.Lock()
	//lint:ignore SA2001 the empty critical section is the wait
	st.mu.Unlock()
}

// handVia is what a connection needs to know of the server that serves
// it to be handed off, or to be adopted.
type handVia struct {
	key   lnKey
	srv   *http.Server
	adopt *adoptListener // its handed-in connections; nil: never handed off
	back  bool           // taken back by a draining process: drained as today
}

func (v *handVia) ok() bool { return v != nil && v.adopt != nil && !v.back }

// handFields are a trackedConn's hand-off state. The ring of last bytes
// is touched only by Read, which net/http never calls concurrently; the
// deadlines only under mu.
type handFields struct {
	mu    sync.Mutex // orders pokes, takes and read deadlines
	rdl   time.Time  // the read deadline net/http last asked for
	in    *handedIn  // nil unless handed in
	last  [maxHeld]byte
	nlast uint8 // bytes in last
}

// handedIn is what a handed-in connection has left of its hand-off.
type handedIn struct {
	pre     []byte    // bytes not read yet; touched only by Read
	waiting bool      // handed in idle, no byte yet: keep idleDL (under mu)
	idleDL  time.Time // the idle deadline
	rdlAt   time.Time // when net/http asked for rdl, while waiting
}

// remember keeps the last maxHeld bytes Read returned.
func (h *handFields) remember(p []byte) {
	if len(p) >= maxHeld {
		copy(h.last[:], p[len(p)-maxHeld:])
		h.nlast = maxHeld
		return
	}
	keep := min(int(h.nlast), maxHeld-len(p))
	copy(h.last[:keep], h.last[int(h.nlast)-keep:h.nlast])
	copy(h.last[keep:], p)
	h.nlast = uint8(keep + len(p))
}

// read reads the handed-in bytes first, then the socket.
func (c *trackedConn) read(b []byte) (int, error) {
	in := c.in
	if in != nil && in.pre != nil {
		n := copy(b, in.pre)
		if in.pre = in.pre[n:]; len(in.pre) == 0 {
			in.pre = nil
		}
		return n, nil
	}
	n, err := c.Conn.Read(b)
	if n > 0 && in != nil && in.waiting { // written only by Read, read without mu here
		c.firstByte()
	}
	return n, err
}

// firstByte ends a handed-in connection's idle wait: from now on, the
// deadline net/http asked for applies, counted from now.
func (c *trackedConn) firstByte() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.in.waiting {
		return
	}
	c.in.waiting = false
	if c.state.Load()&takeBit == 0 {
		c.Conn.SetReadDeadline(c.effective())
	}
}

// effective is the read deadline the socket should have, absent a poke.
// Call with mu held.
func (c *trackedConn) effective() time.Time {
	in := c.in
	switch {
	case in == nil:
	case in.waiting:
		return in.idleDL
	case !in.rdlAt.IsZero() && !c.rdl.IsZero():
		// Asked for during the idle wait of a handed-in connection: net/http
		// meant it to count from the request's first byte.
		d := time.Now().Add(c.rdl.Sub(in.rdlAt))
		in.rdlAt = time.Time{}
		return d
	}
	return c.rdl
}

// safe reports whether, in state word w, net/http is at a point where the
// connection can be taken from it: a new connection before its first
// byte, or an idle one waiting in Peek.
func (c *trackedConn) safe(w uint64) bool {
	if !c.via.ok() || w&(h2Bit|spoilBit) != 0 {
		return false
	}
	switch http.ConnState(w & stateMask) {
	case http.StateIdle:
		return w&armBit != 0
	case http.StateNew:
		return w&readBit == 0
	}
	return false
}

// SetReadDeadline sets the read deadline, and follows where net/http is:
// the first call after StateIdle arms the idle wait, a second one spoils
// it. If net/http arrives at a safe point while connections are handed
// off, the deadline is set in the past instead, so that the Read that
// follows takes the connection.
func (c *trackedConn) SetReadDeadline(d time.Time) error {
	if !c.via.ok() {
		return c.Conn.SetReadDeadline(d)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rdl = d
	if c.in != nil && c.in.waiting {
		c.in.rdlAt = time.Now()
	}
	st := c.t.ho.Load()
	var take bool
	for {
		w := c.state.Load()
		nw := w &^ takeBit
		if http.ConnState(w&stateMask) == http.StateIdle {
			if w&armBit == 0 {
				nw |= armBit
			} else {
				nw |= spoilBit
			}
		}
		if take = st != nil && c.safe(nw); take {
			nw |= takeBit
		}
		if nw == w || c.state.CompareAndSwap(w, nw) {
			break
		}
	}
	if take {
		return c.Conn.SetReadDeadline(aLongTimeAgo)
	}
	return c.Conn.SetReadDeadline(c.effective())
}

// SetDeadline sets both deadlines; see SetReadDeadline.
func (c *trackedConn) SetDeadline(d time.Time) error {
	if !c.via.ok() {
		return c.Conn.SetDeadline(d)
	}
	if err := c.SetReadDeadline(d); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(d)
}

// aLongTimeAgo is a read deadline that has passed.
var aLongTimeAgo = time.Unix(1, 0)

// poke asks for the connection, if it is at a safe point: its Read, under
// way or next, returns at once and takes it.
func (c *trackedConn) poke() {
	if !c.via.ok() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		w := c.state.Load()
		if w&takeBit != 0 || !c.safe(w) {
			return
		}
		if c.state.CompareAndSwap(w, w|takeBit) {
			break
		}
	}
	c.Conn.SetReadDeadline(aLongTimeAgo)
}

// take is Read's answer to a poke, n and err being what the read gave: it
// hands the connection off if net/http is still at a safe point, the hand-off
// still on, and the bytes net/http holds known. Otherwise the connection
// stays with net/http, which gets the read deadline it asked for back, and
// retry says to read again (the read gave nothing but the poke's timeout).
func (c *trackedConn) take(b []byte, n int, err error) (taken, retry bool) {
	st := c.t.ho.Load()
	c.mu.Lock()
	w := c.state.Load()
	k := httpBufSize - len(b) // what net/http holds, if at the idle wait
	ok := st != nil && w&takeBit != 0 && c.safe(w) && (err == nil || isTimeout(err)) &&
		k >= 0 && k <= int(c.nlast) && (k == 0 || http.ConnState(w&stateMask) == http.StateIdle)
	if ok {
		if f, derr := c.t.dupOf(c.Conn); derr == nil {
			var left []byte // handed-in bytes not read yet
			if c.in != nil {
				left = c.in.pre
			}
			pre := make([]byte, 0, k+n+len(left))
			pre = append(pre, c.last[int(c.nlast)-k:c.nlast]...)
			pre = append(pre, b[:n]...)
			pre = append(pre, left...)
			c.mu.Unlock()
			// net/http waits in this Read: nothing else happens to the
			// connection meanwhile but pokes, which find it taken.
			if c.send(st, handedConn{file: f, key: c.via.key, pre: pre}, k) {
				if c.in != nil {
					c.in.pre = nil
				}
				return true, false
			}
			if f != nil {
				f.Close()
			}
			c.mu.Lock()
		}
	}
	// Not taken: not again in this quiet spell.
	for {
		w = c.state.Load()
		if c.state.CompareAndSwap(w, w&^takeBit|spoilBit) {
			break
		}
	}
	c.Conn.SetReadDeadline(c.effective())
	c.mu.Unlock()
	return false, n == 0 && (err == nil || isTimeout(err))
}

// send sends h on the hand-off's channel, unless it stops first.
func (c *trackedConn) send(st *handoffState, h handedConn, held int) bool {
	st.mu.RLock()
	defer st.mu.RUnlock()
	select {
	case <-st.stop:
		return false
	default:
	}
	c.t.handedN.Add(1) // before the receiver can see it
	select {
	case st.out <- h:
	case <-st.stop:
		c.t.handedN.Add(-1)
		return false
	}
	if takeHook != nil {
		takeHook(held, len(h.pre))
	}
	return true
}

// takeHook, if set (by tests), learns of each take how many bytes net/http
// held and how many went along.
var takeHook func(held, pre int)

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// dupOf duplicates c's socket.
func (t *tracker) dupOf(c net.Conn) (*os.File, error) {
	if t.dup != nil {
		return t.dup(c)
	}
	return dupConn(c)
}

// handOff makes the tracker hand connections off instead of leaving them
// to the drain: from now on, each cleartext HTTP/1.1 connection, as soon as
// net/http is between requests on it (idle now, or when its current
// response is complete), is taken from net/http and sent on out.
// Connections that cannot be handed (TLS, HTTP/2, hijacked, exact unread
// bytes unknown) stay with the drain as today. Called by the drain when a
// successor can adopt. out is never closed by the tracker. If hand-off does
// not work in this process (handoffSupported), it does nothing.
func (t *tracker) handOff(out chan<- handedConn) {
	if handoffSupported() != nil {
		return
	}
	t.startHandOff(out)
}

func (t *tracker) startHandOff(out chan<- handedConn) {
	st := &handoffState{out: out, stop: make(chan struct{})}
	if old := t.ho.Swap(st); old != nil {
		old.end()
	}
	t.mu.Lock()
	all := slices.Collect(maps.Keys(t.conns))
	t.mu.Unlock()
	for _, c := range all {
		c.poke()
	}
}

// stopHandOff ends handOff: connections not yet taken stay with the drain
// (their next response gets "Connection: close" as today). Called when the
// receiver is gone or refuses. Once it returns, nothing more is sent on
// the channel handOff was given: it may be closed.
func (t *tracker) stopHandOff() {
	if old := t.ho.Swap(nil); old != nil {
		old.end()
	}
}

// handing reports whether connections are being handed off.
func (t *tracker) handing() bool { return t.ho.Load() != nil }

// keepOpen reports whether the response to req may leave its connection
// open during the drain: the connection is handed off once the response is
// complete, so it does not need "Connection: close".
func (t *tracker) keepOpen(req *http.Request) bool {
	c, _ := req.Context().Value(connKey{}).(*trackedConn)
	return c != nil && t.handing() && c.via.ok() && req.ProtoMajor == 1 && c.state.Load()&h2Bit == 0
}

// connKey is the context key of the trackedConn a request came on, for
// servers whose connections can be handed off.
type connKey struct{}

// serveHandedIn prepares sv's server for hand-off, if it serves cleartext
// HTTP/1: a listener of connections handed in, served by a second Serve
// call, and the context key of each connection. It returns what its
// tracked listener passes to its connections (nil: they are never handed
// off). Call it from serve, with the server's hooks in place.
func (r *runner) serveHandedIn(sv *served) *handVia {
	srv := sv.srv
	if sv.useTLS || srv.Protocols != nil && srv.Protocols.UnencryptedHTTP2() {
		return nil
	}
	if sv.serveL != nil {
		// Served through the program's own listener wrapper (Serve given
		// a wrapper, TLS set up by hand, PROXY protocol, a limit): what
		// the wrapper holds of a connection, buffered bytes or a count,
		// would not go along with the socket.
		return nil
	}
	go handoffSupported() // the self-check, once, off the start's path
	al := newAdoptListener(sv.key, srv, sv.l.Addr())
	userConnCtx := srv.ConnContext
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if userConnCtx != nil {
			ctx = userConnCtx(ctx, c)
		}
		if tc, ok := c.(*trackedConn); ok {
			ctx = context.WithValue(ctx, connKey{}, tc)
		}
		return ctx
	}
	r.track.mu.Lock()
	if r.track.adopters == nil {
		r.track.adopters = map[lnKey]*adoptListener{}
	}
	r.track.adopters[sv.key] = al
	r.track.mu.Unlock()
	go func() {
		// Ends when the drain closes the server.
		if err := srv.Serve(al); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			r.log.Warn("graceful: serving handed-in connections failed", "addr", sv.key.addr, "err", err)
		}
	}()
	return al.via
}

// adopt serves h in this process: on the http.Server that serves h.key,
// as a new connection whose first reads return h.pre. It takes ownership
// of h.file. Used by the receiving process, and by the sending one to take
// back a connection whose hand-off failed: a draining process drains it as
// today. It fails if no cleartext HTTP/1 server serves h.key, or the
// descriptor is not a connection; the caller closes h.file then.
func (r *runner) adopt(h handedConn) error {
	r.track.mu.Lock()
	al := r.track.adopters[h.key]
	r.track.mu.Unlock()
	if al == nil {
		return fmt.Errorf("graceful: adopting a connection: no cleartext HTTP/1 server serves %s %s", h.key.network, h.key.addr)
	}
	nc, err := net.FileConn(h.file)
	if err != nil {
		return fmt.Errorf("graceful: adopting a connection: %w", err)
	}
	via := al.via
	if r.draining.Load() {
		via = al.back
	}
	tc := &trackedConn{Conn: nc, t: r.track, via: via}
	tc.state.Store(uint64(http.StateNew))
	tc.in = &handedIn{pre: h.pre}
	if len(h.pre) == 0 {
		// Idle: net/http treats it as new, with ReadHeaderTimeout; keep the
		// idle timeout until the first byte.
		tc.in.pre, tc.in.waiting = nil, true
		if d := idleTimeout(al.via.srv); d > 0 {
			tc.in.idleDL = time.Now().Add(d)
		}
		nc.SetReadDeadline(tc.in.idleDL)
	}
	r.track.insert(tc)
	if !al.push(tc) {
		tc.Close()
		return fmt.Errorf("graceful: adopting a connection: the server of %s %s is closed", h.key.network, h.key.addr)
	}
	h.file.Close()
	r.track.adoptedN.Add(1)
	return nil
}

// idleTimeout is how long srv keeps an idle keep-alive connection.
func idleTimeout(srv *http.Server) time.Duration {
	if srv.IdleTimeout != 0 {
		return srv.IdleTimeout
	}
	return srv.ReadTimeout
}

// insert tracks a connection built by the caller.
func (t *tracker) insert(tc *trackedConn) {
	t.mu.Lock()
	t.conns[tc] = struct{}{}
	t.mu.Unlock()
	if tc.via.ok() && t.handing() {
		tc.poke()
	}
}

// adoptListener is a listener of handed-in connections.
type adoptListener struct {
	via, back *handVia
	addr      net.Addr
	ch        chan net.Conn
	done      chan struct{}
	once      sync.Once
}

func newAdoptListener(key lnKey, srv *http.Server, addr net.Addr) *adoptListener {
	al := &adoptListener{addr: addr, ch: make(chan net.Conn, 64), done: make(chan struct{})}
	al.via = &handVia{key: key, srv: srv, adopt: al}
	al.back = &handVia{key: key, srv: srv, adopt: al, back: true}
	return al
}

// push passes c to Serve, unless the listener is closed.
func (l *adoptListener) push(c net.Conn) bool {
	select {
	case <-l.done:
		return false
	default:
	}
	select {
	case l.ch <- c:
	case <-l.done:
		return false
	}
	select {
	case <-l.done:
		// Closed meanwhile: c may be left in the channel.
		l.closeQueued()
	default:
	}
	return true
}

func (l *adoptListener) Accept() (net.Conn, error) {
	select {
	case <-l.done:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and closes the connections not accepted yet.
func (l *adoptListener) Close() error {
	l.once.Do(func() { close(l.done) })
	l.closeQueued()
	return nil
}

func (l *adoptListener) closeQueued() {
	for {
		select {
		case c := <-l.ch:
			c.Close()
		default:
			return
		}
	}
}

func (l *adoptListener) Addr() net.Addr { return l.addr }
