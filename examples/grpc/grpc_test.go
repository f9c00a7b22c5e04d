//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gograceful/graceful/internal/proc"
)

var bin string // the example, built by TestMain

func TestMain(m *testing.M) {
	if err := proc.BecomeSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, "subreaper:", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "graceful-grpc-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "grpc-example")
	if err := proc.Build(".", ".", bin); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// app is the example running: gRPC on Port, HTTP on httpAddr if set.
type app struct {
	*proc.Server
	httpAddr string
}

// start runs the example, with an HTTP port if withHTTP, and arranges for
// every process it ran to be gone at the end.
func start(t *testing.T, withHTTP bool, env ...string) *app {
	t.Helper()
	a := &app{}
	if withHTTP {
		p, err := proc.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		a.httpAddr = "127.0.0.1:" + strconv.Itoa(p)
		env = append(env, "HTTP_PORT="+strconv.Itoa(p))
	}
	var err error
	if a.Server, err = proc.Start(bin, t.TempDir(), env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Kill()
		proc.ReapZombies()
		if t.Failed() {
			t.Logf("server output:\n%s", a.Output)
		}
	})
	return a
}

// stop sends SIGTERM, waits for every process of the example this test
// ran to exit, by PID, and checks that none of the binary is left.
func (a *app) stop(t *testing.T) {
	t.Helper()
	if err := a.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if left := proc.Running(bin); len(left) > 0 {
		t.Errorf("processes left behind: %v", left)
	}
}

// waitOutput waits until the example's output contains want.
func (a *app) waitOutput(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(a.Output.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output never contained %q", want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// dial connects a client with no retry policy (retries disabled) and no
// wait-for-ready: an RPC fails as soon as the channel fails to connect.
func dial(addr string) *grpc.ClientConn {
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDisableRetry())
	if err != nil {
		panic(err) // NewClient fails only for a malformed target or options; called from the load's goroutines too
	}
	return cc
}

var streamDesc = &grpc.StreamDesc{ServerStreams: true}

// stream opens a server-streaming RPC of example.Counter.
func stream(ctx context.Context, cc *grpc.ClientConn, method string, req any) (grpc.ClientStream, error) {
	cs, err := cc.NewStream(ctx, streamDesc, "/example.Counter/"+method)
	if err != nil {
		return nil, err
	}
	if err := cs.SendMsg(req); err != nil {
		return nil, err
	}
	return cs, cs.CloseSend()
}

// count runs Count(n) to its end and returns the PID that served it. It
// fails unless n messages "PID 1".."PID n" arrive from one PID and the
// status is OK.
func count(ctx context.Context, cc *grpc.ClientConn, n int) (string, error) {
	cs, err := stream(ctx, cc, "Count", wrapperspb.UInt32(uint32(n)))
	if err != nil {
		return "", err
	}
	pid := ""
	for i := 1; ; i++ {
		var m wrapperspb.StringValue
		err := cs.RecvMsg(&m)
		if err == io.EOF && i == n+1 {
			return pid, nil
		}
		if err != nil {
			return pid, fmt.Errorf("Count(%d): message %d: %w", n, i, err)
		}
		p, num, _ := strings.Cut(m.GetValue(), " ")
		if pid == "" {
			pid = p
		}
		if p != pid || num != strconv.Itoa(i) || i > n {
			return pid, fmt.Errorf("Count(%d): message %d is %q", n, i, m.GetValue())
		}
	}
}

// check runs the health service's Check and fails unless it says SERVING.
func check(ctx context.Context, cc *grpc.ClientConn) error {
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("Check: %w", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("Check: %v", resp.GetStatus())
	}
	return nil
}

// load is clients, each on a connection of its own (a quarter of them a
// new one each time round), running a unary Check and a streaming Count(5)
// in turn, until stopped or max has passed.
type load struct {
	stopc   chan struct{}
	wg      sync.WaitGroup
	started time.Time
	elapsed time.Duration
	ok      atomic.Int64 // RPCs that succeeded
	streams atomic.Int64 // of which Count streams
	mu      sync.Mutex
	failed  []string
	ends    map[string][]time.Time // when each PID's streams ended
}

func startLoad(t *testing.T, addr string, clients int, max time.Duration) *load {
	l := &load{stopc: make(chan struct{}), started: time.Now(), ends: map[string][]time.Time{}}
	deadline := time.Now().Add(max)
	for c := range clients {
		cc := dial(addr)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer func() { cc.Close() }()
			for i := 0; time.Now().Before(deadline); i++ {
				select {
				case <-l.stopc:
					return
				default:
				}
				if c%4 == 0 && i > 0 { // a quarter of the clients: a new connection for every pair of RPCs
					cc.Close()
					cc = dial(addr)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				err := check(ctx, cc)
				if err == nil {
					l.ok.Add(1)
					var pid string
					pid, err = count(ctx, cc, 5)
					if err == nil {
						l.ok.Add(1)
						l.streams.Add(1)
						l.mu.Lock()
						l.ends[pid] = append(l.ends[pid], time.Now())
						l.mu.Unlock()
					}
				}
				cancel()
				if err != nil {
					l.mu.Lock()
					l.failed = append(l.failed, time.Now().Format("15:04:05.000")+" "+err.Error())
					l.mu.Unlock()
				}
			}
		}()
	}
	return l
}

// waitMore waits until n more RPCs have succeeded.
func (l *load) waitMore(t *testing.T, n int64) {
	t.Helper()
	want := l.ok.Load() + n
	deadline := time.Now().Add(30 * time.Second)
	for l.ok.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("the load made no progress: %d RPCs, want %d", l.ok.Load(), want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitServedBy waits until a stream served by pid has ended.
func (l *load) waitServedBy(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for l.endedAfter(pid, time.Time{}) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no stream served by %d", pid)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// stop stops the clients and waits for their RPCs in flight to end.
func (l *load) stop() {
	close(l.stopc)
	l.wg.Wait()
	l.elapsed = time.Since(l.started)
}

// rate is the RPCs per second that succeeded.
func (l *load) rate() float64 { return float64(l.ok.Load()) / l.elapsed.Seconds() }

// endedAfter counts the streams served by pid that ended after t.
func (l *load) endedAfter(pid int, t time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.ends[strconv.Itoa(pid)] {
		if e.After(t) {
			n++
		}
	}
	return n
}

// pids counts the processes that served a stream.
func (l *load) pids() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ends)
}

// assertNoFailures fails the test if any RPC failed or too few ran.
func (l *load) assertNoFailures(t *testing.T, min int64) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failed) > 0 {
		first := l.failed
		if len(first) > 10 {
			first = first[:10]
		}
		t.Errorf("%d RPCs failed; first: %s", len(l.failed), strings.Join(first, "\n  "))
	}
	if l.ok.Load() < min {
		t.Errorf("only %d RPCs succeeded, want at least %d", l.ok.Load(), min)
	}
}

const clients = 16

// TestHotRestartsUnderLoad: 16 clients that never retry run unary and
// server-streaming RPCs through 20 hot restarts (SIGUSR2) of a process
// serving gRPC and HTTP on two ports: no RPC fails, every old process
// exits, streams in flight when a drain began finish in the old process,
// and the RPC rate with and without restarts is logged.
func TestHotRestartsUnderLoad(t *testing.T) {
	a := start(t, true, "SHUTDOWN_TIMEOUT=20s", "STREAM_INTERVAL=5ms")
	base := startLoad(t, a.Addr(), clients, 30*time.Second)
	time.Sleep(2 * time.Second) // a fixed span to measure the rate without restarts
	base.stop()
	base.assertNoFailures(t, 50)

	l := startLoad(t, a.Addr(), clients, 180*time.Second)
	l.waitMore(t, clients)
	spanning := 0
	for i := 1; i <= 20; i++ {
		old, np, err := a.Restart(20 * time.Second)
		if err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
		ready := time.Now()
		if err := proc.WaitGone(old, 30*time.Second); err != nil {
			t.Fatalf("restart %d: the old process %d never exited: %v", i, old, err)
		}
		spanning += l.endedAfter(old, ready)
		l.waitServedBy(t, np) // the pids check below counts it
		if get(t, a.httpAddr+"/readyz") != http.StatusOK {
			t.Errorf("restart %d: /readyz of %d not 200", i, np)
		}
		l.waitMore(t, 2*clients)
	}
	l.stop()
	l.assertNoFailures(t, 500)
	if n := l.pids(); n < 21 {
		t.Errorf("streams were served by %d processes; 21 served in turn", n)
	}
	t.Logf("hot: %.0f RPC/s without restarts (%d RPCs in %s), %.0f RPC/s across 20 hot restarts (%d RPCs in %s); %d streams ended in an old process after its successor took over",
		base.rate(), base.ok.Load(), base.elapsed.Round(time.Millisecond), l.rate(), l.ok.Load(), l.elapsed.Round(time.Millisecond), spanning)
	if spanning == 0 {
		t.Error("no stream was in flight across a hand-over: the test proved nothing about draining streams")
	}
	a.stop(t)
}

// TestPhasedRestartsUnderLoad: the same load through 20 phased restarts
// (SIGUSR1) of a cluster of 2 workers serving gRPC and HTTP: no RPC fails
// and the master keeps its PID.
func TestPhasedRestartsUnderLoad(t *testing.T) {
	a := start(t, true, "WORKERS=2", "SHUTDOWN_TIMEOUT=20s", "STREAM_INTERVAL=5ms")
	master := a.PID()
	l := startLoad(t, a.Addr(), clients, 240*time.Second)
	l.waitMore(t, clients)
	for g := 1; g <= 20; g++ {
		if err := syscall.Kill(master, syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		a.waitOutput(t, fmt.Sprintf("phased restart complete gen=%d ", g), 60*time.Second)
		l.waitMore(t, 2*clients)
	}
	l.stop()
	l.assertNoFailures(t, 500)
	if n := l.pids(); n < 21 {
		t.Errorf("streams were served by %d worker processes; at least one of each of the 21 generations should have", n)
	}
	if a.PID() != master {
		t.Errorf("the master changed: %d, then %d", master, a.PID())
	}
	t.Logf("phased: %.0f RPC/s across 20 phased restarts of 2 workers (%d RPCs in %s)",
		l.rate(), l.ok.Load(), l.elapsed.Round(time.Millisecond))
	a.stop(t)
}

// TestGRPCAlone: with no HTTP server at all, the example serves gRPC
// through hot and phased restarts under load, and stops cleanly.
func TestGRPCAlone(t *testing.T) {
	for _, mode := range []string{"single", "cluster"} {
		t.Run(mode, func(t *testing.T) {
			env := []string{"SHUTDOWN_TIMEOUT=20s"}
			if mode == "cluster" {
				env = append(env, "WORKERS=2")
			}
			a := start(t, false, env...)
			l := startLoad(t, a.Addr(), 4, 60*time.Second)
			l.waitMore(t, 4)
			for i := 1; i <= 3; i++ {
				_, pid, err := a.Restart(20 * time.Second)
				if err != nil {
					t.Fatalf("hot restart %d: %v", i, err)
				}
				if mode == "single" {
					// The RPCs the load counts next may all end in the old
					// process: wait for one of the new one's streams.
					l.waitServedBy(t, pid)
				}
				l.waitMore(t, 4)
			}
			if mode == "cluster" {
				for g := 1; g <= 3; g++ {
					if _, err := a.Signal(syscall.SIGUSR1); err != nil {
						t.Fatal(err)
					}
					a.waitOutput(t, fmt.Sprintf("phased restart complete gen=%d ", g), 60*time.Second)
					l.waitMore(t, 4)
				}
			}
			l.stop()
			l.assertNoFailures(t, 20)
			if n := l.pids(); n < 4 {
				t.Errorf("streams were served by %d processes; want at least 4", n)
			}
			a.stop(t)
		})
	}
}

// TestStreamSpansDrain: a Count stream in flight when its process begins
// to drain runs to its end in that process, with status OK, while a Watch
// stream on the same connection sees graceful.Draining in its handler and
// ends at once; during them, the Status served on the HTTP port counts
// both RPCs in flight. A stream longer than ShutdownTimeout is cut off
// once ShutdownTimeout has passed, and the old process exits then. In single mode (hot
// restart) and in a cluster (phased restart).
func TestStreamSpansDrain(t *testing.T) {
	for _, mode := range []string{"hot", "phased"} {
		t.Run(mode, func(t *testing.T) {
			env := []string{"SHUTDOWN_TIMEOUT=4s", "STREAM_INTERVAL=50ms"}
			if mode == "phased" {
				env = append(env, "WORKERS=1")
			}
			a := start(t, true, env...)
			cc := dial(a.Addr())
			defer cc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()

			// Watch, then Count(40) (2 s) on the same connection, so in
			// the same process.
			ws, err := stream(ctx, cc, "Watch", &emptypb.Empty{})
			if err != nil {
				t.Fatal(err)
			}
			var first wrapperspb.StringValue
			if err := ws.RecvMsg(&first); err != nil {
				t.Fatal(err)
			}
			pid, _, _ := strings.Cut(first.GetValue(), " ")
			type result struct {
				pid string
				err error
				at  time.Time
			}
			counted := make(chan result, 1)
			go func() {
				p, err := count(ctx, cc, 40)
				counted <- result{p, err, time.Now()}
			}()
			// Both in flight, as the Status on the HTTP port says.
			waitInFlight(t, a.httpAddr, 2)

			if mode == "hot" {
				if _, _, err := a.Restart(20 * time.Second); err != nil {
					t.Fatal(err)
				}
			} else if _, err := a.Signal(syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			// Watch ends with "draining" and OK once the drain begins.
			var drained time.Time
			for {
				var m wrapperspb.StringValue
				err := ws.RecvMsg(&m)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("Watch: %v", err)
				}
				if m.GetValue() == pid+" draining" {
					drained = time.Now()
				} else if m.GetValue() != pid+" tick" {
					t.Fatalf("Watch: %q", m.GetValue())
				}
			}
			if drained.IsZero() {
				t.Fatal("Watch ended without seeing the drain")
			}
			r := <-counted
			if r.err != nil {
				t.Fatalf("the stream in flight across the drain failed: %v", r.err)
			}
			if r.pid != pid || !r.at.After(drained) {
				t.Fatalf("Count served by %s, ended %s after the drain began: not in flight across the drain of %s", r.pid, r.at.Sub(drained), pid)
			}
			old, _ := strconv.Atoi(pid)
			if err := proc.WaitGone(old, 20*time.Second); err != nil {
				t.Fatal(err)
			}

			// A stream of 10 s, longer than ShutdownTimeout (4 s), is cut
			// off when the drain's time is up, and its process exits.
			ls, err := stream(ctx, cc, "Count", wrapperspb.UInt32(200))
			if err != nil {
				t.Fatal(err)
			}
			if err := ls.RecvMsg(&first); err != nil {
				t.Fatal(err)
			}
			pid, _, _ = strings.Cut(first.GetValue(), " ")
			old, _ = strconv.Atoi(pid)
			began := time.Now()
			if mode == "hot" {
				if _, _, err := a.Restart(20 * time.Second); err != nil {
					t.Fatal(err)
				}
			} else if _, err := a.Signal(syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			for err == nil {
				err = ls.RecvMsg(&first)
			}
			if err == io.EOF {
				t.Fatal("a 10 s stream ended OK: the drain was not bounded by ShutdownTimeout (4 s)")
			}
			if err := proc.WaitGone(old, 20*time.Second); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(began); took > 9*time.Second {
				t.Errorf("the old process exited %s after the restart began; ShutdownTimeout is 4 s", took)
			}
			t.Logf("%s: the long stream ended with %v after %s", mode, err, time.Since(began).Round(time.Millisecond))
			a.stop(t)
		})
	}
}

// get returns the status code of a GET of url, 0 if it failed.
func get(t *testing.T, addr string) int {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr)
	if err != nil {
		t.Logf("GET %s: %v", addr, err)
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitInFlight waits until the Status on /metrics counts n RPCs in flight
// in the service "grpc".
func waitInFlight(t *testing.T, httpAddr string, n int64) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(15 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		resp, err := c.Get("http://" + httpAddr + "/metrics")
		if err == nil {
			var st struct {
				Services []struct {
					Name     string `json:"name"`
					InFlight int64  `json:"in_flight"`
				} `json:"services"`
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = string(b)
			if json.Unmarshal(b, &st) == nil {
				for _, s := range st.Services {
					if s.Name == "grpc" && s.InFlight == n {
						return
					}
				}
			}
		} else {
			last = err.Error()
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("Status never counted %d RPCs in flight; last: %s", n, last)
}
