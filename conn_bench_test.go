package graceful

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// nopConn is a net.Conn that does nothing, so that the benchmarks below
// time only the bookkeeping the drain needs.
type nopConn struct{}

func (nopConn) Read(b []byte) (int, error)       { return len(b), nil }
func (nopConn) Write(b []byte) (int, error)      { return len(b), nil }
func (nopConn) Close() error                     { return nil }
func (nopConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (nopConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (nopConn) SetDeadline(time.Time) error      { return nil }
func (nopConn) SetReadDeadline(time.Time) error  { return nil }
func (nopConn) SetWriteDeadline(time.Time) error { return nil }

// BenchmarkConnLifecycle is what a new connection with one request costs
// the tracker: accept, the state changes net/http reports, close.
func BenchmarkConnLifecycle(b *testing.B) {
	t := newTracker()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c := t.add(nopConn{})
			t.connState(c, http.StateNew)
			t.connState(c, http.StateActive)
			t.connState(c, http.StateIdle)
			c.Close()
			t.connState(c, http.StateClosed)
		}
	})
}

// BenchmarkRequestBookkeeping is what one more request on a keep-alive
// connection costs: two state changes, the handler wrapper (the drain
// check and the request counts) and two reads through the tracked
// connection, one while idle (net/http waiting for the next request) and
// one while active.
func BenchmarkRequestBookkeeping(b *testing.B) {
	r := &runner{track: newTracker()}
	c := r.track.add(nopConn{})
	wrapped := r.wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	w, req := httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil)
	buf := make([]byte, 64)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		c.Read(buf)
		r.track.connState(c, http.StateActive)
		c.Read(buf)
		wrapped.ServeHTTP(w, req)
		r.track.connState(c, http.StateIdle)
	}
}
