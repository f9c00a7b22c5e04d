package graceful

import (
	"net"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
)

// closeConn is a nopConn that remembers being closed.
type closeConn struct {
	nopConn
	closed bool
}

func (c *closeConn) Close() error { c.closed = true; return nil }

// TestSweepRules: the sweep closes a connection that stays silent (new or
// idle) for the grace, and leaves alone one serving a request, one whose
// client has sent part of a request, and one served by HTTP/2.
func TestSweepRules(t *testing.T) {
	tr := newTracker()
	conns := map[string]*closeConn{}
	tracked := map[string]*trackedConn{}
	for _, name := range []string{"new", "idle", "active", "newRead", "idleRead", "h2"} {
		conns[name] = &closeConn{}
		tracked[name] = tr.add(conns[name])
		tr.connState(tracked[name], http.StateNew)
	}
	for _, name := range []string{"idle", "active", "idleRead"} {
		tr.connState(tracked[name], http.StateActive)
	}
	tr.connState(tracked["idle"], http.StateIdle)
	tr.connState(tracked["idleRead"], http.StateIdle)
	tracked["newRead"].Read(make([]byte, 8))
	tracked["idleRead"].Read(make([]byte, 8))
	tracked["h2"].setFlag(h2Bit)
	tr.connState(tracked["h2"], http.StateIdle)

	marks := map[*trackedConn]idleMark{}
	for tick := int64(0); tick <= 3; tick++ {
		tr.sweep(marks, tick, 3)
	}
	for name, c := range conns {
		want := name == "new" || name == "idle"
		assert.Equal(t, want, c.closed, name)
	}

	// A request's bytes are counted once per quiet spell: after it is
	// served, the connection is idle again and swept.
	tr.connState(tracked["idleRead"], http.StateActive)
	tracked["idleRead"].Read(make([]byte, 8)) // a body, while active
	tr.connState(tracked["idleRead"], http.StateIdle)
	for tick := int64(10); tick <= 13; tick++ {
		tr.sweep(marks, tick, 3)
	}
	assert.True(t, conns["idleRead"].closed)
}

// TestReadChangesWord: bytes read while idle change the state word, so
// that a sweep that saw the connection idle before them does not close it
// (its mark, and its check before closing, compare words); bytes read while
// active do not touch the word.
func TestReadChangesWord(t *testing.T) {
	tr := newTracker()
	c := &closeConn{}
	tc := tr.add(c)
	tr.connState(tc, http.StateIdle)
	marks := map[*trackedConn]idleMark{}
	tr.sweep(marks, 0, 1)
	seen := marks[tc].word
	tc.Read(make([]byte, 1))
	assert.NotEqual(t, seen, tc.state.Load())
	tr.sweep(marks, 1, 1)
	tr.sweep(marks, 2, 1)
	assert.False(t, c.closed)

	tr.connState(tc, http.StateActive)
	active := tc.state.Load()
	tc.Read(make([]byte, 1))
	assert.Equal(t, active, tc.state.Load())
}

var _ net.Conn = (*closeConn)(nil)
