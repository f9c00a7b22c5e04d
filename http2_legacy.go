//go:build !go1.27

package graceful

import (
	"crypto/tls"
	"io"
	"log"
	"net/http"
)

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
