//go:build linux

package graceful_test

import (
	"bufio"
	"fmt"
	"net"
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

	"github.com/gograceful/graceful"
	"github.com/gograceful/graceful/internal/loadgen"
	"github.com/gograceful/graceful/internal/proc"
)

var echoBin struct {
	once sync.Once
	path string
	err  error
}

// echoBinary builds examples/tcp once per test run, beside the other
// binaries.
func echoBinary(t *testing.T) string {
	t.Helper()
	binaries(t) // the directory, and the same flags
	echoBin.once.Do(func() {
		var flags []string
		if raceEnabled {
			flags = append(flags, "-race")
		}
		echoBin.path = filepath.Join(bins.dir, "echo")
		echoBin.err = proc.Build(".", "./examples/tcp", echoBin.path, flags...)
	})
	require.NoError(t, echoBin.err)
	return echoBin.path
}

// echoConn is one connection of an echo client: when it was open, and how
// many lines it had echoed.
type echoConn struct {
	from, to time.Time
	lines    int
}

// echoResult is what the echo clients saw.
type echoResult struct {
	mu    sync.Mutex
	conns []echoConn
	bytes int64
	errs  []string
}

func (r *echoResult) fail(format string, args ...any) {
	r.mu.Lock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

// lines counts the lines echoed.
func (r *echoResult) lines() int {
	n := 0
	for _, c := range r.conns {
		n += c.lines
	}
	return n
}

// spanning counts the connections open across one of the times given.
func (r *echoResult) spanning(at []time.Time) int {
	n := 0
	for _, c := range r.conns {
		for _, a := range at {
			if c.from.Before(a) && c.to.After(a) {
				n++
				break
			}
		}
	}
	return n
}

// echoLoad runs clients echo clients against addr until stop is closed
// (and at most for max). Each dials, sends perConn lines one after
// another, each answered before the next is sent, checks that every line
// comes back as sent, then closes the connection and dials again. It
// never retries: a failed dial, a reset, a short or wrong echo is an
// error.
func echoLoad(addr string, clients, perConn int, stop <-chan struct{}, max time.Duration) (wait func() *echoResult) {
	res := &echoResult{}
	var wg sync.WaitGroup
	deadline := time.Now().Add(max)
	for id := 0; id < clients; id++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pad := strings.Repeat("x", 20+id*37%200)
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				if time.Now().After(deadline) {
					return
				}
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					res.fail("client %d: dial: %v", id, err)
					return
				}
				ec := echoConn{from: time.Now()}
				br := bufio.NewReader(c)
				for i := 0; i < perConn; i++ {
					line := fmt.Sprintf("client %d conn %d line %d %s\n", id, seq, i, pad)
					c.SetDeadline(time.Now().Add(15 * time.Second))
					if _, err = c.Write([]byte(line)); err != nil {
						res.fail("client %d conn %d line %d: write: %v", id, seq, i, err)
						break
					}
					var got string
					if got, err = br.ReadString('\n'); err != nil || got != line {
						res.fail("client %d conn %d line %d: read %q: %v", id, seq, i, got, err)
						err = fmt.Errorf("bad echo")
						break
					}
					ec.lines++
					res.mu.Lock()
					res.bytes += int64(len(line))
					res.mu.Unlock()
				}
				c.Close()
				ec.to = time.Now()
				res.mu.Lock()
				res.conns = append(res.conns, ec)
				res.mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	return func() *echoResult { wg.Wait(); return res }
}

func assertEchoed(t *testing.T, res *echoResult, minLines int) {
	t.Helper()
	assert.Empty(t, res.errs, "echo errors")
	assert.GreaterOrEqual(t, res.lines(), minLines, "lines echoed")
	t.Logf("%d connections, %d lines, %d bytes echoed, %d errors", len(res.conns), res.lines(), res.bytes, len(res.errs))
}

// TestEchoHotRestarts: the raw TCP example across 20 hot restarts, under
// clients holding long-lived connections: no reset, every byte echoed,
// and connections open at a restart finish on the old process.
func TestEchoHotRestarts(t *testing.T) {
	s := start(t, echoBinary(t))
	stopLoad := make(chan struct{})
	wait := echoLoad(s.Addr(), 6, 200, stopLoad, 120*time.Second)
	var signals []time.Time
	pids := []int{s.PID()}
	for i := 0; i < 20; i++ {
		time.Sleep(100 * time.Millisecond) // the load's shape: a restart every 100 ms or so
		signals = append(signals, time.Now())
		old, pid, err := s.Restart(15 * time.Second)
		require.NoError(t, err, "restart %d", i+1)
		require.NotEqual(t, old, pid)
		pids = append(pids, pid)
	}
	for _, old := range pids[:len(pids)-1] {
		require.NoError(t, proc.WaitGone(old, 20*time.Second), "a replaced process still drains")
	}
	close(stopLoad)
	res := wait()
	stop(t, s)
	assertEchoed(t, res, 2000)
	assert.GreaterOrEqual(t, res.spanning(signals), 20, "connections open across a restart")
	assert.Contains(t, s.Output.String(), "drained")
}

// TestEchoPhasedRestarts: the raw TCP example with 2 workers across 20
// phased restarts: no reset, every byte echoed.
func TestEchoPhasedRestarts(t *testing.T) {
	s := start(t, echoBinary(t), "WORKERS=2")
	master := s.PID()
	waitWorkers(t, s, 2)
	stopLoad := make(chan struct{})
	wait := echoLoad(s.Addr(), 6, 200, stopLoad, 150*time.Second)
	var signals []time.Time
	for g := 1; g <= 20; g++ {
		signals = append(signals, time.Now())
		require.NoError(t, syscall.Kill(master, syscall.SIGUSR1))
		waitOutput(t, s, fmt.Sprintf("phased restart complete gen=%d ", g))
	}
	close(stopLoad)
	res := wait()
	assert.Equal(t, master, s.PID())
	stop(t, s)
	assertEchoed(t, res, 2000)
	assert.GreaterOrEqual(t, res.spanning(signals), 20, "connections open across a phase")
}

// TestHTTPAndServiceRestartTogether: an HTTP server and a service in one
// process, on two ports, restart together: both serve without a failure
// throughout, and both are served by the successor once it took over.
func TestHTTPAndServiceRestartTogether(t *testing.T) {
	for _, workers := range []int{0, 2} {
		t.Run("workers="+strconv.Itoa(workers), func(t *testing.T) {
			httpPort, err := proc.FreePort()
			require.NoError(t, err)
			httpAddr := "127.0.0.1:" + strconv.Itoa(httpPort)
			s := start(t, echoBinary(t), "HTTP_PORT="+strconv.Itoa(httpPort), "WORKERS="+strconv.Itoa(workers))
			gen := loadgen.Start(loadgen.Config{Addr: httpAddr, KeepAlive: 2, Fresh: 2, Check: checkBody, Duration: 90 * time.Second})
			stopLoad := make(chan struct{})
			wait := echoLoad(s.Addr(), 4, 100, stopLoad, 90*time.Second)
			for i := 0; i < 5; i++ {
				time.Sleep(200 * time.Millisecond)
				old, pid, err := s.Restart(15 * time.Second)
				require.NoError(t, err)
				require.NoError(t, proc.WaitGone(old, 20*time.Second), "the old process drained both servers and exited")
				if workers == 0 {
					_, got, _ := get(t, "tcp", httpAddr, "/")
					assert.Equal(t, strconv.Itoa(pid), got, "HTTP served by the successor")
				}
			}
			close(stopLoad)
			res := wait()
			hres := gen.Stop()
			stop(t, s)
			assertEchoed(t, res, 500)
			assertServed(t, hres, 500)
		})
	}
}

// TestWrappedListenerRestarts: HTTP served through a listener wrapper
// without a socket of its own (Serve(wrapper)) restarts under load: before,
// every restart failed.
func TestWrappedListenerRestarts(t *testing.T) {
	_, server := binaries(t)
	s := start(t, server, "TS_WRAP=1")
	gen := loadgen.Start(loadgen.Config{Addr: s.Addr(), KeepAlive: 3, Fresh: 2, Check: checkBody, Duration: 60 * time.Second})
	for i := 0; i < 5; i++ {
		time.Sleep(100 * time.Millisecond)
		_, pid, err := s.Restart(15 * time.Second)
		require.NoError(t, err, "restart %d", i+1)
		waitServedBy(t, s, pid)
	}
	res := gen.Stop()
	stop(t, s)
	assertServed(t, res, 500)
}

// TestBadServiceSuccessor: a successor whose service's listener has no
// socket to pass on fails at start, with an error naming the listener, and
// is never ready: the old process serves on, and takes a good successor.
func TestBadServiceSuccessor(t *testing.T) {
	_, server := binaries(t)
	mode := filepath.Join(t.TempDir(), "mode")
	s := start(t, server, "TS_MODE_FILE="+mode)
	pid := s.PID()
	require.NoError(t, os.WriteFile(mode, []byte("badwrap"), 0o644))
	_, err := s.Signal(syscall.SIGUSR2)
	require.NoError(t, err)
	waitOutput(t, s, "restart failed")
	out := s.Output.String()
	assert.Contains(t, out, `service "badwrap": a main.wrapped listener on 127.0.0.1:`)
	assert.Contains(t, out, "from graceful.Listen")
	assert.NotContains(t, out, "successor ready")
	assert.Equal(t, pid, s.PID())
	_, got, _ := get(t, "tcp", s.Addr(), "/")
	assert.Equal(t, strconv.Itoa(pid), got)
	require.NoError(t, os.WriteFile(mode, nil, 0o644))
	_, next, err := s.Restart(15 * time.Second)
	require.NoError(t, err)
	waitServedBy(t, s, next)
	stop(t, s)
}

// TestServiceServeReturnsInSuccessor: a successor whose service's Serve
// returns at once (it serves nothing) must not take over: before, it told
// its predecessor it served, the predecessor retired, and the successor
// then stopped, leaving nothing serving. Now the restart fails and the old
// process serves on.
func TestServiceServeReturnsInSuccessor(t *testing.T) {
	_, server := binaries(t)
	mode := filepath.Join(t.TempDir(), "mode")
	s := start(t, server, "TS_MODE_FILE="+mode)
	pid := s.PID()
	require.NoError(t, os.WriteFile(mode, []byte("servenil"), 0o644))
	_, err := s.Signal(syscall.SIGUSR2)
	require.NoError(t, err)
	waitOutput(t, s, "restart failed")
	assert.Contains(t, s.Output.String(), `service "servenil"`)
	assert.NotContains(t, s.Output.String(), "handed over")
	assert.Equal(t, pid, s.PID())
	_, got, _ := get(t, "tcp", s.Addr(), "/")
	assert.Equal(t, strconv.Itoa(pid), got, "the old process serves on")
	require.NoError(t, os.WriteFile(mode, nil, 0o644))
	_, next, err := s.Restart(15 * time.Second)
	require.NoError(t, err)
	waitServedBy(t, s, next)
	stop(t, s)
}

// TestServicesOnPortZero: two services on "127.0.0.1:0" (an HTTP server or
// Extra on :0 would do the same) keep their ports across hot restarts, each
// port still served by the same service. Before, every restart failed: the
// successor rejected the sockets passed as "tcp:127.0.0.1:0 given twice".
func TestServicesOnPortZero(t *testing.T) {
	_, server := binaries(t)
	sock := filepath.Join(t.TempDir(), "control.sock")
	s := start(t, server, "TS_ZERO_SERVICES=2", "TS_CONTROL="+sock)
	addrs := map[string]string{} // service name -> address
	st := ctlStats(t, sock)
	for _, sv := range st.Services {
		addrs[sv.Name] = strings.TrimPrefix(sv.Listener, "tcp:")
	}
	require.Len(t, addrs, 2)
	ask := func(addr string) string {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		require.NoError(t, err)
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		require.NoError(t, err)
		return strings.TrimSpace(line)
	}
	for i := 0; i < 3; i++ {
		_, pid, err := s.Restart(15 * time.Second)
		require.NoError(t, err, "restart %d", i+1)
		for name, addr := range addrs {
			// The old process accepts until it has heard that its
			// successor serves: a moment after the pidfile names it.
			want := name + " " + strconv.Itoa(pid)
			got := ask(addr)
			for deadline := time.Now().Add(10 * time.Second); got != want && time.Now().Before(deadline); got = ask(addr) {
				require.True(t, strings.HasPrefix(got, name+" "), "the port of %s served by %q", name, got)
				time.Sleep(10 * time.Millisecond)
			}
			assert.Equal(t, want, got, "the port of %s, after restart %d", name, i+1)
		}
	}
	stop(t, s)
}

// TestClusterServiceCounts: a cluster's master counts its workers' service
// work, from their heartbeats: connections in flight while they are open,
// then done, also once a phase has replaced the workers that served them.
func TestClusterServiceCounts(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	s := start(t, echoBinary(t), "WORKERS=2", "CONTROL="+sock)
	waitWorkers(t, s, 2)
	svc := func() graceful.ServiceStatus {
		st := ctlStats(t, sock)
		require.Len(t, st.Services, 1)
		return st.Services[0]
	}
	var conns []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", s.Addr())
		require.NoError(t, err)
		defer c.Close()
		// A line echoed: the connection is being served.
		_, err = c.Write([]byte("hello\n"))
		require.NoError(t, err)
		_, err = bufio.NewReader(c).ReadString('\n')
		require.NoError(t, err)
		conns = append(conns, c)
	}
	require.Eventually(t, func() bool { return svc().InFlight == 3 }, 15*time.Second, 20*time.Millisecond,
		"the master counts the 3 connections its workers serve")
	for _, c := range conns {
		c.Close()
	}
	// (The start's readiness probe is a connection too.)
	var last graceful.ServiceStatus
	require.Eventually(t, func() bool { last = svc(); return last.InFlight == 0 && last.Total >= 3 }, 15*time.Second, 20*time.Millisecond,
		"the master counts them done: %+v", &last)
	done := last.Total
	require.NoError(t, syscall.Kill(s.PID(), syscall.SIGUSR1))
	waitOutput(t, s, "phased restart complete gen=1 ")
	require.Eventually(t, func() bool { last = svc(); return last.InFlight == 0 && last.Total == done }, 15*time.Second, 20*time.Millisecond,
		"the count survives the workers that served them: %+v, want total %d", &last, done)
	stop(t, s)
}

// TestPhaseServiceServeReturns: in a phase, a new worker whose service's
// Serve returns at once (it serves nothing) stops the phase, and the old
// workers serve on, as for a worker that fails to boot. Before, the master
// drained the old worker as soon as the new one was ready, the new one
// then stopped, and its replacements crashed in a loop while the phase
// was reported done.
func TestPhaseServiceServeReturns(t *testing.T) {
	_, server := binaries(t)
	mode := filepath.Join(t.TempDir(), "mode")
	s := start(t, server, "TS_WORKERS=2", "TS_MODE_FILE="+mode, "TS_DRAIN_IDLE=200ms")
	before := waitAllGen(t, s, 0)
	gen := loadgen.Start(loadgen.Config{Addr: s.Addr(), KeepAlive: 3, Fresh: 1, Check: checkBody, Duration: 60 * time.Second})
	require.NoError(t, os.WriteFile(mode, []byte("servenil"), 0o644))
	require.NoError(t, syscall.Kill(s.PID(), syscall.SIGUSR1))
	waitOutput(t, s, "phased restart stopped: the new worker 0 exited before it served")
	assert.Equal(t, before, waitAllGen(t, s, 0), "the old workers serve on")
	assert.NotContains(t, s.Output.String(), "phased restart complete")
	require.True(t, gen.WaitDone(gen.Done()+300, 20*time.Second), "the old workers serve on under load")

	require.NoError(t, os.WriteFile(mode, nil, 0o644))
	require.NoError(t, syscall.Kill(s.PID(), syscall.SIGUSR1))
	waitOutput(t, s, "phased restart complete gen=2 ")
	waitAllGen(t, s, 2)
	res := gen.Stop()
	stop(t, s)
	assertServed(t, res, 300)
}
