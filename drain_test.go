package graceful

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gograceful/graceful/internal/loadgen"
)

// serveInProcess serves h on a loopback port from this test process and
// returns the server, its address and a channel with Serve's result.
func serveInProcess(t *testing.T, h http.Handler) (*Server, string, chan error) {
	t.Helper()
	l, err := Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &Server{Server: &http.Server{Handler: h}, DrainIdleTimeout: 200 * time.Millisecond, ShutdownTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return srv, l.Addr().String(), done
}

func shutdownAsync(srv *Server) chan error {
	ch := make(chan error, 1)
	go func() { ch <- srv.Shutdown(context.Background()) }()
	return ch
}

// TestDrainAnnouncesClose: a keep-alive connection that is idle when the
// drain begins and is used within DrainIdleTimeout gets its response, marked
// "Connection: close"; one that stays idle is closed after the grace.
func TestDrainAnnouncesClose(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	srv, addr, served := serveInProcess(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		fmt.Fprint(w, "ok")
	}))

	kept, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer kept.Close()
	keptR := bufio.NewReader(kept)
	fmt.Fprint(kept, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(keptR, nil)
	require.NoError(t, err)
	io.ReadAll(resp.Body)
	require.False(t, resp.Close)
	idle := &loadgen.Client{Network: "tcp", Addr: addr, Timeout: 5 * time.Second}
	defer idle.Close()
	s := idle.Do("POST", "/", []byte("x"), true)
	require.Empty(t, s.Fail, s.Detail)
	// A request in flight when the drain begins.
	slow := make(chan *http.Response, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/slow")
		if err == nil {
			io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		slow <- resp
	}()
	<-entered

	start := time.Now()
	shut := shutdownAsync(srv)
	require.Eventually(t, func() bool { return srv.runner() != nil && srv.runner().draining.Load() }, 5*time.Second, time.Millisecond)

	// The idle keep-alive connection is still usable, and told to close.
	fmt.Fprint(kept, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
	resp, err = http.ReadResponse(keptR, nil)
	require.NoError(t, err)
	io.ReadAll(resp.Body)
	assert.Equal(t, 200, resp.StatusCode)
	assert.True(t, resp.Close, "a response to a request begun during the drain carries Connection: close")

	// The request in flight when the drain began completes.
	close(release)
	resp = <-slow
	require.NotNil(t, resp)
	assert.Equal(t, 200, resp.StatusCode)

	require.NoError(t, <-shut)
	took := time.Since(start)
	assert.GreaterOrEqual(t, took, 200*time.Millisecond, "the idle connection got its grace")
	assert.Less(t, took, 3*time.Second)
	assert.ErrorIs(t, <-served, http.ErrServerClosed)

	// The connection that stayed idle was closed by the server.
	s = idle.Do("POST", "/", []byte("x"), true)
	assert.NotEmpty(t, s.Fail)
}

// TestDrainingChannel: a streaming handler learns of the drain and ends.
func TestDrainingChannel(t *testing.T) {
	srv, addr, served := serveInProcess(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "start")
		w.(http.Flusher).Flush()
		select {
		case <-Draining(r.Context()):
			fmt.Fprintln(w, "draining")
		case <-time.After(10 * time.Second):
			fmt.Fprintln(w, "timeout")
		}
	}))
	resp, err := http.Get("http://" + addr + "/")
	require.NoError(t, err)
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "start\n", line)
	start := time.Now()
	shut := shutdownAsync(srv)
	rest, _ := io.ReadAll(br)
	resp.Body.Close()
	assert.Equal(t, "draining\n", string(rest))
	require.NoError(t, <-shut)
	assert.Less(t, time.Since(start), 2*time.Second)
	assert.ErrorIs(t, <-served, http.ErrServerClosed)
	assert.Nil(t, Draining(context.Background()))
}

// TestDrainDeadline: a request that outlives ShutdownTimeout is cut off and
// the server still returns.
func TestDrainDeadline(t *testing.T) {
	srv, addr, served := serveInProcess(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "start")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	srv.ShutdownTimeout = 300 * time.Millisecond
	resp, err := http.Get("http://" + addr + "/")
	require.NoError(t, err)
	defer resp.Body.Close()
	start := time.Now()
	require.NoError(t, srv.Shutdown(context.Background()))
	assert.Less(t, time.Since(start), 2*time.Second)
	assert.ErrorIs(t, <-served, http.ErrServerClosed)
	_, err = io.ReadAll(resp.Body)
	assert.Error(t, err)
}

func TestServerErrors(t *testing.T) {
	srv := &Server{Server: &http.Server{Addr: "127.0.0.1:0"}}
	assert.ErrorIs(t, srv.Restart(), ErrNotServing)
	assert.NoError(t, srv.Shutdown(context.Background()))

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	busy := &Server{Server: &http.Server{Addr: l.Addr().String()}}
	err = busy.ListenAndServe()
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), "graceful: listen tcp "), err.Error())

	assert.Error(t, (&Server{}).ListenAndServe())
}

func TestHooksContained(t *testing.T) {
	var order []int
	done := make(chan struct{})
	start := time.Now()
	runHooks(discardLogger(), []func(){
		func() { order = append(order, 1) },
		func() { panic("boom") },
		func() { <-done },
		func() { order = append(order, 4) },
	}, 100*time.Millisecond)
	close(done)
	assert.Equal(t, []int{1, 4}, order)
	assert.Less(t, time.Since(start), time.Second)
}

// hookConn is a connection that calls onClose when it is closed.
type hookConn struct {
	net.Conn
	onClose func()
}

func (c *hookConn) Close() error {
	c.onClose()
	return c.Conn.Close()
}

// idleConns adds n connections to tr, idle, each of which calls onClose
// with itself when it is closed.
func idleConns(t *testing.T, tr *tracker, n int, onClose func(*trackedConn)) []*trackedConn {
	var conns []*trackedConn
	for i := 0; i < n; i++ {
		a, b := net.Pipe()
		t.Cleanup(func() { b.Close() })
		hc := &hookConn{Conn: a}
		tc := tr.add(hc)
		hc.onClose = func() { onClose(tc) }
		tc.setState(http.StateIdle)
		conns = append(conns, tc)
	}
	return conns
}

// TestSweepRechecksBeforeClosing: the drain closes a connection only if it
// is still idle when it closes it. Here a request arrives on the other
// connection while the sweep closes the first one it found idle: that
// other connection must stay open, or the request is lost.
func TestSweepRechecksBeforeClosing(t *testing.T) {
	tr := newTracker()
	closed := map[*trackedConn]bool{}
	var conns []*trackedConn
	conns = idleConns(t, tr, 2, func(me *trackedConn) {
		closed[me] = true
		for _, c := range conns {
			if !closed[c] {
				c.setState(http.StateActive) // a request begins on it
			}
		}
	})
	marks := map[*trackedConn]idleMark{}
	const grace = 3
	for tick := int64(0); tick < grace; tick++ {
		require.Equal(t, 2, tr.sweep(marks, tick, grace), "closed before the grace at tick %d", tick)
	}
	assert.Equal(t, 1, tr.sweep(marks, grace, grace), "connections left after the grace")
	assert.Len(t, closed, 1, "a connection that became active after the sweep looked at it was closed")
}

// TestSweepCountsIdleFromLastUse: a connection's idle time starts again at
// each use, even one the sweep did not see between two ticks.
func TestSweepCountsIdleFromLastUse(t *testing.T) {
	tr := newTracker()
	closed := 0
	conns := idleConns(t, tr, 1, func(*trackedConn) { closed++ })
	marks := map[*trackedConn]idleMark{}
	const grace = 3
	require.Equal(t, 1, tr.sweep(marks, 0, grace))
	// A whole request between ticks 0 and 1.
	conns[0].setState(http.StateActive)
	conns[0].setState(http.StateIdle)
	for tick := int64(1); tick <= grace; tick++ {
		require.Equal(t, 1, tr.sweep(marks, tick, grace), "closed at tick %d, idle since tick 1 with a grace of %d", tick, grace)
	}
	assert.Zero(t, closed)
	assert.Equal(t, 0, tr.sweep(marks, grace+1, grace), "idle for the grace since its last use")
	assert.Equal(t, 1, closed)
}
