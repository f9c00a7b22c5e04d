//go:build linux

package graceful_test

// Tests for restart defects: each asserts what a user would check, with
// real processes, signals and sockets.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gograceful/graceful/internal/proc"
)

// slowRequest sends GET /sleep?ms=ms on a connection of its own and
// returns once the response's headers arrived, so that the request is
// known to be in flight.
func slowRequest(t *testing.T, addr string, ms int) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	require.NoError(t, conn.SetDeadline(time.Now().Add(time.Duration(ms)*time.Millisecond+60*time.Second)))
	fmt.Fprintf(conn, "GET /sleep?ms=%d HTTP/1.1\r\nHost: x\r\n\r\n", ms)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err, "headers of the slow request")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	return resp
}

// requireBody reads the rest of a slow request's response and checks that
// it completed.
func requireBody(t *testing.T, resp *http.Response, ms int) {
	t.Helper()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err, "the in-flight request was cut off; got %q", body)
	assert.Equal(t, fmt.Sprintf("slept %d\n", ms), string(body), "the in-flight request was cut off")
}

// waitLogPID waits until the servers' output has a line matching re, whose
// first group is a PID, beyond the first skip such lines, and returns it.
func waitLogPID(t *testing.T, s *proc.Server, re string, skip int) int {
	t.Helper()
	rx := regexp.MustCompile(re)
	var pid int
	require.Eventually(t, func() bool {
		m := rx.FindAllStringSubmatch(s.Output.String(), -1)
		if len(m) <= skip {
			return false
		}
		pid, _ = strconv.Atoi(m[skip][1])
		return true
	}, 15*time.Second, 5*time.Millisecond, "output never matched %q", re)
	return pid
}

// waitExit waits for the first process of s to exit, and fails unless its
// exit status was 0. Unlike Cmd.Wait, it does not wait for the successors
// that share the process's output pipe.
func waitExit(s *proc.Server, timeout time.Duration) error {
	done := make(chan error, 1)
	go func() {
		st, err := s.Cmd.Process.Wait()
		if err == nil && !st.Success() {
			err = fmt.Errorf("process %d: %s", st.Pid(), st)
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("process %d still running after %s", s.Cmd.Process.Pid, timeout)
	}
}

// startInGroup is start with the server leading a process group of its own.
func startInGroup(t *testing.T, bin string, env ...string) *proc.Server {
	t.Helper()
	s, err := proc.StartInGroup(bin, t.TempDir(), env)
	return tracked(t, s, err)
}

// TestStopSignalWhileRetiring: the first SIGTERM to a process that is
// draining after a hot restart lets its in-flight requests finish; only a
// second one cuts the drain short.
func TestStopSignalWhileRetiring(t *testing.T) {
	_, server := binaries(t)
	s := start(t, server, "TS_SHUTDOWN_TIMEOUT=60s")
	old := s.PID()
	short := slowRequest(t, s.Addr(), 3000)
	long := slowRequest(t, s.Addr(), 40000)
	require.Equal(t, strconv.Itoa(old), short.Header.Get("X-Pid"))
	require.Equal(t, strconv.Itoa(old), long.Header.Get("X-Pid"))

	_, succ, err := s.Restart(15 * time.Second)
	require.NoError(t, err)
	waitServedBy(t, s, succ)
	require.True(t, proc.Alive(old), "the old process should still be draining")
	require.NoError(t, syscall.Kill(old, syscall.SIGTERM))
	requireBody(t, short, 3000)
	assert.NotContains(t, s.Output.String(), "second stop signal")

	// The short request's end shows the first signal was taken; a second
	// one ends the drain now.
	require.True(t, proc.Alive(old), "the old process should still be draining the long request")
	second := time.Now()
	require.NoError(t, syscall.Kill(old, syscall.SIGTERM))
	_, err = io.ReadAll(long.Body)
	assert.Error(t, err, "the second stop signal cuts the long request off")
	assert.NoError(t, waitExit(s, 60*time.Second), "the old process's exit status")
	assert.Less(t, time.Since(second), 10*time.Second, "the second stop signal did not end the drain")
	stop(t, s)
}

// TestGroupInterruptWhileRetiringCluster: SIGINT to the whole process group
// (Ctrl-C in a terminal) while the old tree drains after a hot restart of
// a cluster: the old master does not kill a worker that has a request in
// flight.
func TestGroupInterruptWhileRetiringCluster(t *testing.T) {
	_, server := binaries(t)
	s := startInGroup(t, server, "TS_WORKERS=2", "TS_SHUTDOWN_TIMEOUT=30s", "TS_DRAIN_IDLE=100ms")
	waitAllGen(t, s, 0)
	resp := slowRequest(t, s.Addr(), 3000)
	oldWorker := resp.Header.Get("X-Pid")

	old, master, err := s.Restart(20 * time.Second)
	require.NoError(t, err)
	require.NotEqual(t, old, master)
	require.Eventually(t, func() bool { return probe(t, s.Addr()).pid != oldWorker }, 10*time.Second, 5*time.Millisecond)
	require.True(t, proc.Alive(old), "the old master should still be draining")
	require.NoError(t, syscall.Kill(-s.Cmd.Process.Pid, syscall.SIGINT))

	requireBody(t, resp, 3000)
	assert.NoError(t, waitExit(s, 60*time.Second), "the old master's exit status")
	require.NoError(t, proc.WaitGone(master, 40*time.Second))
	assert.NotContains(t, s.Output.String(), "killing the workers")
	assert.Empty(t, proc.Running(s.Bin), "leftover processes")
}

// TestHangingSuccessorOrphaned: a successor that never becomes ready, whose
// parent was SIGKILLed, exits within its StartTimeout instead of holding
// the port for ever.
func TestHangingSuccessorOrphaned(t *testing.T) {
	_, server := binaries(t)
	mode := filepath.Join(t.TempDir(), "mode")
	s := start(t, server, "TS_MODE_FILE="+mode, "TS_START_TIMEOUT=2s")
	old := s.PID()
	require.NoError(t, os.WriteFile(mode, []byte("hang"), 0o644))
	require.NoError(t, syscall.Kill(old, syscall.SIGUSR2))
	succ := waitLogPID(t, s, `successor started successor=(\d+)`, 0)
	waitOutput(t, s, "testserver: configured to hang")

	require.NoError(t, syscall.Kill(old, syscall.SIGKILL))
	require.NoError(t, proc.WaitGone(old, 5*time.Second))
	killed := time.Now()
	// StartTimeout is 2 s; the rest is margin for a loaded machine.
	require.NoError(t, proc.WaitGone(succ, 10*time.Second), "the hanging successor outlived its dead parent")
	t.Logf("successor gone %s after its parent was killed", time.Since(killed).Round(time.Millisecond))
	l, err := net.Listen("tcp", s.Addr())
	require.NoError(t, err, "the port is still held")
	l.Close()
	assert.Empty(t, proc.Running(s.Bin), "leftover processes")
}

// TestSuccessorServesAfterParentDied: a successor whose parent was
// SIGKILLed while it booted serves on the sockets it holds and takes over
// the pidfile.
func TestSuccessorServesAfterParentDied(t *testing.T) {
	_, server := binaries(t)
	mode := filepath.Join(t.TempDir(), "mode")
	s := start(t, server, "TS_MODE_FILE="+mode)
	old := s.PID()
	require.NoError(t, os.WriteFile(mode, []byte("sleep 2s"), 0o644))
	require.NoError(t, syscall.Kill(old, syscall.SIGUSR2))
	succ := waitLogPID(t, s, `successor started successor=(\d+)`, 0)
	waitOutput(t, s, "testserver: booting for 2s")

	require.NoError(t, syscall.Kill(old, syscall.SIGKILL))
	require.NoError(t, proc.WaitGone(old, 5*time.Second))
	pid, err := s.WaitPIDFile(old, 15*time.Second)
	require.NoError(t, err, "the pidfile never named the successor")
	assert.Equal(t, succ, pid)
	waitServedBy(t, s, succ)
	stop(t, s)
}

// TestBootingWorkerOrphaned: a worker that hangs in its boot, whose master
// was SIGKILLed, exits: no orphan workers.
func TestBootingWorkerOrphaned(t *testing.T) {
	_, server := binaries(t)
	mode := filepath.Join(t.TempDir(), "mode")
	s := start(t, server, "TS_WORKERS=2", "TS_MODE_FILE="+mode, "TS_BOOT_TIMEOUT=2s", "TS_DRAIN_IDLE=100ms")
	waitAllGen(t, s, 0)
	ready := waitWorkers(t, s, 2)
	master := s.PID()
	require.NoError(t, os.WriteFile(mode, []byte("hang"), 0o644))
	require.NoError(t, syscall.Kill(master, syscall.SIGUSR1))
	booting := waitLogPID(t, s, `worker booting worker=0 gen=1 pid=(\d+)`, 0)
	waitOutput(t, s, "testserver: configured to hang")

	require.NoError(t, syscall.Kill(master, syscall.SIGKILL))
	require.NoError(t, proc.WaitGone(master, 5*time.Second))
	for _, w := range ready {
		require.NoError(t, proc.WaitGone(w, 5*time.Second), "a ready worker outlived its master")
	}
	// WorkerBootTimeout is 2 s; the rest is margin.
	require.NoError(t, proc.WaitGone(booting, 10*time.Second), "the booting worker outlived its master")
	assert.Empty(t, proc.Running(s.Bin), "leftover processes")
}

// relStart starts a copy of the test server as a user would from root,
// with a relative command, pidfile, control socket and Directory (or an
// absolute Directory), from the release that root/current links to.
func relStart(t *testing.T, workers string, absDir bool) (s *proc.Server, root, release string) {
	t.Helper()
	_, server := binaries(t)
	root, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	release = filepath.Join(root, "releases", "r1")
	require.NoError(t, os.MkdirAll(release, 0o755))
	b, err := os.ReadFile(server)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(release, "app"), b, 0o755))
	require.NoError(t, os.Symlink(filepath.Join("releases", "r1"), filepath.Join(root, "current")))
	dir := "current"
	if absDir {
		dir = filepath.Join(root, "current")
	}
	port, err := proc.FreePort()
	require.NoError(t, err)
	cmd := exec.Command("current/app")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "PIDFILE=app.pid", "TS_CONTROL=ctl.sock",
		"TS_DIRECTORY="+dir, "TS_WORKERS="+workers, "TS_DRAIN_IDLE=100ms", "GORACE=atexit_sleep_ms=0")
	out := &proc.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	s = &proc.Server{Bin: filepath.Join(release, "app"), Port: port, PIDFile: filepath.Join(root, "app.pid"), Cmd: cmd, Output: out}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if t.Failed() {
			s.Dump()
		}
		s.Kill()
		proc.ReapZombies()
		if t.Failed() {
			t.Logf("server output:\n%s", out)
		}
	})
	require.Eventually(t, func() bool {
		return s.PID() == cmd.Process.Pid || !proc.Alive(cmd.Process.Pid)
	}, 15*time.Second, 5*time.Millisecond, "the pidfile never named the server")
	require.True(t, proc.Alive(cmd.Process.Pid), "the server exited at start-up")
	_, err = s.WaitPIDFile(0, time.Second) // records the PID for Stop and Kill
	require.NoError(t, err)
	require.NoError(t, s.WaitListening(10*time.Second))
	return s, root, release
}

// TestRelativeControlStop: after a hot restart moved the serving process
// into the release directory, a final stop removes the server's own
// relative pidfile and control socket, not a file of the user's found at
// the same relative path from the new working directory.
func TestRelativeControlStop(t *testing.T) {
	s, root, release := relStart(t, "0", true)
	userFile := filepath.Join(release, "ctl.sock")
	require.NoError(t, os.WriteFile(userFile, []byte("the user's data\n"), 0o644))
	_, pid, err := s.Restart(20 * time.Second)
	require.NoError(t, err)
	waitServedBy(t, s, pid)
	require.NoError(t, s.Stop(30*time.Second))
	assert.Empty(t, proc.Running(s.Bin), "leftover processes")
	b, err := os.ReadFile(userFile)
	if assert.NoError(t, err, "the user's file at %s is gone", userFile) {
		assert.Equal(t, "the user's data\n", string(b))
	}
	assert.NoFileExists(t, filepath.Join(root, "app.pid"), "pidfile left behind")
	_, err = os.Lstat(filepath.Join(root, "ctl.sock"))
	assert.True(t, os.IsNotExist(err), "control socket left behind")
}

// TestRelativePaths: a server started with a relative command, pidfile,
// control socket and Directory restarts again and again although restarts
// start new processes in the release directory; gracectl reaches it
// through the same socket; a final stop removes its own files and nothing
// of the user's.
func TestRelativePaths(t *testing.T) {
	for _, c := range []struct {
		name    string
		workers string
		absDir  bool
	}{
		{"single", "0", false},
		{"single/absolute Directory", "0", true},
		{"cluster", "2", false},
		{"cluster/absolute Directory", "2", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, root, release := relStart(t, c.workers, c.absDir)
			ctl := filepath.Join(root, "ctl.sock")
			// A file of the user's where the socket's relative path
			// points from the release directory.
			userFile := filepath.Join(release, "ctl.sock")
			require.NoError(t, os.WriteFile(userFile, []byte("the user's data\n"), 0o644))
			assert.Equal(t, s.PID(), ctlStats(t, ctl).PID)

			for i := 1; i <= 2; i++ {
				_, pid, err := s.Restart(20 * time.Second)
				require.NoError(t, err, "hot restart %d", i)
				if c.workers == "0" {
					waitServedBy(t, s, pid)
				} else {
					waitAllGen(t, s, 0)
					out, errs, code := ctlRun(t, "--control", ctl, "phased-restart")
					require.Equal(t, 0, code, "gracectl phased-restart after hot restart %d: %s%s", i, out, errs)
					waitAllGen(t, s, 1)
				}
				assert.Equal(t, pid, ctlStats(t, ctl).PID, "gracectl after hot restart %d", i)
			}
			old := s.PID()
			out, errs, code := ctlRun(t, "--control", ctl, "restart")
			require.Equal(t, 0, code, "gracectl restart: %s%s", out, errs)
			pid, err := s.WaitPIDFile(old, 10*time.Second)
			require.NoError(t, err)
			assert.Equal(t, pid, ctlStats(t, ctl).PID)

			out, errs, code = ctlRun(t, "--control", ctl, "stop")
			require.Equal(t, 0, code, "gracectl stop: %s%s", out, errs)
			require.NoError(t, s.Stop(30*time.Second))
			assert.Empty(t, proc.Running(s.Bin), "leftover processes")
			b, err := os.ReadFile(userFile)
			if assert.NoError(t, err, "the user's file at %s is gone", userFile) {
				assert.Equal(t, "the user's data\n", string(b))
			}
			assert.NoFileExists(t, filepath.Join(root, "app.pid"), "pidfile left behind")
			_, err = os.Lstat(ctl)
			assert.True(t, os.IsNotExist(err), "control socket left behind")
		})
	}
}

// pingRecorder is a fake systemd notify socket that records when each
// message arrived.
type pingRecorder struct {
	path string
	mu   sync.Mutex
	msgs []timedMsg
}

type timedMsg struct {
	at   time.Time
	text string
}

func newPingRecorder(t *testing.T) *pingRecorder {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	require.NoError(t, err)
	p := &pingRecorder{path: path}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			p.mu.Lock()
			p.msgs = append(p.msgs, timedMsg{time.Now(), string(buf[:n])})
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return p
}

// pings returns when the watchdog pings between from and to arrived.
func (p *pingRecorder) pings(from, to time.Time) []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var at []time.Time
	for _, m := range p.msgs {
		if m.text == "WATCHDOG=1" && !m.at.Before(from) && !m.at.After(to) {
			at = append(at, m.at)
		}
	}
	return at
}

func (p *pingRecorder) waitPing(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool { return len(p.pings(time.Time{}, time.Now())) > 0 },
		15*time.Second, 2*time.Millisecond, "no watchdog ping")
}

// TestWatchdogDuringDrain: with a 1 s watchdog, a single-mode drain of a
// 5 s request keeps pinging.
func TestWatchdogDuringDrain(t *testing.T) {
	_, server := binaries(t)
	rec := newPingRecorder(t)
	s := start(t, server, "NOTIFY_SOCKET="+rec.path, "WATCHDOG_USEC=1000000", "TS_SHUTDOWN_TIMEOUT=30s")
	rec.waitPing(t)
	resp := slowRequest(t, s.Addr(), 5000)

	stopAt := time.Now()
	_, err := s.Signal(syscall.SIGTERM)
	require.NoError(t, err)
	requireBody(t, resp, 5000)
	drained := time.Now()
	require.NoError(t, waitExit(s, 60*time.Second))

	pings := rec.pings(stopAt, drained)
	prev, longest := stopAt, time.Duration(0)
	for _, at := range append(pings, drained) {
		longest = max(longest, at.Sub(prev))
		prev = at
	}
	t.Logf("%d pings during a %s drain; longest gap %s", len(pings), drained.Sub(stopAt).Round(time.Millisecond), longest.Round(time.Millisecond))
	// Pings are due every 500 ms; systemd kills the service after 1 s
	// without one.
	assert.Less(t, longest, time.Second, "the watchdog went unpinged during the drain")
	assert.GreaterOrEqual(t, len(pings), 6, "pings during the drain")
}

// TestWatchdogTinyInterval: WATCHDOG_USEC=1 does not make the server flood
// the notify socket, nor its log when the socket is missing.
func TestWatchdogTinyInterval(t *testing.T) {
	_, server := binaries(t)

	t.Run("socket", func(t *testing.T) {
		rec := newPingRecorder(t)
		s := start(t, server, "NOTIFY_SOCKET="+rec.path, "WATCHDOG_USEC=1")
		rec.waitPing(t)
		from := time.Now()
		time.Sleep(2 * time.Second) // a measuring period
		n := len(rec.pings(from, time.Now()))
		t.Logf("%d pings in 2 s", n)
		assert.Less(t, n, 200, "fewer than 100 pings a second")
		code, _, _ := get(t, "tcp", s.Addr(), "/")
		assert.Equal(t, 200, code)
		stop(t, s)
	})

	t.Run("missing socket", func(t *testing.T) {
		s := start(t, server, "NOTIFY_SOCKET="+filepath.Join(t.TempDir(), "missing.sock"), "WATCHDOG_USEC=1")
		time.Sleep(2 * time.Second) // a measuring period
		code, _, _ := get(t, "tcp", s.Addr(), "/")
		assert.Equal(t, 200, code)
		stop(t, s)
		n := strings.Count(s.Output.String(), "sd_notify failed")
		t.Logf("%d sd_notify warnings", n)
		assert.LessOrEqual(t, n, 5, "warnings about the missing notify socket")
	})
}

// TestExitZeroDuringStartup: a successor that exits with status 0 before
// it is ready is reported with its exit status.
func TestExitZeroDuringStartup(t *testing.T) {
	_, server := binaries(t)
	mode := filepath.Join(t.TempDir(), "mode")
	s := start(t, server, "TS_MODE_FILE="+mode)
	first := s.PID()
	require.NoError(t, os.WriteFile(mode, []byte("exit0"), 0o644))
	_, _, body := get(t, "tcp", s.Addr(), "/restart")
	assert.Contains(t, body, "exited during start-up: exit status 0")
	assert.NotContains(t, body, "<nil>")
	assert.NotContains(t, s.Output.String(), "exited during start-up: <nil>")
	assert.Equal(t, first, s.PID())
	stop(t, s)
}

// TestDrainEndsAtShutdownTimeout: once ShutdownTimeout has cut a request
// off, the process exits; it does not linger another second.
func TestDrainEndsAtShutdownTimeout(t *testing.T) {
	_, server := binaries(t)
	const timeout = 1500 * time.Millisecond
	s := start(t, server, "TS_SHUTDOWN_TIMEOUT=1500ms")
	resp := slowRequest(t, s.Addr(), 20000)
	begin := time.Now()
	_, err := s.Signal(syscall.SIGTERM)
	require.NoError(t, err)
	_, err = io.ReadAll(resp.Body)
	assert.Error(t, err, "the request outlasting ShutdownTimeout is cut off")
	cut := time.Since(begin)
	require.NoError(t, waitExit(s, 60*time.Second))
	took := time.Since(begin)
	t.Logf("connection closed after %s, process gone after %s", cut.Round(time.Millisecond), took.Round(time.Millisecond))
	assert.GreaterOrEqual(t, cut, timeout-100*time.Millisecond)
	assert.Less(t, took, timeout+700*time.Millisecond, "the drain outlasted ShutdownTimeout")
	m := regexp.MustCompile(`drained pid=\d+ took=(\S+)`).FindStringSubmatch(s.Output.String())
	require.NotNil(t, m, "no drained line")
	d, err := time.ParseDuration(m[1])
	require.NoError(t, err)
	assert.Less(t, d, timeout+500*time.Millisecond, "the drain outlasted ShutdownTimeout")
	stop(t, s)
}

// TestErrorPrefixOnce: a failed restart's error says "graceful:" once, not
// once per layer.
func TestErrorPrefixOnce(t *testing.T) {
	_, server := binaries(t)
	run := filepath.Join(t.TempDir(), "run")
	require.NoError(t, os.Mkdir(run, 0o755))
	s, err := proc.Start(server, run, nil)
	require.NoError(t, err)
	t.Cleanup(func() {
		s.Kill()
		proc.ReapZombies()
		if t.Failed() {
			t.Logf("server output:\n%s", s.Output)
		}
	})
	first := s.PID()
	// The pidfile cannot be written for a successor any more.
	require.NoError(t, os.RemoveAll(run))
	require.NoError(t, syscall.Kill(first, syscall.SIGUSR2))
	waitOutput(t, s, "restart failed; still serving")
	out := s.Output.String()
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, "err="); i >= 0 {
			assert.LessOrEqual(t, strings.Count(l[i:], "graceful:"), 1, "a doubled prefix in %q", l)
		}
	}
	assert.NotRegexp(t, `graceful: [^"\n]*: graceful: `, out)
	code, got, _ := get(t, "tcp", s.Addr(), "/")
	assert.Equal(t, 200, code)
	assert.Equal(t, strconv.Itoa(first), got)
	require.NoError(t, syscall.Kill(first, syscall.SIGTERM))
	require.NoError(t, waitExit(s, 60*time.Second))
	assert.Empty(t, proc.Running(server), "leftover processes")
}

// TestControlConnectionsBounded: open connections to the control socket,
// one silent and one idle after a request, neither delay a stop, and an
// idle one is closed after a bounded time.
func TestControlConnectionsBounded(t *testing.T) {
	_, server := binaries(t)
	dial := func(t *testing.T, sock string) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("unix", sock)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		require.NoError(t, c.SetDeadline(time.Now().Add(60*time.Second)))
		return c, bufio.NewReader(c)
	}
	status := func(t *testing.T, c net.Conn, br *bufio.Reader) {
		fmt.Fprint(c, "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		_, err = io.Copy(io.Discard, resp.Body)
		require.NoError(t, err)
		require.Equal(t, 200, resp.StatusCode)
	}

	t.Run("stop", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "ctl.sock")
		s := start(t, server, "TS_CONTROL="+sock)
		dial(t, sock) // silent
		idle, br := dial(t, sock)
		status(t, idle, br)
		begin := time.Now()
		_, err := s.Signal(syscall.SIGTERM)
		require.NoError(t, err)
		require.NoError(t, waitExit(s, 60*time.Second))
		took := time.Since(begin)
		t.Logf("stopped in %s", took.Round(time.Millisecond))
		assert.Less(t, took, time.Second, "open control connections delayed the stop")
		stop(t, s)
	})

	t.Run("idle", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "ctl.sock")
		s := start(t, server, "TS_CONTROL="+sock)
		c, br := dial(t, sock)
		status(t, c, br)
		idleFrom := time.Now()
		require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Second)))
		_, err := br.ReadByte()
		require.Error(t, err)
		var ne net.Error
		assert.False(t, errors.As(err, &ne) && ne.Timeout(), "an idle control connection was still open after 20 s")
		t.Logf("idle control connection closed after %s (%v)", time.Since(idleFrom).Round(time.Millisecond), err)
		stop(t, s)
	})
}

// TestListenFDsTooLarge: a LISTEN_FDS far beyond what was passed fails with
// an error that names LISTEN_FDS, not one about a descriptor the Go
// runtime opened.
func TestListenFDsTooLarge(t *testing.T) {
	_, server := binaries(t)
	port, err := proc.FreePort()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", `LISTEN_PID=$$ exec "$0"`, server)
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "LISTEN_FDS=1000", "GORACE=atexit_sleep_ms=0")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "the process must exit non-zero; output:\n%s", out)
	assert.Contains(t, string(out), "LISTEN_FDS", "the error names the variable")
	assert.NotContains(t, string(out), "inherited descriptor LISTEN_FD_", "the error is about a descriptor the process never received")
	assert.Empty(t, proc.Running(server))
}
