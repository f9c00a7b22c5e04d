//go:build linux

package graceful_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gograceful/graceful"
)

// API-level tests, in this process: the net/http method set on a
// graceful.Server behaves gracefully, and the server fits programs that
// manage their lifecycle with contexts.

// serving waits until srv's loop answers and returns its first address.
func serving(t *testing.T, srv *graceful.Server) string {
	t.Helper()
	var st *graceful.Status
	require.Eventually(t, func() bool {
		var err error
		st, err = srv.Status()
		return err == nil
	}, 10*time.Second, 5*time.Millisecond, "the server never served")
	_, addr, _ := strings.Cut(st.Listeners[0], ":")
	return addr
}

func fetch(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	res, err := c.Get(url)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode, string(b))
	return string(b)
}

func hello(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }

// TestCloseEndsServe: Close, promoted from http.Server before, now cuts
// in-flight requests and ends ListenAndServe with http.ErrServerClosed
// itself, so the README's `err != http.ErrServerClosed` idiom holds.
func TestCloseEndsServe(t *testing.T) {
	started := make(chan struct{})
	srv := &graceful.Server{Server: &http.Server{Addr: "127.0.0.1:0", Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
	})}, NoSignals: true}
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe() }()
	addr := serving(t, srv)
	reqErr := make(chan error, 1)
	go func() {
		res, err := http.Get("http://" + addr + "/")
		if err == nil {
			res.Body.Close()
		}
		reqErr <- err
	}()
	<-started
	t0 := time.Now()
	require.NoError(t, srv.Close())
	assert.Less(t, time.Since(t0), 2*time.Second, "Close does not wait for requests")
	select {
	case err := <-done:
		assert.True(t, err == http.ErrServerClosed, "ListenAndServe returned %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("ListenAndServe did not return after Close")
	}
	assert.Error(t, <-reqErr, "the in-flight request was cut")
	_, err := net.Dial("tcp", addr)
	assert.Error(t, err, "no longer listening")
}

// TestRunUnderContext: Run serves until its context is done, then drains
// (a request in flight completes) and returns nil.
func TestRunUnderContext(t *testing.T) {
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/", hello)
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "slow")
	})
	srv := &graceful.Server{Server: &http.Server{Addr: "127.0.0.1:0", Handler: mux}, NoSignals: true}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	addr := serving(t, srv)
	assert.Equal(t, "hello", fetch(t, http.DefaultClient, "http://"+addr+"/"))
	slow := make(chan string, 1)
	go func() { slow <- fetch(t, &http.Client{}, "http://"+addr+"/slow") }()
	require.Eventually(t, func() bool { st, _ := srv.Status(); return st != nil && st.RequestsInFlight == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	require.Eventually(t, func() bool { st, err := srv.Status(); return err == nil && st.State == "draining" }, 5*time.Second, time.Millisecond)
	close(release)
	assert.Equal(t, "slow", <-slow, "the request in flight completed")
	select {
	case err := <-done:
		assert.NoError(t, err, "a cancelled context is a clean stop")
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
}

// TestNoSignals: a program that keeps signals to itself gets them; the
// server does not restart or stop on them.
func TestNoSignals(t *testing.T) {
	mine := make(chan os.Signal, 2)
	signal.Notify(mine, syscall.SIGUSR2, syscall.SIGTERM)
	defer signal.Stop(mine)
	srv := &graceful.Server{Server: &http.Server{Addr: "127.0.0.1:0", Handler: http.HandlerFunc(hello)}, NoSignals: true}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	addr := serving(t, srv)
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGUSR2))
	<-mine
	st, err := srv.Status()
	require.NoError(t, err)
	assert.Nil(t, st.LastRestart, "no restart on a signal the program keeps")
	assert.Equal(t, "hello", fetch(t, http.DefaultClient, "http://"+addr+"/"))
	// The program's own SIGTERM handling (signal.NotifyContext) stops it.
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGTERM))
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
}

// TestRegisterOnShutdown: hooks registered the net/http way run when the
// drain begins, while a request is still in flight, not after it.
func TestRegisterOnShutdown(t *testing.T) {
	release := make(chan struct{})
	var inflight atomic.Int32
	srv := &graceful.Server{Server: &http.Server{Addr: "127.0.0.1:0", Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inflight.Add(1)
		<-release
	})}, NoSignals: true}
	called := make(chan int32, 1)
	srv.RegisterOnShutdown(func() { called <- inflight.Load() })
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe() }()
	addr := serving(t, srv)
	go func() {
		if res, err := http.Get("http://" + addr + "/"); err == nil {
			res.Body.Close()
		}
	}()
	require.Eventually(t, func() bool { return inflight.Load() == 1 }, 5*time.Second, time.Millisecond)
	go srv.Shutdown(context.Background())
	select {
	case n := <-called:
		assert.Equal(t, int32(1), n, "called with the request still in flight")
	case <-time.After(5 * time.Second):
		t.Fatal("the OnShutdown hook never ran")
	}
	close(release)
	assert.True(t, <-done == http.ErrServerClosed)
}

// TestServeTLS: ServeTLS, promoted from http.Server before, serves through
// graceful: it drains on Shutdown and answers Status.
func TestServeTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	l, err := graceful.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &graceful.Server{Server: &http.Server{Handler: http.HandlerFunc(hello)}, NoSignals: true}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(l, certFile, keyFile) }()
	serving(t, srv)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	assert.Equal(t, "hello", fetch(t, c, "https://"+l.Addr().String()+"/"))
	require.NoError(t, srv.Shutdown(context.Background()))
	err = <-done
	assert.True(t, errors.Is(err, http.ErrServerClosed), "ServeTLS returned %v", err)
}

// TestHTTP2ConnStateOnce: the program's ConnState hook sees an HTTP/2
// connection reported new once and closed once, and its requests served
// with the program's Handler over TLS, whichever way graceful serves HTTP/2
// for the Go release (from Go 1.27, each connection through a server of its
// own).
func TestHTTP2ConnStateOnce(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	l, err := graceful.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var mu sync.Mutex
	seen := map[http.ConnState]int{}
	srv := &graceful.Server{Server: &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.TLS == nil {
				http.Error(w, "no TLS state", http.StatusInternalServerError)
				return
			}
			io.WriteString(w, r.Proto)
		}),
		ConnState: func(_ net.Conn, st http.ConnState) {
			mu.Lock()
			seen[st]++
			mu.Unlock()
		},
	}, NoSignals: true}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(l, certFile, keyFile) }()
	serving(t, srv)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	c := &http.Client{Transport: tr}
	for i := 0; i < 3; i++ {
		assert.Equal(t, "HTTP/2.0", fetch(t, c, "https://"+l.Addr().String()+"/"))
	}
	tr.CloseIdleConnections()
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return seen[http.StateClosed] > 0
	}, 10*time.Second, 5*time.Millisecond, "the connection was never reported closed")
	require.NoError(t, srv.Shutdown(context.Background()))
	<-done
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, 1, seen[http.StateNew], "reported new: %v", seen)
	assert.Equal(t, 1, seen[http.StateClosed], "reported closed: %v", seen)
}
