package graceful

import (
	"crypto/tls"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
)

// tracker knows every connection the process has accepted and what state
// net/http last reported for it. The map is touched once when a connection
// is accepted and once when it is closed; a request only stores to the
// connection's own atomic word, so keep-alive traffic takes no shared lock.
type tracker struct {
	mu      sync.Mutex
	conns   map[*trackedConn]struct{}
	shadows []*http.Server // hold the HTTP/2 state of the served servers; see http2.go

	draining atomic.Bool // the drain has begun: HTTP/2 connections get a GOAWAY

	// Connection hand-off (handoff.go).
	ho       atomic.Pointer[handoffState]     // non-nil while connections are handed off
	handedN  atomic.Int64                     // connections handed off
	adoptedN atomic.Int64                     // connections adopted
	adopters map[lnKey]*adoptListener         // under mu
	dup      func(net.Conn) (*os.File, error) // nil: dupConn; the self-check's stand-in
}

func newTracker() *tracker {
	return &tracker{conns: map[*trackedConn]struct{}{}}
}

// trackedConn is a net.Conn that the tracker can see. Its state word holds
// the http.ConnState in the low byte, then the flags below, then a count of
// state changes, so that the drain can tell a connection that stayed idle
// from one that was used in between.
type trackedConn struct {
	net.Conn
	t     *tracker
	state atomic.Uint64
	once  sync.Once

	// For hand-off (handoff.go): what it needs to know of its server, and
	// its reads and read deadlines.
	via *handVia
	handFields
}

// The state word's flags.
const (
	stateMask = 0xff
	// readBit: the client sent bytes since net/http last reported the
	// connection New or Idle, so a request is under way that net/http has
	// not reported Active yet (headers still coming). Cleared by every state
	// change. Over TLS the handshake's bytes count too: a client that
	// completes a handshake and sends nothing more is left to the drain's
	// deadline, or to the server's own ReadHeaderTimeout.
	readBit = 1 << 8
	// h2Bit: the connection is served by HTTP/2, which closes it itself once
	// it has sent a GOAWAY and its streams are done. Kept across changes.
	h2Bit = 1 << 9
	// toldBit: the drain has sent this HTTP/2 connection a GOAWAY. Kept
	// across changes.
	toldBit = 1 << 10
	// armBit, spoilBit, takeBit: the hand-off's view of where net/http is
	// (handoff.go). Cleared by every state change.
	armBit   = 1 << 11
	spoilBit = 1 << 12
	takeBit  = 1 << 13
	// countShift: the count of state changes starts here.
	countShift = 14
)

// quiet reports whether w is a state in which net/http is waiting for a
// request, with no request of its own in hand.
func quiet(w uint64) bool {
	s := http.ConnState(w & stateMask)
	return s == http.StateNew || s == http.StateIdle
}

func (t *tracker) add(c net.Conn) *trackedConn { return t.addVia(c, nil) }

// addVia tracks c, accepted by (or handed in to) the server via describes,
// and, while connections are handed off, takes it at once (handoff.go).
func (t *tracker) addVia(c net.Conn, via *handVia) *trackedConn {
	tc := &trackedConn{Conn: c, t: t, via: via}
	tc.state.Store(uint64(http.StateNew))
	t.mu.Lock()
	t.conns[tc] = struct{}{}
	t.mu.Unlock()
	if via != nil && t.ho.Load() != nil {
		tc.poke()
	}
	return tc
}

// Close closes the connection and forgets it.
func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.conns, c)
		c.t.mu.Unlock()
	})
	return err
}

// Read reads from the connection and, if bytes arrive while net/http waits
// for a request, marks the connection as in flight. The first read of a
// quiet spell costs a compare-and-swap on the connection's own word; any
// other read, one atomic load. It also remembers the last bytes read, and
// is where a connection is taken from net/http to be handed off
// (handoff.go).
func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.read(b)
	for {
		w := c.state.Load()
		if w&takeBit == 0 {
			if n == 0 || w&readBit != 0 || !quiet(w) || c.state.CompareAndSwap(w, w|readBit) {
				if n > 0 && c.via != nil && http.ConnState(w&stateMask) != http.StateHijacked {
					c.remember(b[:n])
				}
				return n, err
			}
			continue
		}
		// The hand-off asked for the connection (handoff.go).
		taken, retry := c.take(b, n, err)
		if taken {
			return 0, io.EOF
		}
		if retry {
			n, err = c.read(b)
		}
	}
}

// setFlag sets flag in the state word and reports whether it was clear.
func (c *trackedConn) setFlag(flag uint64) bool {
	for {
		w := c.state.Load()
		if w&flag != 0 {
			return false
		}
		if c.state.CompareAndSwap(w, w|flag) {
			return true
		}
	}
}

// ReadFrom lets net/http use sendfile and splice through the wrapper.
func (c *trackedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// CloseWrite half-closes the connection, as net/http does before closing
// one whose request body it did not read.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// setState records s, clears readBit, counts the change and returns the
// new word. net/http's first report, StateNew, finds the connection New
// already and changes nothing: a hand-off's poke of a connection just
// accepted (its takeBit, with the read deadline in the past) must survive
// it, for net/http reads a new connection without setting a deadline first
// (unless ReadHeaderTimeout is set), and a timeout that Read does not
// recognise as a poke makes net/http close the connection unanswered.
func (c *trackedConn) setState(s http.ConnState) uint64 {
	for {
		old := c.state.Load()
		keep := uint64(h2Bit | toldBit)
		if s == http.StateNew && http.ConnState(old&stateMask) == http.StateNew {
			keep = 1<<countShift - 1 - stateMask
		}
		w := (old>>countShift+1)<<countShift | old&keep | uint64(s)
		if c.state.CompareAndSwap(old, w) {
			return w
		}
	}
}

// connState is installed as http.Server.ConnState. HTTP/2 reports its
// connections through it too, once it has registered them: one that is
// reported after the drain's GOAWAY went out gets its own.
func (t *tracker) connState(c net.Conn, s http.ConnState) {
	if tc := asTracked(c); tc != nil {
		if w := tc.setState(s); w&(h2Bit|toldBit) == h2Bit && t.draining.Load() && tc.setFlag(toldBit) {
			t.goAway()
		}
	}
}

// asTracked finds the trackedConn under c: c itself, or the connection
// under TLS, or under unencrypted HTTP/2 that net/http disguises as TLS to
// hand it to HTTP/2.
func asTracked(c net.Conn) *trackedConn {
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	if u, ok := c.(interface{ UnencryptedNetConn() net.Conn }); ok {
		c = u.UnencryptedNetConn()
	}
	tc, _ := c.(*trackedConn)
	return tc
}

// idleMark remembers when the drain first saw a connection idle, and in
// which state word.
type idleMark struct {
	word  uint64
	since int64 // drain ticks
}

// sweep closes the connections that have been idle (or new and silent) for
// at least grace ticks without a state change, and returns how many
// connections remain. Connections that are serving a request, or whose
// client has begun sending one, are left alone; their responses carry
// "Connection: close". So are HTTP/2 connections, which close once their
// streams are done after the GOAWAY the drain sent them. What is left is
// closed when the drain times out.
func (t *tracker) sweep(marks map[*trackedConn]idleMark, tick, grace int64) int {
	t.mu.Lock()
	var idle []*trackedConn
	for c := range t.conns {
		w := c.state.Load()
		switch m, ok := marks[c]; {
		case !quiet(w) || w&(readBit|h2Bit) != 0:
			delete(marks, c)
		case !ok || m.word != w:
			marks[c] = idleMark{word: w, since: tick}
		case tick-m.since >= grace:
			idle = append(idle, c)
		}
	}
	n := len(t.conns)
	t.mu.Unlock()
	for _, c := range idle {
		// Close only if nothing happened since the check.
		if c.state.Load() == marks[c].word {
			c.Close()
			n--
		}
		delete(marks, c)
	}
	return n
}

// closeAll closes every connection, hijacked ones included.
func (t *tracker) closeAll() {
	t.mu.Lock()
	all := slices.Collect(maps.Keys(t.conns))
	t.mu.Unlock()
	for _, c := range all {
		c.Close()
	}
}

// trackedListener hands out trackedConns.
type trackedListener struct {
	net.Listener
	t   *tracker
	via *handVia // nil: its connections are never handed off
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.t.addVia(c, l.via), nil
}

// count returns how many connections are open.
func (t *tracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}
