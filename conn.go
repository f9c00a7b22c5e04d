package graceful

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// tracker knows every connection the process has accepted and what state
// net/http last reported for it. The map is touched once when a connection
// is accepted and once when it is closed; a request only stores to the
// connection's own atomic word, so keep-alive traffic takes no shared lock.
type tracker struct {
	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

func newTracker() *tracker {
	return &tracker{conns: map[*trackedConn]struct{}{}}
}

// trackedConn is a net.Conn that the tracker can see. Its state word holds
// the http.ConnState in the low byte and a count of state changes above it,
// so that the drain can tell a connection that stayed idle from one that was
// used in between.
type trackedConn struct {
	net.Conn
	t     *tracker
	state atomic.Uint64
	once  sync.Once
}

func (t *tracker) add(c net.Conn) *trackedConn {
	tc := &trackedConn{Conn: c, t: t}
	tc.state.Store(uint64(http.StateNew))
	t.mu.Lock()
	t.conns[tc] = struct{}{}
	t.mu.Unlock()
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

func (c *trackedConn) setState(s http.ConnState) {
	for {
		old := c.state.Load()
		if c.state.CompareAndSwap(old, (old>>8+1)<<8|uint64(s)) {
			return
		}
	}
}

// connState is installed as http.Server.ConnState.
func (t *tracker) connState(c net.Conn, s http.ConnState) {
	if tc := asTracked(c); tc != nil {
		tc.setState(s)
	}
}

func asTracked(c net.Conn) *trackedConn {
	switch v := c.(type) {
	case *trackedConn:
		return v
	case *tls.Conn:
		tc, _ := v.NetConn().(*trackedConn)
		return tc
	}
	return nil
}

// idleMark remembers when the drain first saw a connection idle, and in
// which state word.
type idleMark struct {
	word  uint64
	since int64 // drain ticks
}

// sweep closes the connections that have been idle (or new and silent) for
// at least grace ticks without a state change, and returns how many
// connections remain. Connections that are serving a request are left
// alone; their responses carry "Connection: close".
func (t *tracker) sweep(marks map[*trackedConn]idleMark, tick, grace int64) int {
	t.mu.Lock()
	var idle []*trackedConn
	for c := range t.conns {
		w := c.state.Load()
		switch http.ConnState(w & 0xff) {
		case http.StateNew, http.StateIdle:
			m, ok := marks[c]
			if !ok || m.word != w {
				marks[c] = idleMark{word: w, since: tick}
			} else if tick-m.since >= grace {
				idle = append(idle, c)
			}
		default:
			delete(marks, c)
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
	all := make([]*trackedConn, 0, len(t.conns))
	for c := range t.conns {
		all = append(all, c)
	}
	t.mu.Unlock()
	for _, c := range all {
		c.Close()
	}
}

// trackedListener hands out trackedConns.
type trackedListener struct {
	net.Listener
	t *tracker
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.t.add(c), nil
}

// count returns how many connections are open.
func (t *tracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}
