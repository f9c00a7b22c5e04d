//go:build linux

package graceful_test

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gograceful/graceful/internal/loadgen"
	"github.com/gograceful/graceful/internal/proc"
)

// oneConn is a keep-alive client on a single TCP connection that it never
// replaces: any error, or a response that says "Connection: close", is the
// end of it.
type oneConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialOne(t *testing.T, addr string) *oneConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return &oneConn{c: c, br: bufio.NewReader(c)}
}

// get sends GET / and returns the response's headers.
func (o *oneConn) get() (http.Header, error) {
	o.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(o.c, "GET / HTTP/1.1\r\nHost: one\r\n\r\n"); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(o.br, nil)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 || string(b) != "hello from "+resp.Header.Get("X-Pid")+"\n" {
		return nil, fmt.Errorf("status %d, body %q", resp.StatusCode, b)
	}
	if resp.Close {
		return resp.Header, fmt.Errorf("the response from %s said Connection: close", resp.Header.Get("X-Pid"))
	}
	return resp.Header, nil
}

// local is the client's side of the connection: the same port across
// restarts is the same TCP connection.
func (o *oneConn) local() string { return o.c.LocalAddr().String() }

// TestHandOffOneConnectionHot: a keep-alive client keeps its one TCP
// connection across 10 hot restarts, sending all along, and gets every
// response on it, from each new process in turn.
func TestHandOffOneConnectionHot(t *testing.T) {
	_, server := binaries(t)
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	s := start(t, server, "TS_DRAIN_IDLE=300ms", "TS_CONTROL="+sock)
	o := dialOne(t, s.Addr())
	port := o.local()
	h, err := o.get()
	require.NoError(t, err)
	pid := s.PID()
	require.Equal(t, strconv.Itoa(pid), h.Get("X-Pid"))
	n := 1
	for i := 1; i <= 10; i++ {
		old, next, err := s.Restart(15 * time.Second)
		require.NoError(t, err, "restart %d", i)
		require.Equal(t, pid, old)
		// Requests all along: on the old process, then, once handed, on
		// the new one, on the same connection.
		deadline := time.Now().Add(15 * time.Second)
		for {
			h, err := o.get()
			require.NoError(t, err, "request %d, restart %d: the connection must survive", n, i)
			n++
			if h.Get("X-Pid") == strconv.Itoa(next) {
				break
			}
			require.Equal(t, strconv.Itoa(old), h.Get("X-Pid"), "only the old or the new process answers")
			require.True(t, time.Now().Before(deadline), "restart %d: the connection was never handed to %d", i, next)
			time.Sleep(2 * time.Millisecond)
		}
		require.NoError(t, proc.WaitGone(old, 15*time.Second), "the old process finishes its drain")
		pid = next
	}
	assert.Equal(t, port, o.local())
	assert.GreaterOrEqual(t, loggedHanded(t, s), int64(1), "the log counts the connection handed")
	st := ctlStats(t, sock)
	assert.GreaterOrEqual(t, st.ConnsHanded, int64(1), "Status counts the connections the predecessor handed")
	t.Logf("%d responses on one connection across 10 hot restarts", n)
	stop(t, s)
}

// loggedHanded is the count of connections handed that the last old
// process logged at the end of its drain.
func loggedHanded(t *testing.T, s *proc.Server) int64 {
	t.Helper()
	out := s.Output.String()
	i := strings.LastIndex(out, "connections handed over")
	require.GreaterOrEqual(t, i, 0, "the log reports the connections handed over")
	line, _, _ := strings.Cut(out[i:], "\n")
	_, v, ok := strings.Cut(line, " handed=")
	require.True(t, ok, line)
	v, _, _ = strings.Cut(v, " ")
	n, _ := strconv.ParseInt(v, 10, 64)
	return n
}

// TestHandOffOneConnectionPhased: in a cluster of 2 workers, one TCP
// connection lives across 10 phased restarts, served after each by a
// worker of the new generation.
func TestHandOffOneConnectionPhased(t *testing.T) {
	_, server := binaries(t)
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	s := start(t, server, "TS_WORKERS=2", "TS_DRAIN_IDLE=300ms", "TS_CONTROL="+sock)
	master := s.PID()
	waitAllGen(t, s, 0)
	o := dialOne(t, s.Addr())
	port := o.local()
	n := 0
	pids := map[string]bool{}
	for g := 1; g <= 10; g++ {
		require.NoError(t, syscall.Kill(master, syscall.SIGUSR1))
		done := fmt.Sprintf("phased restart complete gen=%d ", g)
		deadline := time.Now().Add(30 * time.Second)
		for {
			h, err := o.get()
			require.NoError(t, err, "request %d, phase %d: the connection must survive", n, g)
			n++
			if h.Get("X-Gen") == strconv.Itoa(g) && strings.Contains(s.Output.String(), done) {
				pids[h.Get("X-Pid")] = true
				break
			}
			require.True(t, time.Now().Before(deadline), "phase %d: the connection never reached a worker of the new generation", g)
			time.Sleep(2 * time.Millisecond)
		}
	}
	assert.Equal(t, port, o.local())
	assert.GreaterOrEqual(t, len(pids), 10, "a new worker PID after every phase")
	assert.Contains(t, s.Output.String(), "worker handed its connections")
	// The last phase's count, in the master's Status: the worker that had
	// the connection handed it once (the log line may come just after).
	assert.Eventually(t, func() bool { return ctlStats(t, sock).ConnsHanded >= 1 }, 10*time.Second, 20*time.Millisecond,
		"Status counts the connections handed in the last phase")
	t.Logf("%d responses on one connection across 10 phased restarts", n)
	stop(t, s)
}

// TestHandOffCarelessIdleClients: clients that reuse an idle connection
// without any check that it is still open, after random gaps around
// DrainIdleTimeout, across hot restarts: no request is lost. (Without
// hand-off, those that send as the drain closes their connection lose
// their request: the test runs that case too, and expects losses, so
// that it is known to tell.)
func TestHandOffCarelessIdleClients(t *testing.T) {
	_, server := binaries(t)
	for _, handOff := range []bool{true, false} {
		t.Run(fmt.Sprintf("handoff=%v", handOff), func(t *testing.T) {
			idle := 200 * time.Millisecond
			env := []string{"TS_DRAIN_IDLE=" + idle.String()}
			if !handOff {
				env = append(env, "TS_NO_HANDOFF=1")
			}
			s := start(t, server, env...)
			const clients = 40
			stopLoad := make(chan struct{})
			var mu sync.Mutex
			var sent, lost int
			var details []string
			var wg sync.WaitGroup
			for i := 0; i < clients; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(i), 11))
					c := &loadgen.Client{Network: "tcp", Addr: s.Addr(), Timeout: 10 * time.Second}
					defer c.Close()
					for k := 0; k < 400; k++ {
						select {
						case <-stopLoad:
							return
						case <-time.After(time.Duration(rng.Float64() * 2 * float64(idle))):
						}
						smp := c.Do("GET", "/", nil, true)
						mu.Lock()
						sent++
						if smp.Fail != "" {
							lost++
							if len(details) < 5 {
								details = append(details, smp.Fail+": "+smp.Detail)
							}
						}
						mu.Unlock()
					}
				}(i)
			}
			time.Sleep(500 * time.Millisecond)
			for i := 0; i < 8; i++ {
				old, _, err := s.Restart(15 * time.Second)
				require.NoError(t, err)
				require.NoError(t, proc.WaitGone(old, 15*time.Second))
				// Spaced so that the clients' gaps straddle each drain.
				time.Sleep(time.Duration(200+50*i) * time.Millisecond)
			}
			time.Sleep(300 * time.Millisecond)
			close(stopLoad)
			wg.Wait()
			t.Logf("handoff=%v: %d requests, %d lost %v", handOff, sent, lost, details)
			if handOff {
				assert.Zero(t, lost, "requests lost: %v", details)
			} else {
				assert.Positive(t, lost, "without hand-off, careless clients lose requests (the test tells)")
			}
			assert.Greater(t, sent, clients*8)
			stop(t, s)
		})
	}
}

// TestHandOffSuccessorDies: a successor killed at the moment of hand-off,
// after its hello and before it acks the first batch, takes nothing with
// it: the old process takes its connections back and drains them, and
// every keep-alive request is answered.
func TestHandOffSuccessorDies(t *testing.T) {
	_, _ = binaries(t)
	bin := filepath.Join(t.TempDir(), "testserver-die")
	var flags []string
	if raceEnabled {
		flags = append(flags, "-race")
	}
	require.NoError(t, proc.Build(".", "./internal/testserver", bin, append(flags, "-tags", "graceful_handofftest")...))
	s := start(t, bin, "TS_DRAIN_IDLE=2s", "GRACEFUL_TEST_DIE_ON_HANDOFF=1")
	pid := s.PID()
	conns := make([]*oneConn, 20)
	for i := range conns {
		conns[i] = dialOne(t, s.Addr())
		h, err := conns[i].get()
		require.NoError(t, err)
		require.Equal(t, strconv.Itoa(pid), h.Get("X-Pid"))
	}
	// Not s.Restart: it wants the new PID seen alive, and this successor
	// may die before the pidfile is polled.
	_, err := s.Signal(syscall.SIGUSR2)
	require.NoError(t, err)
	next := waitLogPID(t, s, `successor serving successor=(\d+)`, 0)
	require.NoError(t, proc.WaitGone(next, 15*time.Second), "the successor dies as it receives the connections")
	waitOutput(t, s, "adopting connections went away")
	// Every connection is still served, by the old process, which now
	// drains it: the response says Connection: close.
	for i, o := range conns {
		h, err := o.get()
		if err != nil {
			require.Contains(t, err.Error(), "Connection: close", "connection %d", i)
		}
		require.NotNil(t, h, "connection %d: no response", i)
		assert.Equal(t, strconv.Itoa(pid), h.Get("X-Pid"), "connection %d", i)
	}
	require.NoError(t, proc.WaitGone(pid, 15*time.Second))
	assert.Empty(t, proc.Running(bin), "leftover processes")
}

// TestHandOffOff: with NoHandOff a restart behaves as before: the kept
// connection's next response on the old process says Connection: close.
func TestHandOffOff(t *testing.T) {
	_, server := binaries(t)
	s := start(t, server, "TS_DRAIN_IDLE=5s", "TS_NO_HANDOFF=1")
	o := dialOne(t, s.Addr())
	_, err := o.get()
	require.NoError(t, err)
	old, _, err := s.Restart(15 * time.Second)
	require.NoError(t, err)
	waitOutput(t, s, "handed over; draining")
	h, err := o.get()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Connection: close")
	assert.Equal(t, strconv.Itoa(old), h.Get("X-Pid"))
	assert.NotContains(t, s.Output.String(), "connections handed over")
	stop(t, s)
}

// TestHandOffScale: 5,000 idle keep-alive connections (10,000 with
// HANDOFF_SCALE=10000) pass to the successor in well under a second
// (measured from the old process's drain, which ends when the last is
// acked), and every one is then served by the successor.
func TestHandOffScale(t *testing.T) {
	if testing.Short() {
		t.Skip("opens thousands of connections")
	}
	n := 5000
	if v, err := strconv.Atoi(os.Getenv("HANDOFF_SCALE")); err == nil && v > 0 {
		n = v
	}
	_, server := binaries(t)
	s := start(t, server, "TS_DRAIN_IDLE=5s")
	pid := s.PID()
	conns := make([]*oneConn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				c, err := net.DialTimeout("tcp", s.Addr(), 10*time.Second)
				if err != nil {
					errs <- err
					return
				}
				conns[i] = &oneConn{c: c, br: bufio.NewReader(c)}
				if _, err := conns[i].get(); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	defer func() {
		for _, c := range conns {
			c.c.Close()
		}
	}()
	old, next, err := s.Restart(15 * time.Second)
	require.NoError(t, err)
	require.Equal(t, pid, old)
	require.NoError(t, proc.WaitGone(old, 30*time.Second))
	assert.Equal(t, int64(n), loggedHanded(t, s), "every idle connection is handed")
	took := drainTook(t, s, old)
	t.Logf("%d idle connections handed in %s (the old process's drain)", n, took)
	assert.Less(t, took, 3*time.Second, "handing %d connections", n)
	for i, c := range conns {
		h, err := c.get()
		require.NoError(t, err, "connection %d", i)
		require.Equal(t, strconv.Itoa(next), h.Get("X-Pid"))
	}
	stop(t, s)
}

// drainTook is how long pid's drain took, as its log says.
func drainTook(t *testing.T, s *proc.Server, pid int) time.Duration {
	t.Helper()
	for _, line := range strings.Split(s.Output.String(), "\n") {
		if strings.Contains(line, "graceful: drained") && strings.Contains(line, "pid="+strconv.Itoa(pid)) {
			_, v, _ := strings.Cut(line, "took=")
			v, _, _ = strings.Cut(v, " ")
			d, err := time.ParseDuration(v)
			require.NoError(t, err, line)
			return d
		}
	}
	t.Fatalf("no drain logged for %d", pid)
	return 0
}

// TestHandOffFreshClients: clients that open a connection per request,
// sending as the hand-off begins, lose nothing.
func TestHandOffFreshClients(t *testing.T) {
	_, server := binaries(t)
	s := start(t, server, os.Getenv("FRESH_ENV"))
	gen := loadgen.Start(loadgen.Config{Addr: s.Addr(), Fresh: 4, KeepAlive: 4, Check: checkBody, Duration: 60 * time.Second})
	for i := 0; i < 20; i++ {
		old, _, err := s.Restart(15 * time.Second)
		require.NoError(t, err)
		require.NoError(t, proc.WaitGone(old, 15*time.Second))
		time.Sleep(50 * time.Millisecond)
	}
	res := gen.Stop()
	assertServed(t, res, 1000)
	stop(t, s)
}

// TestHandOffSplitRequests: clients that send each request in two parts,
// the first few bytes, a pause, then the rest, keep-alive, across 20 hot
// restarts: some requests are split across a hand-off, their first bytes
// already read by the old process. None is lost or garbled.
func TestHandOffSplitRequests(t *testing.T) {
	_, server := binaries(t)
	s := start(t, server, "TS_DRAIN_IDLE=300ms")
	stopLoad := make(chan struct{})
	var mu sync.Mutex
	var sent, redials int
	var fails []string
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var o *oneConn
			defer func() {
				if o != nil {
					o.c.Close()
				}
			}()
			for k := 0; ; k++ {
				select {
				case <-stopLoad:
					return
				default:
				}
				if o == nil {
					c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
					if err != nil {
						mu.Lock()
						fails = append(fails, err.Error())
						mu.Unlock()
						return
					}
					o = &oneConn{c: c, br: bufio.NewReader(c)}
					mu.Lock()
					redials++
					mu.Unlock()
				}
				cut := 1 + (k+i)%20 // within the request line or the headers
				req := "GET / HTTP/1.1\r\nHost: split\r\n\r\n"
				o.c.SetDeadline(time.Now().Add(10 * time.Second))
				_, err := io.WriteString(o.c, req[:cut])
				if err == nil {
					time.Sleep(time.Duration(k%3) * 100 * time.Microsecond)
					_, err = io.WriteString(o.c, req[cut:])
				}
				var resp *http.Response
				if err == nil {
					resp, err = http.ReadResponse(o.br, nil)
				}
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && (resp.StatusCode != 200 || string(body) != "hello from "+resp.Header.Get("X-Pid")+"\n") {
						err = fmt.Errorf("status %d, body %q", resp.StatusCode, body)
					}
				}
				mu.Lock()
				sent++
				if err != nil {
					fails = append(fails, err.Error())
				}
				mu.Unlock()
				if err != nil || resp.Close {
					o.c.Close()
					o = nil
				}
			}
		}(i)
	}
	for i := 0; i < 20; i++ {
		old, _, err := s.Restart(15 * time.Second)
		require.NoError(t, err)
		require.NoError(t, proc.WaitGone(old, 15*time.Second))
		time.Sleep(20 * time.Millisecond)
	}
	close(stopLoad)
	wg.Wait()
	t.Logf("%d split requests across 20 hot restarts, %d dials, failures: %v", sent, redials, fails)
	assert.Empty(t, fails)
	assert.Greater(t, sent, 1000)
	// Without hand-off each client dials again at each restart.
	assert.Less(t, redials, 6+20*6/2, "the connections were handed, not closed")
	stop(t, s)
}

// TestHandOffPhasedReplacementDies: in a phased restart, the new worker
// is killed as the master relays it the old worker's connections, before
// it acks: the master refuses the batch, and the old worker takes its
// connections back and drains them: the kept connection gets its next
// response, from the old worker, with Connection: close.
func TestHandOffPhasedReplacementDies(t *testing.T) {
	_, _ = binaries(t)
	bin := filepath.Join(t.TempDir(), "testserver-die")
	var flags []string
	if raceEnabled {
		flags = append(flags, "-race")
	}
	require.NoError(t, proc.Build(".", "./internal/testserver", bin, append(flags, "-tags", "graceful_handofftest")...))
	s := start(t, bin, "TS_WORKERS=1", "TS_DRAIN_IDLE=3s", "GRACEFUL_TEST_DIE_ON_HANDOFF=1")
	waitAllGen(t, s, 0)
	o := dialOne(t, s.Addr())
	h, err := o.get()
	require.NoError(t, err)
	worker := h.Get("X-Pid")
	require.NoError(t, syscall.Kill(s.PID(), syscall.SIGUSR1))
	waitOutput(t, s, "adopting connections refused a batch")
	h, err = o.get()
	if err != nil {
		require.Contains(t, err.Error(), "Connection: close")
	}
	require.NotNil(t, h)
	assert.Equal(t, worker, h.Get("X-Pid"), "the old worker took the connection back")
	stop(t, s)
}
