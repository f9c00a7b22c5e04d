//go:build go1.27

package graceful

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// From Go 1.27 net/http serves HTTP/2 itself once it has set it up on a
// server, and the function it leaves in TLSNextProto["h2"] only closes the
// connection. So srv gets a TLSNextProto["h2"] of graceful's that serves
// each HTTP/2 connection with a shadow server of its own: a copy of srv's
// serving settings (Handler, ConnState, contexts, timeouts, HTTP2, error
// log) on which net/http sets HTTP/2 up, serving that one connection. The
// drain's GOAWAY is the shadows' Shutdown.
//
// A server that also serves HTTP/2 without TLS (Protocols) is left to
// net/http: its HTTP/2 connections get their GOAWAY only when the drain
// ends, and the drain closes idle ones after DrainIdleTimeout as HTTP/1
// ones.

// setupHTTP2 gives srv's HTTP/2 connections shadow servers whose Shutdown
// the drain calls, if srv would set up net/http's own HTTP/2: it is
// enabled, without TLS it is not, and srv.TLSNextProto is nil (a server
// that sets it serves its own HTTP/2, or disables it). Call it before srv
// serves, once its Handler and hooks are final.
func (t *tracker) setupHTTP2(srv *http.Server) {
	if srv.TLSNextProto != nil || srv.Protocols != nil && srv.Protocols.UnencryptedHTTP2() {
		return
	}
	if !newShadow(srv, nil, nil).hasHTTP2() {
		// HTTP/2 is disabled (Protocols, GODEBUG=http2server=0), or its
		// set-up failed: srv will find out the same for itself.
		return
	}
	srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){
		"h2": func(_ *http.Server, c *tls.Conn, h http.Handler) { t.serveHTTP2(srv, c, h) },
	}
}

// shadowServer is the shadow of one HTTP/2 connection.
type shadowServer struct{ *http.Server }

// newShadow returns a shadow of srv. closed, if not nil, is called when
// the connection it serves is closed. base, if not nil, is the context srv
// made for the connection (its BaseContext and ConnContext already
// applied): the shadow serves under it, and calls neither hook again.
func newShadow(srv *http.Server, base context.Context, closed func()) shadowServer {
	s := &http.Server{
		Handler:                      srv.Handler,
		DisableGeneralOptionsHandler: srv.DisableGeneralOptionsHandler,
		ReadTimeout:                  srv.ReadTimeout,
		ReadHeaderTimeout:            srv.ReadHeaderTimeout,
		WriteTimeout:                 srv.WriteTimeout,
		IdleTimeout:                  srv.IdleTimeout,
		MaxHeaderBytes:               srv.MaxHeaderBytes,
		HTTP2:                        srv.HTTP2,
		Protocols:                    srv.Protocols,
		ErrorLog:                     srv.ErrorLog,
	}
	if c := srv.TLSConfig; c != nil {
		// What net/http checks of the configuration, and no certificate:
		// the connection comes with its handshake done.
		s.TLSConfig = &tls.Config{CipherSuites: c.CipherSuites, MinVersion: c.MinVersion}
	}
	if base != nil {
		s.BaseContext = func(net.Listener) context.Context { return base }
		// The shadow's Serve put itself under http.ServerContextKey:
		// handlers see srv there, as over HTTP/1.
		s.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, http.ServerContextKey, srv)
		}
	}
	state := srv.ConnState
	s.ConnState = func(c net.Conn, st http.ConnState) {
		switch {
		case st == http.StateClosed:
			if closed != nil {
				closed()
			}
		case st == http.StateNew:
			// srv reported the connection new, and reports it closed.
		case state != nil:
			state(c, st)
		}
	}
	// ServeTLS sets HTTP/2 up on the shadow, then fails to load the key
	// pair "" and "": it never accepts.
	errLog := s.ErrorLog
	s.ErrorLog = log.New(io.Discard, "", 0)
	s.ServeTLS(noListener{}, "", "")
	s.ErrorLog = errLog
	return shadowServer{s}
}

// hasHTTP2 reports whether net/http set HTTP/2 up on the shadow.
func (s shadowServer) hasHTTP2() bool { return s.TLSNextProto["h2"] != nil }

// serveHTTP2 serves c, whose client chose HTTP/2, with a shadow of srv,
// and returns once c is closed. h is what srv passed its TLSNextProto: it
// carries the connection's context.
func (t *tracker) serveHTTP2(srv *http.Server, c *tls.Conn, h http.Handler) {
	if tc := asTracked(c); tc != nil {
		tc.setFlag(h2Bit)
	}
	done := make(chan struct{})
	var once sync.Once
	base := context.Background()
	if bc, ok := h.(interface{ BaseContext() context.Context }); ok {
		base = bc.BaseContext()
	}
	s := newShadow(srv, base, func() { once.Do(func() { close(done) }) })
	// The shadow joins the drain's list only as it takes c: one shut down
	// before that would refuse c, which would then go unanswered. A drain
	// that began meanwhile sends it its GOAWAY once c reports its state.
	take := func() {
		t.mu.Lock()
		t.shadows = append(t.shadows, s.Server)
		t.mu.Unlock()
	}
	defer func() {
		t.mu.Lock()
		for i, x := range t.shadows {
			if x == s.Server {
				t.shadows = append(t.shadows[:i], t.shadows[i+1:]...)
				break
			}
		}
		t.mu.Unlock()
	}()
	l := &oneConn{c: c, done: done, take: take, closed: make(chan struct{})}
	s.Serve(l)
	if !l.taken() {
		// The shadow never served c: a connection must not be left
		// unserved and open.
		c.Close()
		return
	}
	<-done
}

// oneConn is a listener that hands out one connection, then waits for it
// to be closed, or for the listener to be.
type oneConn struct {
	c      net.Conn
	done   chan struct{} // closed once c is
	take   func()        // called as Accept hands out c
	closed chan struct{} // closed by Close
	once   sync.Once
	given  atomic.Bool
}

func (l *oneConn) Accept() (net.Conn, error) {
	if l.given.CompareAndSwap(false, true) {
		l.take()
		return l.c, nil
	}
	select {
	case <-l.done:
	case <-l.closed:
	}
	return nil, net.ErrClosed
}

// Close ends Accept; the connection goes on being served.
func (l *oneConn) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConn) Addr() net.Addr { return l.c.LocalAddr() }

// taken reports whether Accept handed out the connection.
func (l *oneConn) taken() bool { return l.given.Load() }
