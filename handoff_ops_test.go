//go:build linux

package graceful_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gograceful/graceful/internal/proc"
)

// TestHandOffIdleTimeoutKept: an idle keep-alive connection is closed once
// it has been idle for the server's IdleTimeout, however many hot restarts
// handed it on meanwhile: a hand-off does not give it a fresh IdleTimeout
// (with restarts more frequent than IdleTimeout, it would never be closed).
func TestHandOffIdleTimeoutKept(t *testing.T) {
	_, server := binaries(t)
	const idle = 3 * time.Second
	s := start(t, server, "TS_DRAIN_IDLE=300ms", "TS_IDLE_TIMEOUT="+idle.String())
	o := dialOne(t, s.Addr())
	_, err := o.get()
	require.NoError(t, err)
	last := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		o.c.SetReadDeadline(time.Now().Add(30 * time.Second))
		o.c.Read(make([]byte, 1))
		closed <- time.Since(last)
	}()
	// Restarts more often than the idle timeout: the connection is handed
	// at each one, idle all along.
	handed := 0
	for {
		select {
		case d := <-closed:
			t.Logf("closed after %s idle, %d hot restarts", d.Round(time.Millisecond), handed)
			assert.Positive(t, handed, "handed at least once")
			assert.Less(t, d, idle+1500*time.Millisecond, "closed once idle for IdleTimeout (%s)", idle)
			stop(t, s)
			return
		case <-time.After(700 * time.Millisecond):
		}
		require.Less(t, time.Since(last), 3*idle, "the idle connection is never closed")
		old, _, err := s.Restart(15 * time.Second)
		require.NoError(t, err)
		require.NoError(t, proc.WaitGone(old, 15*time.Second))
		handed++
	}
}

// TestHandOffListenerDropped: a successor that no longer serves one of the
// addresses (a release that drops a listener) is not handed that
// address's connections: they stay with the old process and are drained as
// without hand-off. A keep-alive client whose response came during the
// drain, without "Connection: close", must still get its next request
// answered on that connection (before, the successor accepted the
// connection, could not serve it and closed it: the request was lost).
func TestHandOffListenerDropped(t *testing.T) {
	_, server := binaries(t)
	mode := filepath.Join(t.TempDir(), "mode")
	adminPort, err := proc.FreePort()
	require.NoError(t, err)
	admin := "127.0.0.1:" + strconv.Itoa(adminPort)
	s := start(t, server, "TS_ADMIN="+admin, "TS_MODE_FILE="+mode, "TS_DRAIN_IDLE=5s")
	c, err := net.DialTimeout("tcp", admin, 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	br := bufio.NewReader(c)
	get := func(ms int) (*http.Response, error) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(c, "GET /?ms=%d HTTP/1.1\r\nHost: admin\r\n\r\n", ms); err != nil {
			return nil, err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return nil, err
		}
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, err
	}
	_, err = get(0)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(mode, []byte("noadmin"), 0o644))
	// A request in flight over the restart: its response comes during
	// the drain, while connections are handed off.
	type result struct {
		resp *http.Response
		err  error
	}
	slow := make(chan result, 1)
	go func() { r, err := get(3000); slow <- result{r, err} }()
	time.Sleep(300 * time.Millisecond)
	old, _, err := s.Restart(15 * time.Second)
	require.NoError(t, err)
	r := <-slow
	require.NoError(t, r.err)
	require.False(t, r.resp.Close, "the response came while connections were handed off: no Connection: close")
	time.Sleep(500 * time.Millisecond) // idle: the moment of hand-off
	resp, err := get(0)
	require.NoError(t, err, "a request on a connection left open")
	assert.Equal(t, strconv.Itoa(old), resp.Header.Get("X-Pid"), "the old process serves it")
	assert.True(t, resp.Close, "with Connection: close: it drains the connection")
	assert.Contains(t, s.Output.String(), "refused a batch of connections")
	require.NoError(t, proc.WaitGone(old, 15*time.Second))
	stop(t, s)
}

// TestHandOffDescriptorLimit: an old process close to its descriptor limit
// (each connection taken needs a second descriptor until the successor
// acks it) still hands every idle connection: a take that finds no
// descriptor free is tried again once a batch is acked. Before, the
// connections it could not take then were closed by the drain.
func TestHandOffDescriptorLimit(t *testing.T) {
	const n, limit = 600, "700"
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Skip("needs prlimit (util-linux)")
	}
	_, server := binaries(t)
	s, err := proc.StartWrapped([]string{"prlimit", "--nofile=" + limit + ":" + limit}, server, t.TempDir(), []string{"TS_DRAIN_IDLE=1s"})
	s = tracked(t, s, err)
	conns := make([]*oneConn, 0, n)
	for i := 0; i < n; i++ {
		o := dialOne(t, s.Addr())
		_, err := o.get()
		require.NoError(t, err, "connection %d", i)
		conns = append(conns, o)
	}
	old, next, err := s.Restart(15 * time.Second)
	require.NoError(t, err)
	require.NoError(t, proc.WaitGone(old, 30*time.Second))
	assert.Equal(t, int64(n), loggedHanded(t, s), "every idle connection is handed")
	lost := 0
	for _, o := range conns {
		h, err := o.get()
		if err != nil {
			lost++
			continue
		}
		assert.Equal(t, strconv.Itoa(next), h.Get("X-Pid"))
	}
	assert.Zero(t, lost, "connections closed instead of handed")
	stop(t, s)
}
