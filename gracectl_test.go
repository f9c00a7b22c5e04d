//go:build linux

package graceful_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gograceful/graceful/internal/proc"
)

// procStatus returns pid's state letter (R, S, T, ...) and the signal
// masks of /proc/PID/status: caught, ignored, and pending (for the
// process or one of its threads).
func procStatus(t *testing.T, pid int) (state string, caught, ignored, pending uint64) {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		mask := func() uint64 {
			m, err := strconv.ParseUint(v, 16, 64)
			require.NoError(t, err, line)
			return m
		}
		switch k {
		case "State":
			state, _, _ = strings.Cut(v, " ")
		case "SigCgt":
			caught = mask()
		case "SigIgn":
			ignored = mask()
		case "SigPnd", "ShdPnd":
			pending |= mask()
		}
	}
	return state, caught, ignored, pending
}

func bit(sig syscall.Signal) uint64 { return 1 << (uint(sig) - 1) }

// settled waits until pid has no signal pending, or has stopped, and
// returns its state: a signal sent before is then acted on.
func settled(t *testing.T, pid int) string {
	t.Helper()
	var state string
	require.Eventually(t, func() bool {
		var pending uint64
		state, _, _, pending = procStatus(t, pid)
		return pending == 0 || state == "T"
	}, 10*time.Second, 5*time.Millisecond, "signals still pending to pid %d", pid)
	return state
}

// writePIDFile writes a pidfile naming pid and dates it at mtime.
func writePIDFile(t *testing.T, path string, pid int, mtime time.Time) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(strconv.Itoa(pid)+"\n"), 0o644))
	require.NoError(t, os.Chtimes(path, mtime, mtime))
}

// TestGracectlRefusesUnrelatedProcess: a stale pidfile whose PID now
// belongs to a process that is no graceful server (here sleep) makes
// gracectl refuse every order, exit 2 and say why; the process gets no
// signal.
func TestGracectlRefusesUnrelatedProcess(t *testing.T) {
	dir := t.TempDir()
	sleep := exec.Command("sleep", "60")
	require.NoError(t, sleep.Start())
	pid := sleep.Process.Pid
	t.Cleanup(func() {
		sleep.Process.Kill()
		sleep.Wait()
	})
	pidfile := filepath.Join(dir, "app.pid")
	// Written now, after sleep started: only the check of the executable
	// and of the signals can tell.
	writePIDFile(t, pidfile, pid, time.Now())

	for _, cmd := range []string{"restart", "phased-restart", "stop", "add-worker", "remove-worker"} {
		_, errs, code := ctlRun(t, "--pidfile", pidfile, "--timeout", "2s", cmd)
		assert.Equal(t, 2, code, "%s: %s", cmd, errs)
		assert.Contains(t, errs, "refusing to signal pid "+strconv.Itoa(pid), cmd)
		assert.Contains(t, errs, "not a graceful server", cmd)
		assert.Contains(t, errs, "not a Go program", cmd)
	}
	// Any of these signals would have ended sleep (or stopped it, for
	// SIGTTIN and SIGTTOU).
	assert.True(t, proc.Alive(pid), "sleep was killed")
	state, _, _, pending := procStatus(t, pid)
	assert.NotEqual(t, "T", state, "sleep was stopped")
	assert.Zero(t, pending, "a signal is pending to sleep")
}

// TestGracectlRefusesReusedPID: a pidfile naming a live graceful server
// that started after the pidfile was last written (as when a stale pidfile's
// PID is reused) makes gracectl refuse, exit 2 and say why; the server is
// not signalled.
func TestGracectlRefusesReusedPID(t *testing.T) {
	_, server := binaries(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	written := time.Now().Add(-10 * time.Second)
	s := start(t, server, "TS_CONTROL="+sock)
	pid := s.PID()
	stale := filepath.Join(dir, "stale.pid")
	writePIDFile(t, stale, pid, written)

	for _, cmd := range []string{"restart", "stop"} {
		_, errs, code := ctlRun(t, "--pidfile", stale, "--timeout", "2s", cmd)
		assert.Equal(t, 2, code, "%s: %s", cmd, errs)
		assert.Contains(t, errs, "refusing to signal pid "+strconv.Itoa(pid), cmd)
		assert.Contains(t, errs, "after the pidfile was last written", cmd)
		assert.Contains(t, errs, "the PID was reused", cmd)
	}
	// An hour old, the usual case.
	writePIDFile(t, stale, pid, time.Now().Add(-time.Hour))
	_, errs, code := ctlRun(t, "--pidfile", stale, "stop")
	assert.Equal(t, 2, code, errs)
	assert.Contains(t, errs, "after the pidfile was last written")

	// Neither restarted nor stopping.
	st := ctlStats(t, sock)
	assert.Equal(t, pid, st.PID)
	assert.Equal(t, 0, st.Restarts)
	assert.Equal(t, "serving", st.State)
	_, got, _ := get(t, "tcp", s.Addr(), "/")
	assert.Equal(t, strconv.Itoa(pid), got)

	// The server's own pidfile, written after it started, is accepted.
	_, errs, code = ctlRun(t, "--pidfile", s.PIDFile, "stop")
	require.Equal(t, 0, code, errs)
	require.NoError(t, proc.WaitGone(pid, 20*time.Second))
	stop(t, s)
}

// TestGracectlPidfileRestarts: the checks let the right processes through:
// a server restarted through its pidfile twice (the second time the
// pidfile was written by the predecessor, after its successor started),
// then stopped; and a cluster's master grown, shrunk and phased-restarted.
func TestGracectlPidfileRestarts(t *testing.T) {
	_, server := binaries(t)
	s := start(t, server)
	for i := 0; i < 2; i++ {
		old := s.PID()
		out, errs, code := ctlRun(t, "--pidfile", s.PIDFile, "--timeout", "30s", "restart")
		require.Equal(t, 0, code, "restart %d: %s", i+1, errs)
		pid, err := s.WaitPIDFile(old, 5*time.Second)
		require.NoError(t, err)
		assert.Contains(t, out, "pid "+strconv.Itoa(pid)+" took over from pid "+strconv.Itoa(old))
		waitServedBy(t, s, pid)
		require.NoError(t, proc.WaitGone(old, 20*time.Second))
	}
	pid := s.PID()
	out, errs, code := ctlRun(t, "--pidfile", s.PIDFile, "--timeout", "30s", "stop")
	require.Equal(t, 0, code, errs)
	assert.Contains(t, out, "pid "+strconv.Itoa(pid)+" exited")
	stop(t, s)

	c := start(t, server, "TS_WORKERS=2")
	waitWorkers(t, c, 2)
	_, errs, code = ctlRun(t, "--pidfile", c.PIDFile, "add-worker")
	require.Equal(t, 0, code, errs)
	waitWorkers(t, c, 3)
	_, errs, code = ctlRun(t, "--pidfile", c.PIDFile, "remove-worker")
	require.Equal(t, 0, code, errs)
	waitWorkers(t, c, 2)
	_, errs, code = ctlRun(t, "--pidfile", c.PIDFile, "phased-restart")
	require.Equal(t, 0, code, errs)
	waitAllGen(t, c, 1)
	stop(t, c)
}

// TestGracectlSingleModeNoWorkers: through the pidfile, add-worker,
// remove-worker and phased-restart of a single-mode server exit 1 saying
// that single mode has no workers, and send nothing: the server serves on,
// not restarted.
func TestGracectlSingleModeNoWorkers(t *testing.T) {
	_, server := binaries(t)
	sock := filepath.Join(t.TempDir(), "control.sock")
	s := start(t, server, "TS_CONTROL="+sock)
	pid := s.PID()
	for _, cmd := range []string{"add-worker", "remove-worker", "phased-restart"} {
		out, errs, code := ctlRun(t, "--pidfile", s.PIDFile, "--timeout", "2s", cmd)
		assert.Equal(t, 1, code, "%s: %s%s", cmd, out, errs)
		assert.Contains(t, errs, "single mode has no workers", cmd)
		assert.Contains(t, errs, "nothing sent", cmd)
	}
	assert.NotEqual(t, "T", settled(t, pid), "the server was stopped")
	st := ctlStats(t, sock)
	assert.Equal(t, pid, st.PID)
	assert.Equal(t, "serving", st.State)
	assert.Equal(t, 0, st.Restarts)
	_, got, _ := get(t, "tcp", s.Addr(), "/")
	assert.Equal(t, strconv.Itoa(pid), got)
	stop(t, s)
}

// TestSingleModeIgnoresTTIN: SIGTTIN and SIGTTOU sent from a shell to a
// single-mode server, which has no workers to add or remove, do not stop it
// (their default action): it ignores them and serves on. A cluster's master
// and its workers catch them.
func TestSingleModeIgnoresTTIN(t *testing.T) {
	_, server := binaries(t)
	s := start(t, server)
	pid := s.PID()
	for _, sig := range []syscall.Signal{syscall.SIGTTIN, syscall.SIGTTOU} {
		kill := "kill -" + strings.TrimPrefix(sigName(sig), "SIG") + " " + strconv.Itoa(pid)
		require.NoError(t, exec.Command("sh", "-c", kill).Run(), kill)
		assert.NotEqual(t, "T", settled(t, pid), "%s stopped the server", sigName(sig))
		code, got, _ := get(t, "tcp", s.Addr(), "/")
		assert.Equal(t, 200, code)
		assert.Equal(t, strconv.Itoa(pid), got)
	}
	_, caught, ignored, _ := procStatus(t, pid)
	for _, sig := range []syscall.Signal{syscall.SIGTTIN, syscall.SIGTTOU} {
		assert.NotZero(t, ignored&bit(sig), "single mode ignores %s", sigName(sig))
		assert.Zero(t, caught&bit(sig), "single mode catches %s", sigName(sig))
	}
	stop(t, s)

	// Notify after Ignore: the master catches them again; so do workers.
	c := start(t, server, "TS_WORKERS=1")
	var worker int
	for p := range waitAllGen(t, c, 0) { // the worker serves: its signals are set
		worker, _ = strconv.Atoi(p)
	}
	require.NotZero(t, worker)
	for _, p := range []int{c.PID(), worker} {
		_, caught, ignored, _ := procStatus(t, p)
		for _, sig := range []syscall.Signal{syscall.SIGTTIN, syscall.SIGTTOU} {
			assert.NotZero(t, caught&bit(sig), "pid %d catches %s", p, sigName(sig))
			assert.Zero(t, ignored&bit(sig), "pid %d ignores %s", p, sigName(sig))
		}
	}
	stop(t, c)
}

func sigName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGTTIN:
		return "SIGTTIN"
	case syscall.SIGTTOU:
		return "SIGTTOU"
	}
	return sig.String()
}
