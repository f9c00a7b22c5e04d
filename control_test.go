//go:build linux

package graceful_test

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gograceful/graceful"
	"github.com/gograceful/graceful/internal/loadgen"
	"github.com/gograceful/graceful/internal/proc"
)

var ctlBin struct {
	once sync.Once
	path string
	err  error
}

// gracectl builds cmd/gracectl once per test run.
func gracectl(t *testing.T) string {
	t.Helper()
	binaries(t) // for bins.dir
	ctlBin.once.Do(func() {
		ctlBin.path = filepath.Join(bins.dir, "gracectl")
		ctlBin.err = proc.Build(".", "./cmd/gracectl", ctlBin.path)
	})
	require.NoError(t, ctlBin.err)
	return ctlBin.path
}

// ctlRun runs gracectl with args and returns its stdout, stderr and exit
// status.
func ctlRun(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(gracectl(t), args...)
	var out, errb proc.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return out.String(), errb.String(), code
}

func ctlStats(t *testing.T, sock string) *graceful.Status {
	t.Helper()
	out, errs, code := ctlRun(t, "--control", sock, "stats")
	require.Equal(t, 0, code, "gracectl stats: %s", errs)
	st := &graceful.Status{}
	require.NoError(t, json.Unmarshal([]byte(out), st), out)
	return st
}

// TestControlSingle drives a single-mode server through gracectl: stats,
// a restart that waits under load, a failed restart reported with its
// reason, --no-wait, and stop.
func TestControlSingle(t *testing.T) {
	_, server := binaries(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	modeFile := filepath.Join(dir, "mode")
	s := start(t, server, "TS_CONTROL="+sock, "TS_MODE_FILE="+modeFile)

	fi, err := os.Stat(sock)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "control socket mode")
	assert.NotZero(t, fi.Mode()&os.ModeSocket)

	for i := 0; i < 5; i++ {
		get(t, "tcp", s.Addr(), "/")
	}
	st := ctlStats(t, sock)
	assert.Equal(t, "single", st.Mode)
	assert.Equal(t, s.PID(), st.PID)
	assert.Equal(t, "serving", st.State)
	assert.Equal(t, 0, st.Restarts)
	assert.Contains(t, st.Listeners, "tcp:"+s.Addr())
	assert.GreaterOrEqual(t, st.RequestsTotal, uint64(5))
	assert.Zero(t, st.RequestsInFlight)

	// A restart that waits, under load.
	gen := loadgen.Start(loadgen.Config{Addr: s.Addr(), KeepAlive: 2, Fresh: 1, Duration: 30 * time.Second, MaxRequests: 1000})
	require.Eventually(t, func() bool { return ctlStats(t, sock).RequestsTotal > 100 }, 10*time.Second, 5*time.Millisecond)
	old := s.PID()
	out, errs, code := ctlRun(t, "--control", sock, "restart")
	require.Equal(t, 0, code, "gracectl restart: %s", errs)
	pid, err := s.WaitPIDFile(old, 5*time.Second)
	require.NoError(t, err)
	assert.Contains(t, out, "pid "+strconv.Itoa(pid)+" took over from pid "+strconv.Itoa(old))
	// When gracectl returns, the new process already serves.
	_, got, _ := get(t, "tcp", s.Addr(), "/")
	assert.Equal(t, strconv.Itoa(pid), got)
	res := gen.Wait()
	assertNoFailures(t, res)
	assert.Contains(t, res.PIDs(), strconv.Itoa(pid), "the load reached the new process")
	require.NoError(t, proc.WaitGone(old, 10*time.Second))
	st = ctlStats(t, sock)
	assert.Equal(t, pid, st.PID)
	assert.Equal(t, 1, st.Restarts)

	// A restart that fails says why, and the server serves on.
	require.NoError(t, os.WriteFile(modeFile, []byte("exit"), 0o644))
	_, errs, code = ctlRun(t, "--control", sock, "restart")
	assert.Equal(t, 1, code)
	assert.Contains(t, errs, "exited during start-up: exit status 3")
	assert.Contains(t, errs, "configured to fail")
	_, got, _ = get(t, "tcp", s.Addr(), "/")
	assert.Equal(t, strconv.Itoa(pid), got)
	st = ctlStats(t, sock)
	require.NotNil(t, st.LastRestart)
	assert.Equal(t, "hot", st.LastRestart.Kind)
	assert.Contains(t, st.LastRestart.Error, "exit status 3")
	human, _, code := ctlRun(t, "--control", sock, "status")
	assert.Equal(t, 0, code)
	assert.Regexp(t, `(?m)^mode +single$`, human)
	assert.Contains(t, human, "failed: ")

	// --no-wait returns once the order is taken.
	require.NoError(t, os.WriteFile(modeFile, nil, 0o644))
	out, errs, code = ctlRun(t, "--control", sock, "--no-wait", "restart")
	require.Equal(t, 0, code, errs)
	assert.Contains(t, out, "ordered")
	pid2, err := s.WaitPIDFile(pid, 10*time.Second)
	require.NoError(t, err)

	// Stop drains, and the socket file goes with the server.
	require.NoError(t, proc.WaitGone(pid, 10*time.Second))
	out, errs, code = ctlRun(t, "--control", sock, "stop")
	require.Equal(t, 0, code, errs)
	assert.Contains(t, out, "pid "+strconv.Itoa(pid2)+" drained")
	require.NoError(t, proc.WaitGone(pid2, 10*time.Second))
	assert.NoFileExists(t, sock)
	_, errs, code = ctlRun(t, "--control", sock, "status")
	assert.Equal(t, 2, code)
	assert.Contains(t, errs, "no control socket at "+sock)
	stop(t, s)
}

// TestControlErrors: a stale pidfile, a stale socket, a control socket
// already in use, and status without a control socket each get a clear
// message.
func TestControlErrors(t *testing.T) {
	_, server := binaries(t)
	dir := t.TempDir()

	// A pidfile naming a process that has exited.
	dead := exec.Command("true")
	require.NoError(t, dead.Run())
	pidfile := filepath.Join(dir, "stale.pid")
	require.NoError(t, os.WriteFile(pidfile, []byte(strconv.Itoa(dead.Process.Pid)+"\n"), 0o644))
	_, errs, code := ctlRun(t, "--pidfile", pidfile, "restart")
	assert.Equal(t, 2, code)
	assert.Contains(t, errs, "which is not running (stale pidfile)")
	_, errs, _ = ctlRun(t, "--pidfile", filepath.Join(dir, "none.pid"), "stop")
	assert.Contains(t, errs, "does not exist: is the server running?")

	// A socket file nobody listens on.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.Listen("unix", stale)
	require.NoError(t, err)
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	_, errs, code = ctlRun(t, "--control", stale, "status")
	assert.Equal(t, 2, code)
	assert.Contains(t, errs, "stale socket")

	// A server starts over a stale socket file, but not over a live one.
	s := start(t, server, "TS_CONTROL="+stale)
	st := ctlStats(t, stale)
	assert.Equal(t, s.PID(), st.PID)
	second, err := proc.StartWrapped(nil, server, t.TempDir(), []string{"TS_CONTROL=" + stale})
	if err == nil {
		second.Kill()
	}
	require.Error(t, err)
	assert.Contains(t, err.Error(), "control socket "+stale+": in use by another process")
	assert.Equal(t, s.PID(), ctlStats(t, stale).PID, "the first server still answers")

	// With only the pidfile, status finds the socket through the state
	// file; restart waits on it.
	out, errs, code := ctlRun(t, "--pidfile", s.PIDFile, "status")
	assert.Equal(t, 0, code, errs)
	assert.Regexp(t, `(?m)^pid +`+strconv.Itoa(s.PID())+` `, out)
	old := s.PID()
	out, errs, code = ctlRun(t, "--pidfile", s.PIDFile, "restart")
	require.Equal(t, 0, code, errs)
	pid, err := s.WaitPIDFile(old, time.Second)
	require.NoError(t, err)
	assert.Contains(t, out, "pid "+strconv.Itoa(pid)+" took over")
	stop(t, s)
}

// TestControlCluster: status lists the workers with their check-ins and
// request counts; a phased restart waits and reports a worker that fails
// to boot; workers are added and removed.
func TestControlCluster(t *testing.T) {
	_, server := binaries(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	modeFile := filepath.Join(dir, "mode")
	s := start(t, server, "TS_CONTROL="+sock, "TS_WORKERS=2", "TS_WORKER_TIMEOUT=2s", "TS_MODE_FILE="+modeFile)
	waitWorkers(t, s, 2)
	for i := 0; i < 20; i++ {
		get(t, "tcp", s.Addr(), "/")
	}
	var st *graceful.Status
	require.Eventually(t, func() bool {
		st = ctlStats(t, sock)
		return len(st.Workers) == 2 && st.RequestsTotal >= 20 &&
			!st.Workers[0].LastCheckin.IsZero() && !st.Workers[1].LastCheckin.IsZero()
	}, 10*time.Second, 50*time.Millisecond, "status: %+v", st)
	assert.Equal(t, "cluster", st.Mode)
	assert.Equal(t, s.PID(), st.PID)
	assert.Equal(t, 2, st.WorkersWanted)
	assert.ElementsMatch(t, workers(s), []int{st.Workers[0].PID, st.Workers[1].PID})
	for i, w := range st.Workers {
		assert.Equal(t, i, w.ID)
		assert.Equal(t, "ready", w.State)
		assert.Equal(t, 0, w.Generation)
		assert.WithinDuration(t, time.Now(), w.LastCheckin, 2*time.Second)
	}
	human, _, _ := ctlRun(t, "--control", sock, "status")
	assert.Contains(t, human, "CHECK-IN")

	gen := loadgen.Start(loadgen.Config{Addr: s.Addr(), KeepAlive: 2, Fresh: 1, Duration: 30 * time.Second})
	before := st.RequestsTotal
	require.Eventually(t, func() bool { return ctlStats(t, sock).RequestsTotal > before+100 }, 10*time.Second, 20*time.Millisecond)
	out, errs, code := ctlRun(t, "--control", sock, "phased-restart")
	require.Equal(t, 0, code, errs)
	assert.Contains(t, out, "generation 1, 2 workers")
	st = ctlStats(t, sock)
	assert.Equal(t, 1, st.Generation)
	for _, w := range st.Workers {
		if w.State != "draining" {
			assert.Equal(t, 1, w.Generation)
		}
	}

	// A worker that fails to boot stops the phase; the reason comes back.
	require.NoError(t, os.WriteFile(modeFile, []byte("exit"), 0o644))
	_, errs, code = ctlRun(t, "--control", sock, "phased-restart")
	assert.Equal(t, 1, code)
	assert.Contains(t, errs, "worker 0 failed to boot: worker")
	assert.Contains(t, errs, "exited during start-up: exit status 3; last output: testserver: configured to fail: exiting")
	require.NoError(t, os.WriteFile(modeFile, nil, 0o644))
	res := gen.Stop()
	assertNoFailures(t, res)

	out, errs, code = ctlRun(t, "--control", sock, "add-worker")
	require.Equal(t, 0, code, errs)
	waitWorkers(t, s, 3)
	assert.Equal(t, 3, ctlStats(t, sock).WorkersWanted)
	_, errs, code = ctlRun(t, "--control", sock, "remove-worker")
	require.Equal(t, 0, code, errs)
	waitWorkers(t, s, 2)
	_, _, code = ctlRun(t, "--control", sock, "remove-worker")
	require.Equal(t, 0, code)
	_, errs, code = ctlRun(t, "--control", sock, "remove-worker")
	assert.Equal(t, 1, code)
	assert.Contains(t, errs, "at least one worker stays")
	_ = out
	stop(t, s)
}

// TestControlPermission: another user may not use the control socket, and
// gracectl says so.
func TestControlPermission(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run gracectl as another user")
	}
	runuser, err := exec.LookPath("runuser")
	if err != nil {
		t.Skip("runuser not installed")
	}
	_, server := binaries(t)
	// A directory every user may enter, so that only the socket's own mode
	// stands in the way.
	dir, err := os.MkdirTemp("", "graceful-perm-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	ctl := filepath.Join(dir, "gracectl")
	b, err := os.ReadFile(gracectl(t))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(ctl, b, 0o755))
	sock := filepath.Join(dir, "control.sock")
	s := start(t, server, "TS_CONTROL="+sock)

	var out, errb proc.Buffer
	cmd := exec.Command(runuser, "-u", "nobody", "--", ctl, "--control", sock, "status")
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "gracectl as nobody: %s", out.String())
	assert.Equal(t, 2, ee.ExitCode())
	assert.Contains(t, errb.String(), "may not open control socket "+sock+": permission denied (it is mode 0600, owned by uid 0")
	assert.Equal(t, s.PID(), ctlStats(t, sock).PID, "its owner still can")
	stop(t, s)
}

// TestStatsCountEveryRequest: a cluster's request total counts every
// request, also those its workers served after their last heartbeat before
// a phased restart replaced them.
func TestStatsCountEveryRequest(t *testing.T) {
	_, server := binaries(t)
	sock := filepath.Join(t.TempDir(), "control.sock")
	// One heartbeat a second: the requests below fall between two.
	s := start(t, server, "TS_CONTROL="+sock, "TS_WORKERS=2", "TS_WORKER_TIMEOUT=60s")
	waitWorkers(t, s, 2)
	const n = 50
	for i := 0; i < n; i++ {
		code, _, _ := get(t, "tcp", s.Addr(), "/")
		require.Equal(t, 200, code)
	}
	_, errs, code := ctlRun(t, "--control", sock, "phased-restart")
	require.Equal(t, 0, code, errs)
	var st *graceful.Status
	require.Eventually(t, func() bool {
		st = ctlStats(t, sock)
		for _, w := range st.Workers {
			if w.Generation != 1 || w.State != "ready" {
				return false
			}
		}
		return len(st.Workers) == 2
	}, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, uint64(n), st.RequestsTotal, "requests counted: %+v", st)
	assert.Zero(t, st.RequestsInFlight)
	stop(t, s)
}
