package graceful

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
)

// HTTP/2 and the drain.
//
// net/http tells its HTTP/2 connections of a shutdown (a GOAWAY, after
// which a client opens no new stream on the connection, and the server
// closes it once its streams are done) from Server.Shutdown, through the
// functions its HTTP/2 set-up registered with RegisterOnShutdown. The drain
// cannot call the served server's Shutdown: that would also close its idle
// HTTP/1 keep-alive connections at once, which the drain leaves open for
// DrainIdleTimeout. So each served server gets its HTTP/2 from a private
// "shadow" http.Server on which net/http sets it up, and the drain calls
// the shadow's Shutdown: it has no listener and no HTTP/1 connection, so
// all it does is run those functions.
//
// The shadow only lends its TLSNextProto functions, which serve a
// connection with the server net/http passes them (the served one: its
// Handler, ConnState, ErrorLog and HTTP2 settings) and remember it in the
// shadow's HTTP/2 state. Only the idle timeout is taken from the shadow,
// which copies the served server's.

// setupHTTP2 gives srv its HTTP/2 from a shadow server whose Shutdown the
// drain calls, if srv would set up net/http's own HTTP/2: it is enabled,
// and srv.TLSNextProto is nil (a server that sets it serves its own
// HTTP/2, or disables it). Call it before srv serves.
func (t *tracker) setupHTTP2(srv *http.Server) {
	if srv.TLSNextProto != nil {
		return
	}
	shadow := &http.Server{
		Protocols:   srv.Protocols,
		IdleTimeout: srv.IdleTimeout,
		ReadTimeout: srv.ReadTimeout,
		ErrorLog:    log.New(io.Discard, "", 0),
	}
	if c := srv.TLSConfig; c != nil {
		// What net/http checks of the configuration, and no certificate,
		// so that ServeTLS fails right after setting up HTTP/2.
		shadow.TLSConfig = &tls.Config{CipherSuites: c.CipherSuites, MinVersion: c.MinVersion}
	}
	// ServeTLS sets up HTTP/2 on the shadow, then fails to load the key
	// pair "" and "": it never accepts.
	shadow.ServeTLS(noListener{}, "", "")
	if shadow.TLSNextProto["h2"] == nil {
		// HTTP/2 is disabled (Protocols, GODEBUG=http2server=0), or its
		// set-up failed: srv will find out the same for itself.
		return
	}
	srv.TLSNextProto = make(map[string]func(*http.Server, *tls.Conn, http.Handler), len(shadow.TLSNextProto))
	for proto, serve := range shadow.TLSNextProto {
		srv.TLSNextProto[proto] = func(hs *http.Server, c *tls.Conn, h http.Handler) {
			if tc := asTracked(c); tc != nil {
				tc.setFlag(h2Bit)
			}
			serve(hs, c, h)
		}
	}
	t.mu.Lock()
	t.shadows = append(t.shadows, shadow)
	t.mu.Unlock()
}

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
	shadows := t.shadows
	t.mu.Unlock()
	for _, s := range shadows {
		// Immediate: the shadow has no connection to wait for.
		s.Shutdown(context.Background())
	}
}

// noListener is a listener that never accepts.
type noListener struct{}

func (noListener) Accept() (net.Conn, error) { return nil, errors.New("graceful: not a listener") }
func (noListener) Close() error              { return nil }
func (noListener) Addr() net.Addr            { return &net.TCPAddr{} }
