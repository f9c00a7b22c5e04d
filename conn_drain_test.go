//go:build linux

package graceful_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"go/version"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gograceful/graceful"
	"github.com/gograceful/graceful/internal/proc"
)

// TestDrainKeepsHalfSentRequests: a client that has sent part of its
// request headers when the drain begins is in flight, not idle. One that
// sends the rest after twice DrainIdleTimeout gets its whole response; one
// that never finishes is cut at ShutdownTimeout, not before. Both for a
// stop (SIGTERM) and for the process a hot restart replaced.
func TestDrainKeepsHalfSentRequests(t *testing.T) {
	_, server := binaries(t)
	const (
		drainIdle = 300 * time.Millisecond
		timeout   = 3 * time.Second
	)
	for _, mode := range []string{"stop", "restart"} {
		t.Run(mode, func(t *testing.T) {
			// The drain as it is without hand-off (with it, the honest
			// connection's response leaves it open, and it moves to the
			// successor: TestHandOff*).
			s := start(t, server, "TS_DRAIN_IDLE="+drainIdle.String(), "TS_SHUTDOWN_TIMEOUT="+timeout.String(), "TS_NO_HANDOFF=1")
			old := s.PID()

			// honest: one whole request first, so that the connection is
			// served and idle, then half of the next request's headers.
			honest, err := net.Dial("tcp", s.Addr())
			require.NoError(t, err)
			defer honest.Close()
			honestR := bufio.NewReader(honest)
			_, err = io.WriteString(honest, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			require.NoError(t, err)
			resp, err := http.ReadResponse(honestR, nil)
			require.NoError(t, err)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			require.Equal(t, 200, resp.StatusCode)
			_, err = io.WriteString(honest, "GET /sleep?ms=1 HTTP/1.1\r\nHost: x\r\n")
			require.NoError(t, err)

			// slowloris: a new connection that never ends its headers.
			slowloris, err := net.Dial("tcp", s.Addr())
			require.NoError(t, err)
			defer slowloris.Close()
			_, err = io.WriteString(slowloris, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
			require.NoError(t, err)

			signaled := time.Now()
			var drainLog string
			if mode == "stop" {
				require.NoError(t, syscall.Kill(old, syscall.SIGTERM))
				drainLog = "shutting down reason=terminated pid=" + strconv.Itoa(old)
			} else {
				_, pid, err := s.Restart(15 * time.Second)
				require.NoError(t, err)
				waitServedBy(t, s, pid)
				drainLog = "handed over; draining pid=" + strconv.Itoa(old)
			}
			waitOutput(t, s, drainLog)
			// The client is slow: it ends its headers well after the
			// drain's idle grace has passed.
			time.Sleep(2 * drainIdle)
			_, err = io.WriteString(honest, "X-End: 1\r\n\r\n")
			require.NoError(t, err)
			honest.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err = http.ReadResponse(honestR, nil)
			if assert.NoError(t, err, "the half-sent request was cut") {
				body, err := io.ReadAll(resp.Body)
				assert.NoError(t, err)
				assert.Equal(t, 200, resp.StatusCode)
				assert.Equal(t, strconv.Itoa(old), resp.Header.Get("X-Pid"), "served by the draining process")
				assert.Equal(t, "slept 1\n", string(body))
				assert.True(t, resp.Close, "the response during the drain closes the connection")
			}

			// The slowloris is cut when the drain times out, not before.
			slowloris.SetReadDeadline(time.Now().Add(timeout + 15*time.Second))
			n, err := slowloris.Read(make([]byte, 1))
			cut := time.Since(signaled)
			assert.Zero(t, n)
			assert.Error(t, err)
			if ne, ok := err.(net.Error); ok {
				assert.False(t, ne.Timeout(), "the slowloris was never cut")
			}
			assert.GreaterOrEqual(t, cut, timeout, "the slowloris was cut before ShutdownTimeout")
			require.NoError(t, proc.WaitGone(old, 15*time.Second))
			stop(t, s)
		})
	}
}

// TestHTTP2GoAwayOnDrain: an HTTP/2 client's connection gets a GOAWAY
// when the drain begins, so that its next request, sent while the old
// process still drains with a long DrainIdleTimeout, is served by the new
// process on a new connection, and a stream in flight at the drain's start
// completes. The old process then exits without waiting out the idle
// grace.
func TestHTTP2GoAwayOnDrain(t *testing.T) {
	_, server := binaries(t)
	const drainIdle = 10 * time.Second
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	s := start(t, server, "TS_TLS_CERT="+certFile, "TS_TLS_KEY="+keyFile, "TS_DRAIN_IDLE="+drainIdle.String())
	old := s.PID()
	var dials atomic.Int32
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Timeout: 15 * time.Second, Transport: tr}
	url := "https://" + s.Addr()

	pidOf := func(path string) (string, string) {
		resp, err := c.Get(url + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, 200, resp.StatusCode)
		require.Equal(t, "HTTP/2.0", resp.Proto)
		return resp.Header.Get("X-Pid"), string(b)
	}
	pid, _ := pidOf("/")
	require.Equal(t, strconv.Itoa(old), pid)
	require.EqualValues(t, 1, dials.Load())

	// A stream in flight when the drain begins, on the same connection:
	// its headers are sent before it sleeps.
	slow, err := c.Get(url + "/sleep?ms=1000")
	require.NoError(t, err)
	defer slow.Body.Close()
	require.Equal(t, "HTTP/2.0", slow.Proto)
	require.EqualValues(t, 1, dials.Load(), "the slow request shares the connection")

	// An idle HTTP/2 connection of our own, to see the GOAWAY arrive.
	watch := dialH2(t, s.Addr(), pool)
	defer watch.Close()

	_, succ, err := s.Restart(15 * time.Second)
	require.NoError(t, err)
	drainSeen := time.Now()
	code, err := watch.awaitGoAway(15 * time.Second)
	require.NoError(t, err, "no GOAWAY on an idle HTTP/2 connection")
	assert.Zero(t, code, "GOAWAY with NO_ERROR")
	assert.Less(t, time.Since(drainSeen), drainIdle, "the GOAWAY came only with the idle grace's end")

	// The next request goes to the successor, on a new connection.
	pid, body := pidOf("/")
	assert.Equal(t, strconv.Itoa(succ), pid, "the request after the drain began was served by the old process: no GOAWAY")
	assert.Equal(t, "hello from "+strconv.Itoa(succ)+"\n", body)
	assert.EqualValues(t, 2, dials.Load(), "the client redialed")

	// The stream in flight completes.
	b, err := io.ReadAll(slow.Body)
	require.NoError(t, err)
	assert.Equal(t, "slept 1000\n", string(b))

	// The old process closed its HTTP/2 connections once their streams
	// were done, without waiting for the idle grace.
	watch.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, err = io.Copy(io.Discard, watch)
	assert.NoError(t, err, "the idle HTTP/2 connection was closed after its GOAWAY")
	require.NoError(t, proc.WaitGone(old, 15*time.Second))
	assert.Less(t, time.Since(drainSeen), drainIdle, "the old process waited out DrainIdleTimeout")
	stop(t, s)
}

// h2Conn is a bare HTTP/2 client connection that sends nothing but its
// preface, to watch what the server sends on an idle connection.
type h2Conn struct {
	net.Conn
	r *bufio.Reader
}

// dialH2 opens an HTTP/2 connection over TLS (unencrypted if pool is nil)
// and waits for the server's SETTINGS, which it sends once it serves the
// connection.
func dialH2(t *testing.T, addr string, pool *x509.CertPool) *h2Conn {
	t.Helper()
	var c net.Conn
	if pool != nil {
		tc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}})
		require.NoError(t, err)
		require.Equal(t, "h2", tc.ConnectionState().NegotiatedProtocol)
		c = tc
	} else {
		var err error
		c, err = net.Dial("tcp", addr)
		require.NoError(t, err)
	}
	// The preface, then an empty SETTINGS frame.
	var err error
	_, err = io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
	require.NoError(t, err)
	h := &h2Conn{Conn: c, r: bufio.NewReader(c)}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, _, err := h.frame()
	require.NoError(t, err)
	require.Equal(t, byte(0x4), typ, "the server's first frame is SETTINGS")
	// Acknowledge it, as a client must.
	_, err = io.WriteString(c, "\x00\x00\x00\x04\x01\x00\x00\x00\x00")
	require.NoError(t, err)
	return h
}

// frame reads one frame and returns its type and payload.
func (h *h2Conn) frame() (byte, []byte, error) {
	var hdr [9]byte
	if _, err := io.ReadFull(h.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
	payload := make([]byte, n)
	_, err := io.ReadFull(h.r, payload)
	return hdr[3], payload, err
}

// awaitGoAway reads frames until a GOAWAY and returns its error code.
func (h *h2Conn) awaitGoAway(timeout time.Duration) (uint32, error) {
	h.SetReadDeadline(time.Now().Add(timeout))
	for {
		typ, p, err := h.frame()
		if err != nil {
			return 0, err
		}
		if typ == 0x7 && len(p) >= 8 {
			return binary.BigEndian.Uint32(p[4:8]), nil
		}
	}
}

// TestUnencryptedHTTP2GoAwayOnDrain: a server that serves HTTP/2 without
// TLS (Protocols.UnencryptedHTTP2) also sends its idle HTTP/2 connections
// a GOAWAY when the drain begins, and closes them without waiting out
// DrainIdleTimeout; an HTTP/1 keep-alive connection is still left its
// grace.
func TestUnencryptedHTTP2GoAwayOnDrain(t *testing.T) {
	if version.Compare(runtime.Version(), "go1.27") >= 0 {
		// README, "Not there yet": from Go 1.27 net/http serves HTTP/2
		// without TLS itself, and graceful's drain closes such
		// connections as HTTP/1 ones, the GOAWAY coming at its end.
		t.Skip("Go 1.27: no GOAWAY at the drain's start for HTTP/2 without TLS")
	}
	const drainIdle = 10 * time.Second
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	l, err := graceful.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &graceful.Server{
		Server: &http.Server{Protocols: &p, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, r.Proto)
		})},
		DrainIdleTimeout: drainIdle,
		ShutdownTimeout:  30 * time.Second,
		Logger:           slog.New(slog.DiscardHandler),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	addr := l.Addr().String()

	watch := dialH2(t, addr, nil)
	defer watch.Close()
	// An HTTP/1 keep-alive connection, served and idle.
	h1, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer h1.Close()
	h1r := bufio.NewReader(h1)
	get1 := func() (*http.Response, error) {
		if _, err := io.WriteString(h1, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return nil, err
		}
		resp, err := http.ReadResponse(h1r, nil)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
		}
		return resp, err
	}
	resp, err := get1()
	require.NoError(t, err)
	require.False(t, resp.Close)

	started := time.Now()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	code, err := watch.awaitGoAway(10 * time.Second)
	require.NoError(t, err, "no GOAWAY on an idle unencrypted HTTP/2 connection")
	assert.Zero(t, code)
	watch.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.Copy(io.Discard, watch)
	assert.NoError(t, err, "the HTTP/2 connection was closed after its GOAWAY")
	assert.Less(t, time.Since(started), drainIdle, "the HTTP/2 connection waited out DrainIdleTimeout")

	// The HTTP/1 connection was left open, and is told to close.
	resp, err = get1()
	require.NoError(t, err, "the idle HTTP/1 connection was closed before DrainIdleTimeout")
	assert.Equal(t, 200, resp.StatusCode)
	assert.True(t, resp.Close)
	require.NoError(t, <-shut)
	assert.ErrorIs(t, <-served, http.ErrServerClosed)
}
