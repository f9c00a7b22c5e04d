//go:build linux

package graceful_test

import (
	"fmt"
	"net"
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

	"github.com/gograceful/graceful/internal/loadgen"
	"github.com/gograceful/graceful/internal/proc"
)

// children returns the PIDs of pid's children.
func children(pid int) []int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// startPID1 runs bin as PID 1 of a new PID namespace, as a container's
// entrypoint runs, and returns the unshare command and bin's PID as this
// test sees it.
func startPID1(t *testing.T, bin string, port int, env ...string) (*exec.Cmd, int, *proc.Buffer) {
	t.Helper()
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) not installed")
	}
	probe := exec.Command("unshare", "--pid", "--fork", "--mount-proc", "true")
	if out, err := probe.CombinedOutput(); err != nil {
		t.Skipf("cannot make a PID namespace here: %v %s", err, out)
	}
	out := &proc.Buffer{}
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount-proc", bin)
	cmd.Env = append(os.Environ(), append([]string{"PORT=" + strconv.Itoa(port), "GORACE=atexit_sleep_ms=0"}, env...)...)
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("output:\n%s", out)
		}
		cmd.Process.Kill() // unshare; its namespace dies with its PID 1
		for _, c := range children(cmd.Process.Pid) {
			syscall.Kill(c, syscall.SIGKILL)
		}
		cmd.Wait()
		proc.ReapZombies()
	})
	var pid int
	require.Eventually(t, func() bool {
		if c := children(cmd.Process.Pid); len(c) == 1 {
			pid = c[0]
		}
		if pid == 0 {
			return false
		}
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
		}
		return err == nil
	}, 20*time.Second, 5*time.Millisecond, "not serving; output:\n%s", out)
	return cmd, pid, out
}

// TestContainerPID1: as a container's PID 1, a single-mode server refuses
// a hot restart, which would end the container, and keeps serving; a
// cluster's master, PID 1 throughout, replaces its workers under load.
func TestContainerPID1(t *testing.T) {
	_, server := binaries(t)
	port, err := proc.FreePort()
	require.NoError(t, err)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd, pid, out := startPID1(t, server, port)
	require.NoError(t, syscall.Kill(pid, syscall.SIGUSR2))
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "restart refused: this process is PID 1") },
		10*time.Second, 5*time.Millisecond)
	code, xpid, _ := get(t, "tcp", addr, "/")
	assert.Equal(t, 200, code)
	assert.Equal(t, "1", xpid, "still served by PID 1")
	require.NoError(t, syscall.Kill(pid, syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "exit status")

	port, err = proc.FreePort()
	require.NoError(t, err)
	addr = "127.0.0.1:" + strconv.Itoa(port)
	cmd, pid, out = startPID1(t, server, port, "TS_WORKERS=2")
	gen := loadgen.Start(loadgen.Config{Addr: addr, KeepAlive: 2, Fresh: 1, Duration: 30 * time.Second})
	require.True(t, gen.WaitDone(100, 10*time.Second))
	require.NoError(t, syscall.Kill(pid, syscall.SIGUSR1))
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "phased restart complete") },
		15*time.Second, 5*time.Millisecond)
	require.True(t, gen.WaitDone(100, 10*time.Second))
	res := gen.Stop()
	assertNoFailures(t, res)
	require.NoError(t, syscall.Kill(pid, syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "exit status")
}

// supervisord runs supervisord in the foreground with one program, and
// returns a function running supervisorctl.
func supervisord(t *testing.T, program string) func(args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("supervisord"); err != nil {
		t.Skip("supervisord not installed (Debian: apt-get install supervisor)")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "supervisord.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`[supervisord]
nodaemon=true
logfile=%[1]s/supervisord.log
pidfile=%[1]s/supervisord.pid
[unix_http_server]
file=%[1]s/supervisor.sock
[supervisorctl]
serverurl=unix://%[1]s/supervisor.sock
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
%[2]s
`, dir, program)), 0o644))
	cmd := exec.Command("supervisord", "-c", conf)
	out := &proc.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	ctl := func(args ...string) string {
		b, _ := exec.Command("supervisorctl", append([]string{"-c", conf}, args...)...).CombinedOutput()
		return string(b)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "supervisord.log"))
			t.Logf("supervisord:\n%s\n%s", out, b)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		proc.ReapZombies()
	})
	require.Eventually(t, func() bool { return strings.Contains(ctl("status", "app"), "RUNNING") },
		20*time.Second, 50*time.Millisecond)
	return ctl
}

// TestSupervisord: under a monitor that tracks one PID, cluster mode keeps
// it: phased restarts and gracectl work and the program stays RUNNING with
// the same PID. A single-mode hot restart does what the README says it
// does there: the monitor sees its child exit, and the successor serves
// on without it.
func TestSupervisord(t *testing.T) {
	_, server := binaries(t)
	port, err := proc.FreePort()
	require.NoError(t, err)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	sock := filepath.Join(t.TempDir(), "control.sock")
	ctl := supervisord(t, fmt.Sprintf(`[program:app]
command=%s
environment=PORT="%d",TS_WORKERS="2",TS_CONTROL="%s",GORACE="atexit_sleep_ms=0"
startsecs=1
stopwaitsecs=40
autorestart=true
`, server, port, sock))
	pidOf := func() int {
		n, _ := strconv.Atoi(strings.TrimSpace(ctl("pid", "app")))
		return n
	}
	master := pidOf()
	require.NotZero(t, master)
	gen := loadgen.Start(loadgen.Config{Addr: addr, KeepAlive: 2, Fresh: 1, Duration: 60 * time.Second})
	require.True(t, gen.WaitDone(100, 10*time.Second))
	assert.Contains(t, ctl("signal", "USR1", "app"), "signalled")
	out, errs, code := ctlRun(t, "--control", sock, "phased-restart")
	require.Equal(t, 0, code, errs)
	assert.Contains(t, out, "phased-restart: done")
	require.True(t, gen.WaitDone(100, 10*time.Second))
	res := gen.Stop()
	assertNoFailures(t, res)
	assert.Contains(t, ctl("status", "app"), "RUNNING")
	assert.Equal(t, master, pidOf(), "the master kept its PID")
	assert.Contains(t, ctl("stop", "app"), "stopped")
	assert.False(t, proc.Alive(master))
}

// TestSupervisordSingleHotRestart documents the trap: in single mode under
// supervisord, SIGUSR2 moves the service to a new PID that supervisord
// does not know. The service stays up, but supervisord's restarts of its
// "exited" program fail on the port in use.
func TestSupervisordSingleHotRestart(t *testing.T) {
	_, server := binaries(t)
	port, err := proc.FreePort()
	require.NoError(t, err)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	ctl := supervisord(t, fmt.Sprintf(`[program:app]
command=%s
environment=PORT="%d",GORACE="atexit_sleep_ms=0"
startsecs=1
startretries=1
autorestart=true
`, server, port))
	first, _ := strconv.Atoi(strings.TrimSpace(ctl("pid", "app")))
	require.NotZero(t, first)
	ctl("signal", "USR2", "app")
	var successor int
	require.Eventually(t, func() bool {
		_, xpid, _ := get(t, "tcp", addr, "/")
		successor, _ = strconv.Atoi(xpid)
		return successor != first && successor != 0
	}, 10*time.Second, 5*time.Millisecond)
	t.Cleanup(func() {
		syscall.Kill(successor, syscall.SIGKILL)
		proc.WaitGone(successor, 5*time.Second)
	})
	require.Eventually(t, func() bool { return strings.Contains(ctl("status", "app"), "FATAL") },
		30*time.Second, 100*time.Millisecond, "supervisord: %s", ctl("status", "app"))
	_, xpid, _ := get(t, "tcp", addr, "/")
	assert.Equal(t, strconv.Itoa(successor), xpid, "the successor still serves, unsupervised")
	require.NoError(t, syscall.Kill(successor, syscall.SIGTERM))
	require.NoError(t, proc.WaitGone(successor, 10*time.Second))
}
