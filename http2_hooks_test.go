//go:build linux

package graceful_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gograceful/graceful"
)

type hookKey struct{}

// TestHTTP2Hooks: over HTTP/2, the program's BaseContext is called once per
// listener and its ConnContext once per connection, as net/http does, and
// a handler finds the program's own *http.Server under
// http.ServerContextKey, with the value its ConnContext stored; whichever
// way graceful serves HTTP/2 for the Go release.
func TestHTTP2Hooks(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	l, err := graceful.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var bases, conns atomic.Int32
	hs := &http.Server{}
	hs.BaseContext = func(net.Listener) context.Context {
		bases.Add(1)
		return context.Background()
	}
	hs.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, hookKey{}, conns.Add(1))
	}
	hs.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s, _ := r.Context().Value(http.ServerContextKey).(*http.Server); s != hs {
			http.Error(w, "not the program's server", http.StatusInternalServerError)
			return
		}
		if _, ok := r.Context().Value(hookKey{}).(int32); !ok {
			http.Error(w, "no ConnContext value", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, r.Proto)
	})
	srv := &graceful.Server{Server: hs, NoSignals: true}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(l, certFile, keyFile) }()
	serving(t, srv)
	const n = 6
	for i := 0; i < n; i++ {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
		c := &http.Client{Transport: tr}
		assert.Equal(t, "HTTP/2.0", fetch(t, c, "https://"+l.Addr().String()+"/"))
		tr.CloseIdleConnections()
	}
	require.NoError(t, srv.Shutdown(context.Background()))
	<-done
	// Once per listener: the one served and the one of handed-in
	// connections, not once more per connection.
	assert.LessOrEqual(t, bases.Load(), int32(2), "BaseContext called per HTTP/2 connection")
	assert.EqualValues(t, n, conns.Load(), "ConnContext calls for %d HTTP/2 connections", n)
}

// TestHTTP2OptionsStar: a server with DisableGeneralOptionsHandler passes
// "OPTIONS *" to its Handler over HTTP/2 too, as over HTTP/1.
func TestHTTP2OptionsStar(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	l, err := graceful.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &graceful.Server{Server: &http.Server{
		DisableGeneralOptionsHandler: true,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Handler", "mine")
			io.WriteString(w, r.Proto)
		}),
	}, NoSignals: true}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(l, certFile, keyFile) }()
	serving(t, srv)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodOptions, "https://"+l.Addr().String(), nil)
	require.NoError(t, err)
	req.URL.Opaque = "*"
	res, err := (&http.Client{Transport: tr}).Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Equal(t, "HTTP/2.0", res.Proto)
	assert.Equal(t, "mine", res.Header.Get("X-Handler"), "OPTIONS * never reached the Handler (%d %q)", res.StatusCode, b)
	require.NoError(t, srv.Shutdown(context.Background()))
	<-done
}
