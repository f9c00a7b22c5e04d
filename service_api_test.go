//go:build linux

package graceful_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gograceful/graceful"
	"github.com/gograceful/graceful/internal/proc"
)

// fakeService is a server of its own protocol: it accepts connections and
// holds them, counting each with Begin. GracefulStop waits for release (or
// Stop); Stop returns at once.
type fakeService struct {
	svc      *graceful.Service
	mu       sync.Mutex
	conns    []net.Conn
	graceful chan struct{} // closed when GracefulStop is called
	release  chan struct{} // closed to let GracefulStop return
	stopped  chan struct{} // closed when Stop is called
	once     sync.Once
}

func newFakeService(name, addr string) *fakeService {
	f := &fakeService{graceful: make(chan struct{}), release: make(chan struct{}), stopped: make(chan struct{})}
	f.svc = &graceful.Service{Name: name, Addr: addr, Serve: f.serve, GracefulStop: f.gracefulStop, Stop: f.stop}
	return f
}

func (f *fakeService) serve(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		end := f.svc.Begin()
		f.mu.Lock()
		f.conns = append(f.conns, c)
		f.mu.Unlock()
		go func() {
			defer end()
			c.Read(make([]byte, 1)) // until the client or Stop closes it
			c.Close()
		}()
	}
}

func (f *fakeService) gracefulStop() {
	close(f.graceful)
	select {
	case <-f.release:
	case <-f.stopped:
	}
}

func (f *fakeService) stop() {
	f.once.Do(func() { close(f.stopped) })
	f.mu.Lock()
	for _, c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
}

// freeAddr is a loopback address free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	p, err := proc.FreePort()
	require.NoError(t, err)
	return "127.0.0.1:" + strconv.Itoa(p)
}

// assertFree checks that nothing listens on addr any more: the failed
// start left no listener open.
func assertFree(t *testing.T, addr string) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if assert.NoError(t, err, "a listener on %s was left open", addr) {
		l.Close()
	}
}

func fired(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestServiceDrain: a service alone (no HTTP server, as a gRPC server
// alone) is listed in Status with its in-flight work; at Shutdown its
// listener closes, its handlers see Draining, GracefulStop is called, and
// the drain (and Shutdown) ends only once GracefulStop has returned.
func TestServiceDrain(t *testing.T) {
	f := newFakeService("fake", "127.0.0.1:0")
	srv := &graceful.Server{NoSignals: true, ShutdownTimeout: 30 * time.Second}
	require.NoError(t, srv.AddService(f.svc))
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe() }()
	addr := serving(t, srv)

	assert.Error(t, srv.AddService(newFakeService("late", "127.0.0.1:0").svc), "AddService once serving")
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	var st *graceful.Status
	require.Eventually(t, func() bool {
		st, err = srv.Status()
		return err == nil && len(st.Services) == 1 && st.Services[0].InFlight == 1
	}, 10*time.Second, 5*time.Millisecond, "Status lists the service with its connection in flight")
	assert.Equal(t, "fake", st.Services[0].Name)
	assert.Equal(t, "tcp:"+addr, st.Services[0].Listener)
	assert.Equal(t, []string{"tcp:" + addr}, st.Listeners)

	ctx := f.svc.Context(context.Background())
	assert.False(t, fired(graceful.Draining(ctx)))
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	select {
	case <-f.graceful:
	case <-time.After(10 * time.Second):
		t.Fatal("GracefulStop was not called")
	}
	assert.True(t, fired(graceful.Draining(ctx)), "Draining fired in the service's context")
	_, err = net.DialTimeout("tcp", addr, time.Second)
	assert.Error(t, err, "the service's listener is closed")
	select {
	case <-shut:
		t.Fatal("Shutdown returned before GracefulStop did")
	case <-time.After(300 * time.Millisecond):
	}
	close(f.release)
	require.NoError(t, <-shut)
	assert.ErrorIs(t, <-done, http.ErrServerClosed)
	assert.False(t, fired(f.stopped), "Stop is not called when GracefulStop returns in time")
}

// TestServiceStopAtTimeout: a GracefulStop still running at
// ShutdownTimeout is cut short by Stop, and Close calls Stop at once.
func TestServiceStopAtTimeout(t *testing.T) {
	for _, how := range []string{"timeout", "close"} {
		t.Run(how, func(t *testing.T) {
			f := newFakeService("fake", "127.0.0.1:0")
			srv := &graceful.Server{Server: &http.Server{Addr: "127.0.0.1:0", Handler: http.HandlerFunc(hello)},
				NoSignals: true, ShutdownTimeout: 500 * time.Millisecond}
			require.NoError(t, srv.AddService(f.svc))
			done := make(chan error, 1)
			go func() { done <- srv.ListenAndServe() }()
			serving(t, srv)
			st, err := srv.Status()
			require.NoError(t, err)
			require.Len(t, st.Services, 1)
			_, svcAddr, _ := strings.Cut(st.Services[0].Listener, ":")
			c, err := net.Dial("tcp", svcAddr)
			require.NoError(t, err)
			defer c.Close()
			t0 := time.Now()
			if how == "close" {
				require.NoError(t, srv.Close())
				assert.Less(t, time.Since(t0), 400*time.Millisecond, "Close does not wait for GracefulStop")
			} else {
				require.NoError(t, srv.Shutdown(context.Background()))
				assert.GreaterOrEqual(t, time.Since(t0), 450*time.Millisecond, "the drain waited for GracefulStop")
			}
			assert.True(t, fired(f.stopped), "Stop was called")
			assert.ErrorIs(t, <-done, http.ErrServerClosed)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = c.Read(make([]byte, 1))
			assert.Error(t, err, "Stop closed the service's connection")
		})
	}
}

// TestServiceServeFails: a service whose Serve returns while serving fails
// the server, as an HTTP server's does.
func TestServiceServeFails(t *testing.T) {
	boom := errors.New("boom")
	start := make(chan struct{})
	srv := &graceful.Server{Server: &http.Server{Addr: "127.0.0.1:0", Handler: http.HandlerFunc(hello)}, NoSignals: true}
	require.NoError(t, srv.AddService(&graceful.Service{Addr: "127.0.0.1:0", Serve: func(net.Listener) error { <-start; return boom }}))
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe() }()
	serving(t, srv)
	close(start)
	select {
	case err := <-done:
		assert.ErrorIs(t, err, boom)
	case <-time.After(10 * time.Second):
		t.Fatal("the server served on")
	}
}

// typedServer has gRPC's method set.
type typedServer struct{}

func (*typedServer) Serve(net.Listener) error { return nil }
func (*typedServer) GracefulStop()            {}
func (*typedServer) Stop()                    {}

// noSocket wraps a listener and hides its socket, as a PROXY protocol or
// limiting wrapper does.
type noSocket struct{ net.Listener }

// TestServiceWrappedListener: a wrapper of a listener from Listen is served
// (HTTP through Serve, a service through Listener or Wrap), with the socket
// underneath kept to pass on.
func TestServiceWrappedListener(t *testing.T) {
	httpL, err := graceful.Listen("tcp", freeAddr(t))
	require.NoError(t, err)
	svcL, err := graceful.Listen("tcp", freeAddr(t))
	require.NoError(t, err)
	wrapAddr := freeAddr(t)
	var wrapped net.Listener
	echo := func(l net.Listener) error {
		for {
			c, err := l.Accept()
			if err != nil {
				return err
			}
			go func() { c.Write([]byte("hi\n")); c.Close() }()
		}
	}
	srv := &graceful.Server{Server: &http.Server{Handler: http.HandlerFunc(hello)}, NoSignals: true}
	require.NoError(t, srv.AddService(&graceful.Service{Name: "listener", Listener: noSocket{svcL}, Serve: echo}))
	require.NoError(t, srv.AddService(&graceful.Service{Name: "wrap", Addr: wrapAddr, Serve: echo,
		Wrap: func(l net.Listener) (net.Listener, error) { wrapped = noSocket{l}; return wrapped, nil }}))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(noSocket{httpL}) }()
	serving(t, srv)
	assert.Equal(t, "hello", fetch(t, http.DefaultClient, "http://"+httpL.Addr().String()+"/"))
	for _, a := range []string{svcL.Addr().String(), wrapAddr} {
		c, err := net.Dial("tcp", a)
		require.NoError(t, err)
		b := make([]byte, 3)
		_, err = c.Read(b)
		c.Close()
		require.NoError(t, err)
		assert.Equal(t, "hi\n", string(b))
	}
	assert.NotNil(t, wrapped)
	st, err := srv.Status()
	require.NoError(t, err)
	assert.Len(t, st.Listeners, 3)
	require.NoError(t, srv.Shutdown(context.Background()))
	assert.ErrorIs(t, <-done, http.ErrServerClosed)
	assertFree(t, httpL.Addr().String())
	assertFree(t, wrapAddr)
}

// TestServiceBadInput: a nil service, a nil Serve, an address claimed by
// two servers, a wrapper without a socket, a Wrap that fails: a clear
// error, and nothing served or left listening.
func TestServiceBadInput(t *testing.T) {
	srv := &graceful.Server{NoSignals: true}
	assert.ErrorContains(t, srv.AddService(nil), "nil service")
	assert.ErrorContains(t, srv.AddService(&graceful.Service{Name: "x", Addr: "127.0.0.1:0"}), "Serve is nil")
	assert.ErrorContains(t, srv.AddService(graceful.NewService("nil", "127.0.0.1:0", nil)), "Serve is nil")
	assert.ErrorContains(t, srv.AddService(graceful.NewService("typed nil", "127.0.0.1:0", (*typedServer)(nil))), "Serve is nil")
	assert.NoError(t, srv.AddService(graceful.NewService("fine", "127.0.0.1:0", &typedServer{})))
	srv = &graceful.Server{NoSignals: true}
	err := srv.ListenAndServe()
	assert.ErrorContains(t, err, "no service", "a Server with nothing to serve")
	l, err := graceful.Listen("tcp", freeAddr(t))
	require.NoError(t, err)
	only := &graceful.Server{NoSignals: true}
	require.NoError(t, only.AddService(newFakeService("s", "127.0.0.1:0").svc))
	assert.ErrorContains(t, only.Serve(l), "nothing to serve", "Serve without an http.Server")
	l.Close()

	serve := func(l net.Listener) error { select {} }
	cases := []struct {
		name string
		want string
		run  func(srv *graceful.Server, httpAddr string) error
	}{
		{"same address as HTTP", `the server and service "dup" both listen on tcp:`, func(srv *graceful.Server, a string) error {
			srv.AddService(&graceful.Service{Name: "dup", Addr: a, Serve: serve})
			return srv.ListenAndServe()
		}},
		{"same port, any interface", `service "a" and service "b" both listen on`, func(srv *graceful.Server, a string) error {
			other := freeAddr(t)
			_, port, _ := net.SplitHostPort(other)
			srv.AddService(&graceful.Service{Name: "a", Addr: other, Serve: serve})
			srv.AddService(&graceful.Service{Name: "b", Addr: ":" + port, Serve: serve})
			return srv.ListenAndServe()
		}},
		{"one listener twice", `both listen on`, func(srv *graceful.Server, a string) error {
			l, err := graceful.Listen("tcp", freeAddr(t))
			require.NoError(t, err)
			srv.Addr = ""
			srv.AddService(&graceful.Service{Name: "again", Listener: noSocket{l}, Serve: serve})
			return srv.Serve(l)
		}},
		{"wrapper without a socket", "a graceful_test.noSocket listener on", func(srv *graceful.Server, a string) error {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer l.Close()
			srv.AddService(&graceful.Service{Name: "nosock", Listener: noSocket{l}, Serve: serve})
			return srv.ListenAndServe()
		}},
		{"Serve given a wrapper without a socket", "obtain it, or the listener it wraps, from graceful.Listen", func(srv *graceful.Server, a string) error {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer l.Close()
			srv.AddService(&graceful.Service{Name: "fine", Addr: freeAddr(t), Serve: serve})
			return srv.Serve(noSocket{l})
		}},
		{"Wrap fails", `service "w": Wrap: no`, func(srv *graceful.Server, a string) error {
			srv.AddService(&graceful.Service{Name: "w", Addr: freeAddr(t), Serve: serve,
				Wrap: func(net.Listener) (net.Listener, error) { return nil, errors.New("no") }})
			return srv.ListenAndServe()
		}},
		{"Wrap returns nil", `Wrap: returned a nil listener`, func(srv *graceful.Server, a string) error {
			srv.AddService(&graceful.Service{Name: "w", Addr: freeAddr(t), Serve: serve,
				Wrap: func(net.Listener) (net.Listener, error) { return nil, nil }})
			return srv.ListenAndServe()
		}},
		{"same path as Control", `the control socket and service "ctl" both listen on unix:`, func(srv *graceful.Server, a string) error {
			dir := t.TempDir()
			srv.Control = filepath.Join(dir, "ctl.sock")
			srv.AddService(&graceful.Service{Name: "ctl", Addr: "unix:" + srv.Control, Serve: serve})
			err := srv.ListenAndServe()
			_, serr := os.Stat(srv.Control)
			assert.True(t, os.IsNotExist(serr), "a socket file was left at the control socket's path")
			return err
		}},
		{"no address", "neither Addr nor Listener", func(srv *graceful.Server, a string) error {
			srv.AddService(&graceful.Service{Name: "nowhere", Serve: serve})
			return srv.ListenAndServe()
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			httpAddr := freeAddr(t)
			served := false
			srv := &graceful.Server{Server: &http.Server{Addr: httpAddr, Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) { served = true })},
				NoSignals: true}
			errc := make(chan error, 1)
			go func() { errc <- c.run(srv, httpAddr) }()
			select {
			case err := <-errc:
				assert.ErrorContains(t, err, c.want)
				t.Log(err)
			case <-time.After(10 * time.Second):
				srv.Close()
				t.Fatal("the server served")
			}
			assert.False(t, served)
			assertFree(t, httpAddr)
		})
	}
}
