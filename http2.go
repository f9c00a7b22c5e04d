package graceful

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
)

// HTTP/2 and the drain.
//
// net/http tells its HTTP/2 connections of a shutdown (a GOAWAY, after
// which a client opens no new stream on the connection, and the server
// closes it once its streams are done) from Server.Shutdown, through the
// functions its HTTP/2 set-up registered with RegisterOnShutdown. The drain
// cannot call the served server's Shutdown: that would also close its idle
// HTTP/1 keep-alive connections at once (and end keep-alive on the busy
// ones), which the drain leaves open for DrainIdleTimeout or hands to the
// successor. So the served server's HTTP/2 connections are served through
// private "shadow" http.Servers on which net/http sets HTTP/2 up, and the
// drain calls the shadows' Shutdown: they have no HTTP/1 connection, so all
// it does is send the GOAWAYs. How a shadow serves depends on the Go
// release: up to Go 1.26 one shadow per server lends its TLSNextProto
// functions (http2_legacy.go); from Go 1.27, whose HTTP/2 lives inside
// net/http, each HTTP/2 connection is served by a shadow of its own
// (http2_go127.go).

// startDrain sends a GOAWAY to every HTTP/2 connection. One that HTTP/2
// has not registered yet gets its own when it first reports its state.
func (t *tracker) startDrain() {
	t.draining.Store(true)
	t.mu.Lock()
	for c := range t.conns {
		// New: HTTP/2 may not have registered it yet.
		if w := c.state.Load(); w&h2Bit != 0 && http.ConnState(w&stateMask) != http.StateNew {
			c.setFlag(toldBit)
		}
	}
	t.mu.Unlock()
	t.goAway()
}

// goAway has HTTP/2 send a GOAWAY on each of its connections that has not
// had one. It does not wait for them.
func (t *tracker) goAway() {
	t.mu.Lock()
	// A copy: a closing connection removes its shadow from t.shadows in
	// place (http2_go127.go), while this goes through them unlocked.
	shadows := slices.Clone(t.shadows)
	t.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // send the GOAWAYs; wait for nothing
	for _, s := range shadows {
		s.Shutdown(ctx)
	}
}

// noListener is a listener that never accepts.
type noListener struct{}

func (noListener) Accept() (net.Conn, error) { return nil, errors.New("graceful: not a listener") }
func (noListener) Close() error              { return nil }
func (noListener) Addr() net.Addr            { return &net.TCPAddr{} }
