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

// served is what one fresh request learned.
type served struct {
	pid, gen, worker, build string
}

func probe(t *testing.T, addr string) served {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).Get("http://" + addr + "/")
	require.NoError(t, err)
	resp.Body.Close()
	h := resp.Header
	return served{h.Get("X-Pid"), h.Get("X-Gen"), h.Get("X-Worker"), h.Get("X-Build")}
}

// waitAllGen waits until 20 fresh requests in a row are served by workers
// of generation gen, and returns the worker PIDs they saw.
func waitAllGen(t *testing.T, s *proc.Server, gen int) map[string]bool {
	t.Helper()
	var pids map[string]bool
	require.Eventually(t, func() bool {
		pids = map[string]bool{}
		for i := 0; i < 20; i++ {
			p := probe(t, s.Addr())
			if p.gen != strconv.Itoa(gen) {
				return false
			}
			pids[p.pid] = true
		}
		return true
	}, 15*time.Second, 5*time.Millisecond, "workers of generation %d never served alone", gen)
	return pids
}

// workers lists the live worker processes: every process of the binary
// but the master.
func workers(s *proc.Server) []int {
	var w []int
	for _, pid := range proc.Running(s.Bin) {
		if pid != s.PID() {
			w = append(w, pid)
		}
	}
	return w
}

func waitWorkers(t *testing.T, s *proc.Server, n int) []int {
	t.Helper()
	var w []int
	require.Eventually(t, func() bool { w = workers(s); return len(w) == n }, 15*time.Second, 5*time.Millisecond,
		"want %d workers", n)
	return w
}

// TestPhasedRestartUnderLoad: 20 phased restarts with 2 workers and 20 with
// 1 lose no request, and replace every worker each time.
func TestPhasedRestartUnderLoad(t *testing.T) {
	_, server := binaries(t)
	for _, n := range []int{2, 1} {
		t.Run(fmt.Sprintf("workers=%d", n), func(t *testing.T) {
			// The drain as it is without hand-off: TestHandOff* cover hand-off.
			s := start(t, server, "TS_WORKERS="+strconv.Itoa(n), "TS_DRAIN_IDLE=200ms", "TS_NO_HANDOFF=1")
			master := s.PID()
			waitAllGen(t, s, 0)
			fdsBefore, err := proc.FDCount(master)
			require.NoError(t, err)
			gen := loadgen.Start(loadgen.Config{
				Addr: s.Addr(), KeepAlive: 3, Fresh: 2, Slow: 2, SlowPath: "/sleep?ms=150",
				Idle: 4, IdleGap: 200 * time.Millisecond, Check: checkBody,
				Duration: 120 * time.Second,
			})
			prev := map[string]bool{}
			for g := 1; g <= 20; g++ {
				require.NoError(t, syscall.Kill(master, syscall.SIGUSR1))
				waitOutput(t, s, fmt.Sprintf("phased restart complete gen=%d ", g))
				pids := waitAllGen(t, s, g)
				for p := range pids {
					assert.False(t, prev[p], "a worker of the last phase still serves after phase %d", g)
				}
				assert.LessOrEqual(t, len(pids), n)
				prev = pids
			}
			res := gen.Stop()
			assert.Equal(t, master, s.PID(), "the master does not change in a phased restart")
			waitWorkers(t, s, n)
			var fdsAfter int
			assert.Eventually(t, func() bool { fdsAfter, _ = proc.FDCount(master); return fdsAfter == fdsBefore },
				5*time.Second, 5*time.Millisecond, "the master's descriptors after 20 phases: %d, before %d", fdsAfter, fdsBefore)
			stop(t, s)
			assertServed(t, res, 2000*n) // some 5,000 per worker
			assert.GreaterOrEqual(t, drainAnnounced(res), 20, "responses during the drains said Connection: close")
			assert.GreaterOrEqual(t, idleSurvived(res, 50*time.Millisecond), 5, "idle connections used during a drain")
			assert.Less(t, res.LongestGap(), 500*time.Millisecond)
			t.Logf("%d requests, %d failed, longest gap %s", res.Requests(), res.Failed(), res.LongestGap())
		})
	}
}

// TestClusterHotRestart: SIGUSR2 to a master replaces the whole tree under
// load; the old tree serves until the new one is ready.
func TestClusterHotRestart(t *testing.T) {
	_, server := binaries(t)
	events := filepath.Join(t.TempDir(), "events")
	s := start(t, server, "TS_WORKERS=2", "TS_DRAIN_IDLE=200ms", "TS_EVENTS="+events, "TS_HOOKS=log")
	waitAllGen(t, s, 0)
	gen := loadgen.Start(loadgen.Config{Addr: s.Addr(), KeepAlive: 3, Fresh: 2, Slow: 1, SlowPath: "/sleep?ms=150",
		Idle: 4, IdleGap: 200 * time.Millisecond, Check: checkBody, Duration: 60 * time.Second})
	var masters []int
	for i := 0; i < 5; i++ {
		old, master, err := s.Restart(15 * time.Second)
		require.NoError(t, err)
		require.NoError(t, proc.WaitGone(old, 15*time.Second), "old master")
		masters = append(masters, old)
		waitWorkers(t, s, 2)
		_ = master
	}
	res := gen.Stop()
	stop(t, s)
	assertServed(t, res, 2500)
	assert.GreaterOrEqual(t, drainAnnounced(res), 5, "responses during the drains said Connection: close")

	// OnRestart ran in the replaced workers after they drained, and in the
	// replaced masters.
	b, err := os.ReadFile(events)
	require.NoError(t, err)
	for _, m := range masters {
		assert.Contains(t, string(b), strconv.Itoa(m)+" hook 0 inflight=0", "the replaced master ran its hook")
	}
	assert.GreaterOrEqual(t, strings.Count(string(b), "worker shutdown inflight=0"), 10)
	assert.GreaterOrEqual(t, strings.Count(string(b), "hook 0 inflight=0"), 15, "workers and masters ran their hooks")
	assert.GreaterOrEqual(t, strings.Count(string(b), " boot"), 12)
}

// TestPhaseBadRelease: a new worker that exits at start stops the phase;
// the old workers serve on, and the next phase completes once fixed.
func TestPhaseBadRelease(t *testing.T) {
	_, server := binaries(t)
	mode := filepath.Join(t.TempDir(), "mode")
	s := start(t, server, "TS_WORKERS=2", "TS_MODE_FILE="+mode, "TS_DRAIN_IDLE=200ms")
	before := waitAllGen(t, s, 0)
	gen := loadgen.Start(loadgen.Config{Addr: s.Addr(), KeepAlive: 3, Fresh: 1, Check: checkBody, Duration: 60 * time.Second})
	require.NoError(t, os.WriteFile(mode, []byte("exit"), 0o644))
	require.NoError(t, syscall.Kill(s.PID(), syscall.SIGUSR1))
	waitOutput(t, s, "phased restart stopped: the new worker 0 failed to boot")
	assert.Contains(t, s.Output.String(), "configured to fail: exiting")
	assert.Equal(t, before, waitAllGen(t, s, 0), "the old workers serve on")
	time.Sleep(300 * time.Millisecond) // no retry loop: nothing more may be started
	assert.Equal(t, 1, strings.Count(s.Output.String(), "worker booting worker=0 gen=1 "), "a failed phase is not retried")

	require.NoError(t, os.WriteFile(mode, nil, 0o644))
	require.NoError(t, syscall.Kill(s.PID(), syscall.SIGUSR1))
	waitOutput(t, s, "phased restart complete gen=2 ")
	waitAllGen(t, s, 2)
	res := gen.Stop()
	stop(t, s)
	assertServed(t, res, 700)
}

// TestWorkerSupervision: a killed worker and a hung one are replaced; a
// worker ignores signals meant for the master.
func TestWorkerSupervision(t *testing.T) {
	_, server := binaries(t)
	s := start(t, server, "TS_WORKERS=2", "TS_WORKER_TIMEOUT=1s", "TS_DRAIN_IDLE=100ms")
	waitAllGen(t, s, 0)
	ws := waitWorkers(t, s, 2)

	// Signals sent to a worker by mistake do no harm.
	for _, sig := range []syscall.Signal{syscall.SIGUSR2, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGHUP} {
		require.NoError(t, syscall.Kill(ws[0], sig))
	}
	waitOutput(t, s, "signal ignored by a worker")
	assert.True(t, proc.Alive(ws[0]))

	require.NoError(t, syscall.Kill(ws[0], syscall.SIGKILL))
	waitOutput(t, s, "worker died; replacing it")
	require.NoError(t, proc.WaitGone(ws[0], 5*time.Second))
	after := waitWorkers(t, s, 2)
	assert.NotContains(t, after, ws[0])

	// A hung worker: it stops itself, so its heartbeat stops.
	var frozen int
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + s.Addr() + "/freeze")
		if err != nil {
			return false
		}
		resp.Body.Close()
		frozen, _ = strconv.Atoi(resp.Header.Get("X-Pid"))
		return true
	}, 5*time.Second, 10*time.Millisecond)
	waitOutput(t, s, "worker missed its heartbeat; killing it")
	require.NoError(t, proc.WaitGone(frozen, 5*time.Second))
	final := waitWorkers(t, s, 2)
	assert.NotContains(t, final, frozen)
	waitAllGen(t, s, 0)
	stop(t, s)
}

// TestCrashLoopBackoff: a slot whose worker keeps failing is retried ever
// more slowly, not in a loop that spins a core.
func TestCrashLoopBackoff(t *testing.T) {
	_, server := binaries(t)
	mode := filepath.Join(t.TempDir(), "mode")
	s := start(t, server, "TS_WORKERS=2", "TS_MODE_FILE="+mode)
	waitAllGen(t, s, 0)
	// Both booted before the mode changes: only the killed one's
	// replacements may read it.
	require.Eventually(t, func() bool { return strings.Count(s.Output.String(), "worker ready") == 2 }, 15*time.Second, 5*time.Millisecond)
	pid, _ := strconv.Atoi(probe(t, s.Addr()).pid)
	require.NoError(t, os.WriteFile(mode, []byte("exit"), 0o644))
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	waitOutput(t, s, "worker died; replacing it")
	time.Sleep(2 * time.Second) // the period over which attempts are counted
	attempts := strings.Count(s.Output.String(), "failed to boot")
	t.Logf("%d attempts in 2 s", attempts)
	// Immediately, then after 250 ms, 500 ms, 1 s: four in two seconds.
	assert.GreaterOrEqual(t, attempts, 2, "the slot is retried")
	assert.LessOrEqual(t, attempts, 5, "retries back off")
	assert.Contains(t, s.Output.String(), "worker will be replaced")
	require.NoError(t, os.WriteFile(mode, nil, 0o644))
	waitWorkers(t, s, 2)
	waitAllGen(t, s, 0)
	stop(t, s)
}

// TestPhasedRestartFromCode: PhasedRestart reports a failed phase to its
// caller, and nil for a completed one.
func TestPhasedRestartFromCode(t *testing.T) {
	_, server := binaries(t)
	dir := t.TempDir()
	mode, fifo, events := filepath.Join(dir, "mode"), filepath.Join(dir, "trigger"), filepath.Join(dir, "events")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	s := start(t, server, "TS_WORKERS=2", "TS_MODE_FILE="+mode, "TS_TRIGGER="+fifo, "TS_EVENTS="+events, "TS_DRAIN_IDLE=100ms")
	waitAllGen(t, s, 0)
	trigger := func(want string) {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		require.NoError(t, err)
		fmt.Fprintln(f, "phased")
		f.Close()
		require.Eventually(t, func() bool {
			b, _ := os.ReadFile(events)
			return strings.Contains(string(b), want)
		}, 15*time.Second, 5*time.Millisecond, "no event %q", want)
	}
	require.NoError(t, os.WriteFile(mode, []byte("exit"), 0o644))
	trigger("phased: graceful: phased restart stopped: the new worker 0 failed to boot: worker")
	require.NoError(t, os.WriteFile(mode, nil, 0o644))
	trigger("phased: <nil>")
	waitAllGen(t, s, 2)
	stop(t, s)
}

// TestStopSignalToWholeGroup: SIGTERM sent to the master and its workers
// at once, as systemd's default KillMode does, lets an in-flight request
// finish.
func TestStopSignalToWholeGroup(t *testing.T) {
	_, server := binaries(t)
	s := start(t, server, "TS_WORKERS=2", "TS_DRAIN_IDLE=100ms")
	waitAllGen(t, s, 0)
	conn, err := net.Dial("tcp", s.Addr())
	require.NoError(t, err)
	defer conn.Close()
	fmt.Fprint(conn, "GET /sleep?ms=800 HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err, "headers of the slow request")
	pids := append([]int{s.PID()}, workers(s)...)
	for _, pid := range pids {
		require.NoError(t, syscall.Kill(pid, syscall.SIGTERM))
	}
	time.Sleep(50 * time.Millisecond) // a second round, mid-drain
	for _, pid := range pids[1:] {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err, "the in-flight request was cut off")
	assert.Equal(t, "slept 800\n", string(body))
	require.NoError(t, s.Cmd.Wait(), "the master's exit status")
	assert.Empty(t, proc.Running(s.Bin))
}

// TestMasterKilled: when the master dies, even by SIGKILL, its workers stop
// accepting at once and exit: no orphan serves stale code.
func TestMasterKilled(t *testing.T) {
	_, server := binaries(t)
	s := start(t, server, "TS_WORKERS=2", "TS_DRAIN_IDLE=100ms")
	waitAllGen(t, s, 0)
	ws := waitWorkers(t, s, 2)
	require.NoError(t, syscall.Kill(s.PID(), syscall.SIGKILL))
	killed := time.Now()
	require.NoError(t, proc.WaitGone(s.Cmd.Process.Pid, 5*time.Second))
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", s.Addr())
		if err == nil {
			c.Close()
		}
		return err != nil
	}, time.Second, 5*time.Millisecond, "a worker still accepts a second after the master died")
	for _, w := range ws {
		require.NoError(t, proc.WaitGone(w, 2*time.Second))
	}
	t.Logf("workers gone %s after the master was killed", time.Since(killed).Round(time.Millisecond))
	assert.Empty(t, proc.Running(s.Bin))
}

// TestTTINTTOU adds and removes a worker at run time.
func TestTTINTTOU(t *testing.T) {
	_, server := binaries(t)
	s := start(t, server, "TS_WORKERS=2", "TS_DRAIN_IDLE=100ms")
	waitWorkers(t, s, 2)
	require.NoError(t, syscall.Kill(s.PID(), syscall.SIGTTIN))
	waitOutput(t, s, "workers workers=3")
	waitWorkers(t, s, 3)
	require.NoError(t, syscall.Kill(s.PID(), syscall.SIGTTOU))
	waitOutput(t, s, "workers workers=2")
	waitWorkers(t, s, 2)
	require.NoError(t, syscall.Kill(s.PID(), syscall.SIGTTOU)) // signals of a kind do not queue: one at a time
	waitOutput(t, s, "workers workers=1")
	waitWorkers(t, s, 1)
	require.NoError(t, syscall.Kill(s.PID(), syscall.SIGTTOU))
	waitOutput(t, s, "at least one worker stays")
	waitAllGen(t, s, 0)
	stop(t, s)
}

// TestClusterTermDuringPhase: SIGTERM while a new worker boots stops
// everything, exit status 0, nothing left.
func TestClusterTermDuringPhase(t *testing.T) {
	_, server := binaries(t)
	mode := filepath.Join(t.TempDir(), "mode")
	s := start(t, server, "TS_WORKERS=2", "TS_MODE_FILE="+mode)
	waitWorkers(t, s, 2)
	require.NoError(t, os.WriteFile(mode, []byte("slow"), 0o644))
	require.NoError(t, syscall.Kill(s.PID(), syscall.SIGUSR1))
	waitOutput(t, s, "worker booting worker=0 gen=1")
	require.NoError(t, syscall.Kill(s.PID(), syscall.SIGTERM))
	require.NoError(t, s.Cmd.Wait(), "the master's exit status")
	assert.Contains(t, s.Output.String(), "phased restart stopped: the master is shutting down")
	assert.Empty(t, proc.Running(s.Bin))
	assert.Empty(t, proc.Zombies())
}

// TestMasterMemory: the master of a hello-world cluster stays small.
func TestMasterMemory(t *testing.T) {
	hello, _ := binaries(t)
	s := start(t, hello, "WORKERS=2")
	waitWorkers(t, s, 2)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.PID()))
	require.NoError(t, err)
	var rssKB int
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			rssKB, _ = strconv.Atoi(f[1])
		}
	}
	t.Logf("master RSS %d kB", rssKB)
	limit := 15 * 1024
	if raceEnabled {
		limit *= 4 // the race detector's shadow memory
	}
	assert.Less(t, rssKB, limit)
	stop(t, s)
}

// TestDirectoryDeploy: with Directory a "current" symbolic link, a phased
// restart runs the release the link names at that moment, a hot restart
// replaces master and workers with it, deleted old releases break nothing,
// and a bad release leaves the workers serving.
func TestDirectoryDeploy(t *testing.T) {
	root := t.TempDir()
	var flags []string
	if raceEnabled {
		flags = append(flags, "-race")
	}
	for _, r := range []string{"r1", "r2", "r3"} {
		require.NoError(t, proc.Build(".", "./internal/testserver", filepath.Join(root, "releases", r, "bin", "app"),
			append(flags, "-ldflags", "-X main.version="+r)...))
	}
	require.NoError(t, os.MkdirAll(filepath.Join(root, "releases", "bad"), 0o755))
	current := filepath.Join(root, "current")
	link := func(r string) {
		tmp := current + ".tmp"
		os.Remove(tmp)
		require.NoError(t, os.Symlink(filepath.Join("releases", r), tmp))
		require.NoError(t, os.Rename(tmp, current))
	}
	link("r1")
	s := start(t, filepath.Join(current, "bin", "app"), "TS_WORKERS=2", "TS_DIRECTORY="+current, "TS_DRAIN_IDLE=100ms")
	s.Bin = filepath.Join(root, "releases", "r1", "bin", "app") // as /proc shows it
	assert.Equal(t, "r1", probe(t, s.Addr()).build)
	gen := loadgen.Start(loadgen.Config{Addr: s.Addr(), KeepAlive: 2, Fresh: 1, Check: checkBody, Duration: 60 * time.Second})

	// r2 by a phased restart, after r1 has been deleted.
	link("r2")
	require.NoError(t, os.RemoveAll(filepath.Join(root, "releases", "r1")))
	require.NoError(t, syscall.Kill(s.PID(), syscall.SIGUSR1))
	waitOutput(t, s, "phased restart complete gen=1 ")
	waitAllGen(t, s, 1)
	for i := 0; i < 10; i++ {
		assert.Equal(t, "r2", probe(t, s.Addr()).build)
	}

	// A bad release: the phase fails cleanly and says which path.
	link("bad")
	require.NoError(t, syscall.Kill(s.PID(), syscall.SIGUSR1))
	waitOutput(t, s, "phased restart: release directory "+current+" (now "+filepath.Join(root, "releases", "bad")+"): executable: stat "+filepath.Join(root, "releases", "bad", "bin", "app"))
	assert.Equal(t, "r2", probe(t, s.Addr()).build)

	// A worker respawned after a crash, or added, runs the release of the
	// last completed phase, r2, even with the link moved on to r3. (The
	// load pauses: a killed worker's requests are lost.)
	assertServed(t, gen.Stop(), 130)
	link("r3")
	p := probe(t, s.Addr())
	victim, _ := strconv.Atoi(p.pid)
	require.NoError(t, syscall.Kill(victim, syscall.SIGKILL))
	// Its slot's second ready worker of generation 1: the respawn.
	respawned := "worker ready worker=" + p.worker + " gen=1 "
	require.Eventually(t, func() bool { return strings.Count(s.Output.String(), respawned) == 2 }, 15*time.Second, 5*time.Millisecond)
	require.NoError(t, syscall.Kill(s.PID(), syscall.SIGTTIN))
	waitOutput(t, s, "worker ready worker=2 ")
	for i := 0; i < 20; i++ {
		assert.Equal(t, "r2", probe(t, s.Addr()).build, "a respawned or added worker runs the last phase's release")
	}

	// r3 by a hot restart: a new master and new workers.
	gen = loadgen.Start(loadgen.Config{Addr: s.Addr(), KeepAlive: 2, Fresh: 1, Check: checkBody, Duration: 60 * time.Second})
	old, master, err := s.Restart(15 * time.Second)
	require.NoError(t, err)
	require.NoError(t, proc.WaitGone(old, 15*time.Second))
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", master))
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(root, "releases", "r3", "bin", "app"), exe, "the new master runs r3")
	require.Eventually(t, func() bool { return probe(t, s.Addr()).build == "r3" }, 10*time.Second, 5*time.Millisecond)
	for i := 0; i < 10; i++ {
		assert.Equal(t, "r3", probe(t, s.Addr()).build)
	}
	res := gen.Stop()
	s.Bin = exe
	stop(t, s)
	assertServed(t, res, 140)
	for _, r := range []string{"r2", "r3"} {
		assert.Empty(t, proc.Running(filepath.Join(root, "releases", r, "bin", "app")))
	}
}

// TestDirectoryStartedFromInside: started as bin/app from inside the
// release directory, or as "app" found on PATH, the program still finds
// itself through Directory.
func TestDirectoryStartedFromInside(t *testing.T) {
	t.Run("bin/app", func(t *testing.T) { directoryStart(t, false) })
	t.Run("PATH", func(t *testing.T) { directoryStart(t, true) })
}

func directoryStart(t *testing.T, onPath bool) {
	root := t.TempDir()
	for _, r := range []string{"r1", "r2"} {
		require.NoError(t, proc.Build(".", "./internal/testserver", filepath.Join(root, "releases", r, "bin", "app"), "-ldflags", "-X main.version="+r))
	}
	current := filepath.Join(root, "current")
	require.NoError(t, os.Symlink(filepath.Join(root, "releases", "r1"), current))
	port, err := proc.FreePort()
	require.NoError(t, err)
	pidfile := filepath.Join(root, "app.pid")
	cmd := exec.Command("bin/app")
	cmd.Dir = current
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "PIDFILE="+pidfile, "TS_DIRECTORY="+current, "GORACE=atexit_sleep_ms=0")
	if onPath {
		// As a shell would run "app" with current/bin on PATH, from
		// elsewhere.
		cmd = &exec.Cmd{Path: filepath.Join(current, "bin", "app"), Args: []string{"app"}, Dir: root}
		cmd.Env = append(os.Environ(), "PATH="+filepath.Join(current, "bin")+":"+os.Getenv("PATH"),
			"PORT="+strconv.Itoa(port), "PIDFILE="+pidfile, "TS_DIRECTORY="+current, "GORACE=atexit_sleep_ms=0")
	}
	out := &proc.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	s := &proc.Server{Bin: filepath.Join(root, "releases", "r1", "bin", "app"), Port: port, PIDFile: pidfile, Cmd: cmd, Output: out}
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			t.Logf("output:\n%s", out)
		}
	})
	_, err = s.WaitPIDFile(0, 10*time.Second)
	require.NoError(t, err)
	require.NoError(t, s.WaitListening(10*time.Second))
	assert.Equal(t, "r1", probe(t, s.Addr()).build)

	require.NoError(t, os.Remove(current))
	require.NoError(t, os.Symlink(filepath.Join(root, "releases", "r2"), current))
	_, pid, err := s.Restart(15 * time.Second)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return probe(t, s.Addr()).pid == strconv.Itoa(pid) }, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, "r2", probe(t, s.Addr()).build)
	s.Bin = filepath.Join(root, "releases", "r2", "bin", "app")
	stop(t, s)
}

// TestReadinessThroughPhases: a worker replaced in a phase drains, but the
// service is not stopping: its readiness answer stays 200 to the end, so
// that a load balancer polling it does not take the instance out.
func TestReadinessThroughPhases(t *testing.T) {
	_, server := binaries(t)
	s := start(t, server, "TS_WORKERS=2", "TS_DRAIN_IDLE=500ms")
	waitAllGen(t, s, 0)
	var mu sync.Mutex
	codes := map[int]int{}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 5 * time.Second}
			for n := 0; n < 100000; n++ {
				select {
				case <-done:
					return
				default:
				}
				res, err := c.Get("http://" + s.Addr() + "/readyz")
				if err != nil {
					continue
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				mu.Lock()
				codes[res.StatusCode]++
				mu.Unlock()
				time.Sleep(time.Duration(n%7) * 20 * time.Millisecond) // idle now and then
			}
		}()
	}
	for g := 1; g <= 3; g++ {
		require.NoError(t, syscall.Kill(s.PID(), syscall.SIGUSR1))
		waitOutput(t, s, fmt.Sprintf("phased restart complete gen=%d ", g))
		waitAllGen(t, s, g)
	}
	close(done)
	wg.Wait()
	stop(t, s)
	t.Logf("readiness answers: %v", codes)
	assert.Greater(t, codes[http.StatusOK], 10)
	assert.Zero(t, codes[http.StatusServiceUnavailable], "a worker replaced in a phase said it was stopping")
}
