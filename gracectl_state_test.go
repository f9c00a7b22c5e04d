//go:build linux

package graceful_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gograceful/graceful"
	"github.com/gograceful/graceful/internal/proc"
)

// quick is how soon gracectl must report a failed start that the server
// logs within milliseconds: generous for a loaded 2-core machine, far below
// the --timeout the commands are given, which is what they waited before.
const quick = 10 * time.Second

// readState reads the server's state file.
func readState(t *testing.T, s *proc.Server) *graceful.State {
	t.Helper()
	st, err := graceful.ReadState(s.PIDFile)
	require.NoError(t, err)
	return st
}

// ctlTimed runs gracectl and returns also how long it took.
func ctlTimed(t *testing.T, args ...string) (string, string, int, time.Duration) {
	t.Helper()
	t0 := time.Now()
	out, errs, code := ctlRun(t, args...)
	return out, errs, code, time.Since(t0)
}

// TestGracectlPidfileHotOutcome: with only a pidfile (and no control
// socket), `gracectl restart` of a release that cannot start exits 1
// within seconds with the reason the server logged, and the server serves
// on; a good release exits 0 once the new process serves, which the state
// file then names. A final stop removes the state file with the pidfile.
func TestGracectlPidfileHotOutcome(t *testing.T) {
	_, server := binaries(t)
	modeFile := filepath.Join(t.TempDir(), "mode")
	s := start(t, server, "TS_MODE_FILE="+modeFile)
	pid := s.PID()

	// A release that cannot start.
	require.NoError(t, os.WriteFile(modeFile, []byte("exit"), 0o644))
	out, errs, code, took := ctlTimed(t, "--pidfile", s.PIDFile, "--timeout", "30s", "restart")
	assert.Equal(t, 1, code, "%s%s", out, errs)
	assert.Less(t, took, quick, "gracectl took %s to report the failure", took)
	assert.Contains(t, errs, "restart failed: ")
	assert.Contains(t, errs, "exited during start-up: exit status 3")
	assert.Contains(t, errs, "configured to fail")
	assert.Equal(t, pid, s.PID())
	_, got, _ := get(t, "tcp", s.Addr(), "/")
	assert.Equal(t, strconv.Itoa(pid), got, "the old process serves on")
	fi, err := os.Stat(graceful.StatePath(s.PIDFile))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
	st := readState(t, s)
	assert.Equal(t, pid, st.PID)
	assert.Equal(t, "single", st.Mode)
	assert.Empty(t, st.Control)
	require.NotNil(t, st.LastRestart)
	assert.Equal(t, "hot", st.LastRestart.Kind)
	assert.Contains(t, st.LastRestart.Error, "configured to fail")

	// A good release: when gracectl returns, the new process serves.
	require.NoError(t, os.WriteFile(modeFile, nil, 0o644))
	out, errs, code, took = ctlTimed(t, "--pidfile", s.PIDFile, "--timeout", "60s", "restart")
	require.Equal(t, 0, code, "%s%s", out, errs)
	assert.Less(t, took, quick)
	newPID, err := s.WaitPIDFile(pid, time.Second)
	require.NoError(t, err)
	assert.Contains(t, out, "pid "+strconv.Itoa(newPID)+" took over from pid "+strconv.Itoa(pid))
	// The successor names itself in the state file just before it says
	// "serving"; the old process stops accepting when it reads that, a
	// moment later. Until then a fresh connection may still reach it.
	assert.Eventually(t, func() bool {
		_, got, _ := get(t, "tcp", s.Addr(), "/")
		return got == strconv.Itoa(newPID)
	}, time.Second, 5*time.Millisecond, "the new process serves fresh connections")
	st = readState(t, s)
	assert.Equal(t, newPID, st.PID)
	assert.Equal(t, 1, st.Restarts)
	require.NotNil(t, st.LastRestart)
	assert.Equal(t, "hot", st.LastRestart.Kind)
	assert.Empty(t, st.LastRestart.Error)
	assert.False(t, st.LastRestart.Finished.IsZero())
	require.NoError(t, proc.WaitGone(pid, 20*time.Second))
	// The old process, retired, left the file to its successor.
	assert.Equal(t, newPID, readState(t, s).PID)

	// And the new process reports its own failed restart.
	require.NoError(t, os.WriteFile(modeFile, []byte("exit"), 0o644))
	_, errs, code, took = ctlTimed(t, "--pidfile", s.PIDFile, "--timeout", "60s", "restart")
	assert.Equal(t, 1, code, errs)
	assert.Less(t, took, quick)
	assert.Contains(t, errs, "configured to fail")

	_, errs, code = ctlRun(t, "--pidfile", s.PIDFile, "--timeout", "30s", "stop")
	require.Equal(t, 0, code, errs)
	assert.NoFileExists(t, s.PIDFile)
	assert.NoFileExists(t, graceful.StatePath(s.PIDFile))
	stop(t, s)
}

// TestGracectlPidfilePhasedOutcome: with only a pidfile, `gracectl
// phased-restart` of a cluster waits until every worker is replaced and
// exits 0, or exits 1 within seconds with the reason a new worker failed
// to boot while the old workers serve on; a hot restart of the master
// through the pidfile exits 0 once the new master serves.
func TestGracectlPidfilePhasedOutcome(t *testing.T) {
	_, server := binaries(t)
	modeFile := filepath.Join(t.TempDir(), "mode")
	s := start(t, server, "TS_WORKERS=2", "TS_MODE_FILE="+modeFile)
	master := s.PID()
	waitAllGen(t, s, 0)

	out, errs, code, took := ctlTimed(t, "--pidfile", s.PIDFile, "--timeout", "60s", "phased-restart")
	require.Equal(t, 0, code, "%s%s", out, errs)
	assert.Less(t, took, 30*time.Second)
	assert.Contains(t, out, "phased-restart: done; every worker of pid "+strconv.Itoa(master)+" replaced")
	st := readState(t, s)
	assert.Equal(t, master, st.PID)
	assert.Equal(t, "cluster", st.Mode)
	require.NotNil(t, st.LastRestart)
	assert.Equal(t, "phased", st.LastRestart.Kind)
	assert.False(t, st.LastRestart.Finished.IsZero())
	assert.Empty(t, st.LastRestart.Error)
	waitAllGen(t, s, 1)

	// A release whose workers cannot boot.
	require.NoError(t, os.WriteFile(modeFile, []byte("exit"), 0o644))
	out, errs, code, took = ctlTimed(t, "--pidfile", s.PIDFile, "--timeout", "60s", "phased-restart")
	assert.Equal(t, 1, code, "%s%s", out, errs)
	assert.Less(t, took, quick, "gracectl took %s to report the failure", took)
	assert.Contains(t, errs, "phased-restart failed: ")
	assert.Contains(t, errs, "failed to boot")
	assert.Contains(t, errs, "configured to fail")
	require.NoError(t, os.WriteFile(modeFile, nil, 0o644))
	waitAllGen(t, s, 1) // the old workers serve on

	// A hot restart of the whole tree: a new master that cannot start,
	// then one that can.
	require.NoError(t, os.WriteFile(modeFile, []byte("exit"), 0o644))
	out, errs, code, took = ctlTimed(t, "--pidfile", s.PIDFile, "--timeout", "60s", "restart")
	assert.Equal(t, 1, code, "%s%s", out, errs)
	assert.Less(t, took, quick, "gracectl took %s to report the failure", took)
	assert.Contains(t, errs, "restart failed: ")
	assert.Contains(t, errs, "configured to fail")
	assert.Equal(t, master, s.PID())
	require.NoError(t, os.WriteFile(modeFile, nil, 0o644))
	out, errs, code = ctlRun(t, "--pidfile", s.PIDFile, "--timeout", "60s", "restart")
	require.Equal(t, 0, code, "%s%s", out, errs)
	newMaster, err := s.WaitPIDFile(master, time.Second)
	require.NoError(t, err)
	assert.Contains(t, out, "pid "+strconv.Itoa(newMaster)+" took over from pid "+strconv.Itoa(master))
	st = readState(t, s)
	assert.Equal(t, newMaster, st.PID)
	assert.Equal(t, "cluster", st.Mode)
	require.NoError(t, proc.WaitGone(master, 30*time.Second))
	stop(t, s)
}

// TestGracectlPidfileStatus: with only a pidfile, status and stats answer
// through the control socket the state file names, also after a hot
// restart; without a control socket they show what the state file records
// and say that the rest needs one.
func TestGracectlPidfileStatus(t *testing.T) {
	_, server := binaries(t)
	sock := filepath.Join(t.TempDir(), "control.sock")
	s := start(t, server, "TS_CONTROL="+sock)
	pid := s.PID()
	for i := 0; i < 3; i++ {
		get(t, "tcp", s.Addr(), "/")
	}
	out, errs, code := ctlRun(t, "--pidfile", s.PIDFile, "stats")
	require.Equal(t, 0, code, errs)
	var full graceful.Status
	require.NoError(t, json.Unmarshal([]byte(out), &full), out)
	assert.Equal(t, pid, full.PID)
	assert.Equal(t, "serving", full.State)
	assert.GreaterOrEqual(t, full.RequestsTotal, uint64(3))
	out, errs, code = ctlRun(t, "--pidfile", s.PIDFile, "status")
	require.Equal(t, 0, code, errs)
	assert.Regexp(t, `(?m)^mode +single$`, out)
	assert.Regexp(t, `(?m)^requests +0 in flight, [0-9]+ served$`, out)
	assert.Equal(t, sock, readState(t, s).Control)

	_, errs, code = ctlRun(t, "--pidfile", s.PIDFile, "--timeout", "60s", "restart")
	require.Equal(t, 0, code, errs)
	newPID, err := s.WaitPIDFile(pid, time.Second)
	require.NoError(t, err)
	out, errs, code = ctlRun(t, "--pidfile", s.PIDFile, "stats")
	require.Equal(t, 0, code, errs)
	require.NoError(t, json.Unmarshal([]byte(out), &full), out)
	assert.Equal(t, newPID, full.PID)
	assert.Equal(t, 1, full.Restarts)
	require.NoError(t, proc.WaitGone(pid, 20*time.Second))
	stop(t, s)

	// No control socket: what the state file knows, and what it cannot.
	n := start(t, server)
	pid = n.PID()
	out, errs, code = ctlRun(t, "--pidfile", n.PIDFile, "status")
	require.Equal(t, 0, code, errs)
	assert.Regexp(t, `(?m)^mode +single$`, out)
	assert.Regexp(t, `(?m)^pid +`+strconv.Itoa(pid)+` \(up `, out)
	assert.Contains(t, out, "no control socket: the state, listeners, requests in flight and served, and workers are known only through it")
	assert.Contains(t, out, "set the Server's Control field")
	out, errs, code = ctlRun(t, "--pidfile", n.PIDFile, "stats")
	require.Equal(t, 0, code, errs)
	assert.Contains(t, errs, "no control socket")
	var known graceful.State
	require.NoError(t, json.Unmarshal([]byte(out), &known), out)
	assert.Equal(t, pid, known.PID)
	assert.Equal(t, "single", known.Mode)
	stop(t, n)
}

// TestGracectlPidfileDamagedState: a server whose state file was removed
// (a tmp cleaner) or damaged rewrites it as the restart begins; `gracectl
// restart` of a release that cannot start must then report the failure
// within seconds, not wait out its --timeout and say the server keeps no
// state file.
func TestGracectlPidfileDamagedState(t *testing.T) {
	_, server := binaries(t)
	modeFile := filepath.Join(t.TempDir(), "mode")
	s := start(t, server, "TS_MODE_FILE="+modeFile)
	pid := s.PID()
	require.NoError(t, os.WriteFile(modeFile, []byte("exit"), 0o644))
	for _, damage := range []string{"removed", "corrupt"} {
		path := graceful.StatePath(s.PIDFile)
		if damage == "removed" {
			require.NoError(t, os.Remove(path))
		} else {
			require.NoError(t, os.WriteFile(path, []byte(`{"pid": 1, "mo`), 0o644))
		}
		out, errs, code, took := ctlTimed(t, "--pidfile", s.PIDFile, "--timeout", "60s", "restart")
		assert.Equal(t, 1, code, "%s: %s%s", damage, out, errs)
		assert.Less(t, took, quick, "%s: gracectl took %s to report the failure", damage, took)
		assert.Contains(t, errs, "restart failed: ", damage)
		assert.Contains(t, errs, "configured to fail", damage)
		assert.Equal(t, pid, s.PID(), "the old process serves on")
	}
	stop(t, s)
}

// TestGracectlPidfileOldDiesMidRestart: the old process SIGKILLed while
// its successor boots; the successor serves alone once ready. `gracectl
// restart`, waiting, must report that it took over, not that no process
// did the moment the old one died.
func TestGracectlPidfileOldDiesMidRestart(t *testing.T) {
	_, server := binaries(t)
	mode := filepath.Join(t.TempDir(), "mode")
	s := start(t, server, "TS_MODE_FILE="+mode)
	old := s.PID()
	require.NoError(t, os.WriteFile(mode, []byte("sleep 2s"), 0o644))
	type result struct {
		out, errs string
		code      int
	}
	res := make(chan result, 1)
	go func() {
		out, errs, code := ctlRun(t, "--pidfile", s.PIDFile, "--timeout", "60s", "restart")
		res <- result{out, errs, code}
	}()
	succ := waitLogPID(t, s, `successor started successor=(\d+)`, 0)
	waitOutput(t, s, "testserver: booting for 2s")
	require.NoError(t, syscall.Kill(old, syscall.SIGKILL))
	var r result
	select {
	case r = <-res:
	case <-time.After(70 * time.Second):
		t.Fatal("gracectl did not return")
	}
	assert.Equal(t, 0, r.code, "%s%s", r.out, r.errs)
	assert.Contains(t, r.out, "pid "+strconv.Itoa(succ)+" took over from pid "+strconv.Itoa(old))
	pid, err := s.WaitPIDFile(old, 15*time.Second)
	require.NoError(t, err, "the pidfile never named the successor")
	assert.Equal(t, succ, pid)
	waitServedBy(t, s, succ)
	stop(t, s)
}
