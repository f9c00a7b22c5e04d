//go:build unix

package graceful

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The master's state machine, run in this process against fake children:
// goroutines that speak the protocol on a real socket pair and fail, hang,
// stop beating or drain slowly on cue. Fast and deterministic; the
// real-process tests in cluster_test.go cover the same ground end to end.

// script says how a fake child behaves.
type script struct {
	fail      bool          // exit during start-up
	hang      bool          // never ready
	noBeats   bool          // ready, then silent
	dieAtGo   bool          // exit once told to go, before serving
	drainHold chan struct{} // told to drain, exit only once this closes
	readyHold chan struct{} // report ready only once this closes
	goHold    chan struct{} // once told to go, say it serves only once this closes
}

type fakes struct {
	mu     sync.Mutex
	next   int
	script func(sp spawnSpec) script
	log    []string
	exits  map[int]func(error)
}

func (f *fakes) note(format string, a ...any) {
	f.mu.Lock()
	f.log = append(f.log, fmt.Sprintf(format, a...))
	f.mu.Unlock()
}

func (f *fakes) saw(s string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range f.log {
		if l == s {
			return true
		}
	}
	return false
}

func (f *fakes) index(s string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, l := range f.log {
		if l == s {
			return i
		}
	}
	return -1
}

// spawn is the runner's spawner: a fake child.
func (f *fakes) spawn(sp spawnSpec) (*successor, error) {
	// The master's end is as in spawn; the child's end is non-blocking, so
	// that closing it, as a dying process would, ends the read under way.
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		return nil, err
	}
	syscall.CloseOnExec(pair[0])
	syscall.CloseOnExec(pair[1])
	syscall.SetNonblock(pair[1], true)
	ours, theirs := os.NewFile(uintptr(pair[0]), "ours"), os.NewFile(uintptr(pair[1]), "theirs")
	f.mu.Lock()
	f.next++
	pid := 100000 + f.next
	sc := script{}
	if f.script != nil {
		sc = f.script(sp)
	}
	f.mu.Unlock()
	gen := -1 // a successor
	if sp.worker != nil {
		gen = sp.worker.Gen
	}
	s := &successor{pidN: pid, ctrl: ours, br: bufio.NewReader(ours), result: make(chan error, 1),
		exited: make(chan struct{}), copied: make(chan struct{}), tail: &tail{}, rel: sp.rel, role: "worker"}
	close(s.copied)
	var once sync.Once
	exit := func(err error) {
		once.Do(func() {
			s.err = err
			theirs.Close()
			f.note("exit %d", pid)
			close(s.exited)
		})
	}
	f.mu.Lock()
	if f.exits == nil {
		f.exits = map[int]func(error){}
	}
	f.exits[pid] = exit
	f.mu.Unlock()
	s.signal = func(sig os.Signal) error {
		if sig != os.Kill {
			// Asked to stop: it drains (at once) and exits.
			f.note("stopped %d", pid)
			exit(nil)
			return nil
		}
		f.note("killed %d", pid)
		exit(errors.New("signal: killed"))
		return nil
	}
	f.note("spawn %d gen %d", pid, gen)
	go s.watch(sp.timeout)
	go func() {
		switch {
		case sc.fail:
			exit(errors.New("exit status 3"))
			return
		case sc.hang:
			return
		}
		if sc.readyHold != nil {
			<-sc.readyHold
		}
		f.note("ready %d", pid)
		fmt.Fprintf(theirs, "ready %d\n", pid)
		br := bufio.NewReader(theirs)
		if line, err := br.ReadString('\n'); err != nil || line != "go\n" {
			exit(nil)
			return
		}
		f.note("go %d", pid)
		if sc.dieAtGo {
			exit(errors.New("signal: killed"))
			return
		}
		if sc.goHold != nil {
			select {
			case <-sc.goHold:
			case <-s.exited:
				return
			}
		}
		if sp.worker == nil {
			fmt.Fprintf(theirs, "serving\n")
		}
		stop := make(chan struct{})
		defer close(stop)
		if !sc.noBeats && sp.worker != nil {
			go func() {
				t := time.NewTicker(time.Duration(sp.worker.Heartbeat) * time.Millisecond)
				defer t.Stop()
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					case <-t.C:
						fmt.Fprintf(theirs, "beat 0 %d\n", n)
					}
				}
			}()
		}
		line, err := br.ReadString('\n')
		if err != nil {
			exit(nil)
			return
		}
		f.note("order %d %s", pid, strings.TrimSpace(line))
		if sc.drainHold != nil {
			<-sc.drainHold
		}
		exit(nil)
	}()
	return s, nil
}

// fakeMaster runs a master of n fake workers in this process.
func fakeMaster(t *testing.T, n int, f *fakes, setup ...func(*runner)) (*runner, chan error) {
	t.Helper()
	var logs bytes.Buffer
	var mu sync.Mutex
	s := &Server{Server: &http.Server{}, Workers: n, WorkerTimeout: 400 * time.Millisecond, StartTimeout: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			return logs.Write(p)
		}), nil))}
	r := &runner{s: s, log: s.logger(), track: newTracker(), drainCh: make(chan struct{}), reqs: make(chan request),
		sigs: make(chan os.Signal, 4), finished: make(chan struct{}), started: time.Now(), spawner: f.spawn,
		inh: &inheritance{keys: map[net.Listener]lnKey{}, files: map[net.Listener]os.FileInfo{}}}
	r.hot.r = r
	for _, f := range setup {
		f(r)
	}
	done := make(chan error, 1)
	go func() {
		done <- r.runMaster()
		close(r.finished)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			t.Logf("master log:\n%s", logs.String())
			mu.Unlock()
			f.mu.Lock()
			t.Logf("children:\n%s", strings.Join(f.log, "\n"))
			f.mu.Unlock()
		}
	})
	return r, done
}

type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(p []byte) (int, error) { return w(p) }

// workers waits until the master reports want ready workers of generation
// gen and nothing else, and returns their PIDs by slot.
func workers(t *testing.T, r *runner, want, gen int) []int {
	t.Helper()
	var pids []int
	require.Eventually(t, func() bool {
		st, err := r.status(context.Background())
		if err != nil || len(st.Workers) != want {
			return false
		}
		pids = pids[:0]
		for _, w := range st.Workers {
			if w.State != "ready" || w.Generation != gen || w.LastCheckin.IsZero() {
				return false
			}
			pids = append(pids, w.PID)
		}
		return true
	}, 10*time.Second, 2*time.Millisecond, "never %d ready workers of generation %d", want, gen)
	return pids
}

// TestFakePhase: a phase replaces the workers one slot at a time, each new
// worker ready before the old one of its slot is told to drain. (The
// children's notes are ordered only where one causes the other: a child's
// "ready" precedes what the master does about it.)
func TestFakePhase(t *testing.T) {
	f := &fakes{}
	r, done := fakeMaster(t, 3, f)
	old := workers(t, r, 3, 0)
	require.NoError(t, r.call(context.Background(), reqPhased))
	now := workers(t, r, 3, 1)
	for i := range old {
		readyNew, drainOld := f.index(fmt.Sprintf("ready %d", now[i])), f.index(fmt.Sprintf("order %d drain restart", old[i]))
		require.GreaterOrEqual(t, readyNew, 0)
		require.GreaterOrEqual(t, drainOld, 0, "old worker %d told to drain", old[i])
		assert.Less(t, readyNew, drainOld, "slot %d: the new worker is ready before the old one drains", i)
		if i > 0 {
			assert.Less(t, f.index(fmt.Sprintf("ready %d", now[i-1])), f.index(fmt.Sprintf("spawn %d gen 1", now[i])), "one slot at a time")
		}
	}
	r.sigs <- os.Interrupt
	assert.Equal(t, http.ErrServerClosed, <-done)
}

// TestFakePhaseBootFailure: a new worker that fails to boot stops the
// phase, whose caller is told why; the old workers serve on and nothing is
// retried.
func TestFakePhaseBootFailure(t *testing.T) {
	f := &fakes{script: func(sp spawnSpec) script { return script{fail: sp.worker != nil && sp.worker.Gen == 1} }}
	r, done := fakeMaster(t, 2, f)
	old := workers(t, r, 2, 0)
	err := r.call(context.Background(), reqPhased)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "phased restart stopped: the new worker 0 failed to boot")
	assert.NotContains(t, err.Error(), "graceful: graceful:")
	time.Sleep(300 * time.Millisecond) // several of the master's ticks: nothing more may start
	assert.Equal(t, old, workers(t, r, 2, 0), "the old workers serve on")
	n := 0
	for _, l := range f.log {
		if strings.HasSuffix(l, " gen 1") {
			n++
		}
	}
	assert.Equal(t, 1, n, "a failed phase is not retried")
	r.sigs <- os.Interrupt
	assert.Equal(t, http.ErrServerClosed, <-done)
}

// TestFakeSupervision: a crashed worker and one that stops beating are
// replaced, in their slots.
func TestFakeSupervision(t *testing.T) {
	var silent int
	f := &fakes{}
	f.script = func(sp spawnSpec) script { return script{noBeats: f.next == silent} }
	r, done := fakeMaster(t, 2, f)
	old := workers(t, r, 2, 0)
	f.mu.Lock()
	crash := f.exits[old[0]]
	silent = f.next + 1 // the next worker goes silent once serving
	f.mu.Unlock()
	crash(errors.New("exit status 2"))
	require.Eventually(t, func() bool { return f.saw(fmt.Sprintf("killed %d", old[1]+1)) }, 10*time.Second, 5*time.Millisecond,
		"the silent worker was killed")
	now := workers(t, r, 2, 0)
	assert.NotEqual(t, old[0], now[0])
	assert.Equal(t, old[1], now[1])
	r.sigs <- os.Interrupt
	assert.Equal(t, http.ErrServerClosed, <-done)
}

// TestFakeStopSignals: the first stop signal drains the workers (told to
// stop, for their ShutdownDelay); a second one kills them.
func TestFakeStopSignals(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	f := &fakes{script: func(spawnSpec) script { return script{drainHold: hold} }}
	r, done := fakeMaster(t, 2, f)
	pids := workers(t, r, 2, 0)
	r.sigs <- os.Interrupt
	for _, p := range pids {
		require.Eventually(t, func() bool { return f.saw(fmt.Sprintf("order %d stop", p)) }, 5*time.Second, time.Millisecond)
	}
	r.sigs <- os.Interrupt
	assert.Equal(t, http.ErrServerClosed, <-done)
	for _, p := range pids {
		assert.True(t, f.saw(fmt.Sprintf("killed %d", p)), "the second stop signal killed %d", p)
	}
}

// TestFakeStopSignalWhileRetiring: after a hot restart of the tree, the
// first stop signal to the retiring master (a Ctrl-C to the process group)
// lets its workers finish their drain; only a second one kills them.
func TestFakeStopSignalWhileRetiring(t *testing.T) {
	for _, signals := range []int{1, 2} {
		t.Run(fmt.Sprint(signals, " signals"), func(t *testing.T) {
			hold := make(chan struct{})
			f := &fakes{script: func(spawnSpec) script { return script{drainHold: hold} }}
			r, done := fakeMaster(t, 2, f)
			pids := workers(t, r, 2, 0)
			require.NoError(t, r.call(context.Background(), reqRestart))
			for _, p := range pids {
				require.Eventually(t, func() bool { return f.saw(fmt.Sprintf("order %d drain restart", p)) }, 5*time.Second, time.Millisecond)
			}
			for i := 0; i < signals; i++ {
				r.sigs <- os.Interrupt
			}
			if signals == 1 {
				time.Sleep(300 * time.Millisecond) // the master's ticks: nothing may be killed
				for _, p := range pids {
					assert.False(t, f.saw(fmt.Sprintf("killed %d", p)), "worker %d was killed by the first stop signal", p)
				}
			} else {
				for _, p := range pids {
					require.Eventually(t, func() bool { return f.saw(fmt.Sprintf("killed %d", p)) }, 5*time.Second, time.Millisecond,
						"the second stop signal killed worker %d", p)
				}
			}
			close(hold)
			assert.Equal(t, http.ErrServerClosed, <-done)
			for _, p := range pids {
				assert.Equal(t, signals == 2, f.saw(fmt.Sprintf("killed %d", p)), "worker %d", p)
			}
		})
	}
}

// TestFakeNewMasterAbandoned: a successor's first workers that cannot boot
// make it give up, and its predecessor is told so (its start fails).
func TestFakeHotRestartFails(t *testing.T) {
	f := &fakes{script: func(sp spawnSpec) script { return script{fail: sp.worker == nil} }}
	r, done := fakeMaster(t, 1, f)
	pids := workers(t, r, 1, 0)
	err := r.call(context.Background(), reqRestart)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "exited during start-up: exit status 3")
	assert.Equal(t, pids, workers(t, r, 1, 0), "the workers serve on")
	r.sigs <- os.Interrupt
	assert.Equal(t, http.ErrServerClosed, <-done)
}

// TestFakeSuccessorDiesAtGo: a new master that dies once told to go, before
// it says it serves, fails the restart; the old one has not stopped and
// serves on, and names itself again in the pidfile.
func TestFakeSuccessorDiesAtGo(t *testing.T) {
	f := &fakes{script: func(sp spawnSpec) script { return script{dieAtGo: sp.worker == nil} }}
	pidFile := filepath.Join(t.TempDir(), "app.pid")
	r, done := fakeMaster(t, 1, f, func(r *runner) { r.pidFile = pidFile })
	pids := workers(t, r, 1, 0)
	err := r.call(context.Background(), reqRestart)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "died after it was told to go, before it served")
	b, rerr := os.ReadFile(r.pidFile)
	require.NoError(t, rerr)
	assert.Equal(t, fmt.Sprintf("%d\n", os.Getpid()), string(b), "the pidfile names the old master again")
	assert.Equal(t, pids, workers(t, r, 1, 0), "the workers serve on")
	r.sigs <- os.Interrupt
	assert.Equal(t, http.ErrServerClosed, <-done)
}

// fakeSingle runs a single-mode server on a loopback port in this process,
// its successors fake.
func fakeSingle(t *testing.T, f *fakes) (*runner, *Server, chan error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &Server{Server: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})},
		StartTimeout: 300 * time.Millisecond, DrainIdleTimeout: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}
	r := &runner{s: s, log: s.logger(), track: newTracker(), drainCh: make(chan struct{}), reqs: make(chan request),
		sigs: make(chan os.Signal, 4), finished: make(chan struct{}), started: time.Now(), spawner: f.spawn,
		inh: &inheritance{keys: map[net.Listener]lnKey{}, files: map[net.Listener]os.FileInfo{}}}
	r.hot.r = r
	r.served = []*served{{srv: s.Server, l: l, key: lnKey{"tcp", l.Addr().String()}}}
	done := make(chan error, 1)
	r.serve()
	go func() {
		done <- r.loop()
		close(r.finished)
	}()
	return r, s, done
}

// TestFakeSingleHotRestart: in single mode, successors that fail to start,
// hang, or die once told to go leave the process serving, each with its
// reason; one that serves takes over, and the OnRestart hooks run once the
// old process has drained.
func TestFakeSingleHotRestart(t *testing.T) {
	var mode string
	f := &fakes{script: func(spawnSpec) script {
		return script{fail: mode == "fail", hang: mode == "hang", dieAtGo: mode == "die"}
	}}
	r, s, done := fakeSingle(t, f)
	hooked := make(chan struct{})
	s.OnRestart(func() { close(hooked) })
	for _, c := range []struct{ mode, want string }{
		{"fail", "exited during start-up: exit status 3"},
		{"hang", "was not ready within 300ms and was killed"},
		{"die", "died after it was told to go, before it served"},
	} {
		mode = c.mode
		err := r.call(context.Background(), reqRestart)
		require.Error(t, err, c.mode)
		assert.Contains(t, err.Error(), c.want)
		st, err := r.status(context.Background())
		require.NoError(t, err)
		assert.Equal(t, "serving", st.State, "after a successor that would %s", c.mode)
		assert.Contains(t, st.LastRestart.Error, c.want)
	}
	select {
	case <-hooked:
		t.Fatal("OnRestart hooks ran after a failed restart")
	default:
	}
	mode = ""
	require.NoError(t, r.call(context.Background(), reqRestart))
	assert.Equal(t, http.ErrServerClosed, <-done)
	select {
	case <-hooked:
	default:
		t.Fatal("the OnRestart hooks did not run in the replaced process")
	}
}

// TestFakeFewerDuringPhase: one worker fewer (SIGTTOU) while the phase's
// new worker boots for the slot that goes away. That worker must not end
// up serving in a slot beyond those wanted, where no one supervises it,
// and a later worker more (SIGTTIN) would start a second one over it.
func TestFakeFewerDuringPhase(t *testing.T) {
	hold := make(chan struct{})
	f := &fakes{script: func(sp spawnSpec) script {
		if sp.worker != nil && sp.worker.Gen == 1 && sp.worker.WorkerID == 1 {
			return script{readyHold: hold}
		}
		return script{}
	}}
	r, done := fakeMaster(t, 2, f)
	workers(t, r, 2, 0)
	phased := request{kind: reqPhased, done: make(chan error, 1)}
	require.NoError(t, r.send(context.Background(), phased))
	// Slot 0's new worker is the third child, slot 1's the fourth.
	require.Eventually(t, func() bool { return f.saw("spawn 100004 gen 1") }, 10*time.Second, time.Millisecond,
		"the phase never reached slot 1")
	fewer := request{kind: reqResize, delta: -1, done: make(chan error, 1)}
	require.NoError(t, r.send(context.Background(), fewer))
	require.NoError(t, r.await(context.Background(), fewer))
	close(hold)
	require.NoError(t, <-phased.done)
	time.Sleep(300 * time.Millisecond) // the master's ticks
	st, err := r.status(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 1, st.WorkersWanted)
	workers(t, r, 1, 1)
	r.sigs <- os.Interrupt
	assert.Equal(t, http.ErrServerClosed, <-done)
}

// TestFakeStopWhileConfirming: stop signals after the successor was told
// to go and before it said it serves. It may accept already (a successor
// of an older release says nothing for a while). A first stop signal is
// held until the successor's word: a signal to the whole process group
// reached the successor too, and stopping it again would cut its drain.
// Here the successor is taken to serve once silent for a while, so the old
// process retires and the restart succeeds. A second stop signal abandons
// the restart: the successor is asked to stop and drain, not killed, and
// the old process ends only once it has exited. Close kills it, as it
// kills everything. In single mode and in a cluster's master.
func TestFakeStopWhileConfirming(t *testing.T) {
	for _, c := range []struct {
		cluster bool
		stop    string // "signal", "signals" (two), "close"
	}{{false, "signal"}, {true, "signal"}, {false, "signals"}, {true, "signals"}, {false, "close"}, {true, "close"}} {
		cluster := c.cluster
		t.Run(fmt.Sprintf("cluster=%v,%s", c.cluster, c.stop), func(t *testing.T) {
			hold := make(chan struct{})
			defer close(hold)
			f := &fakes{script: func(sp spawnSpec) script {
				if sp.worker != nil {
					return script{}
				}
				return script{goHold: hold}
			}}
			var r *runner
			var done chan error
			if cluster {
				r, done = fakeMaster(t, 1, f)
				workers(t, r, 1, 0)
			} else {
				r, _, done = fakeSingle(t, f)
			}
			restarted := make(chan error, 1)
			go func() { restarted <- r.call(context.Background(), reqRestart) }()
			var succ int
			require.Eventually(t, func() bool {
				f.mu.Lock()
				defer f.mu.Unlock()
				succ = 0
				for _, l := range f.log {
					var pid int
					if _, err := fmt.Sscanf(l, "spawn %d gen -1", &pid); err == nil {
						succ = pid
					}
				}
				for _, l := range f.log {
					if succ != 0 && l == fmt.Sprintf("go %d", succ) {
						return true
					}
				}
				return false
			}, 10*time.Second, 2*time.Millisecond, "the successor was never told to go")
			switch c.stop {
			case "close":
				// Close cuts everything at once, the successor too.
				require.NoError(t, r.call(context.Background(), reqClose))
			case "signals":
				r.sigs <- syscall.SIGTERM
				r.sigs <- syscall.SIGTERM
			default:
				r.sigs <- syscall.SIGTERM
			}
			select {
			case err := <-done:
				assert.Equal(t, http.ErrServerClosed, err)
			case <-time.After(20 * time.Second):
				t.Fatal("the old process did not end")
			}
			if c.stop == "close" {
				assert.True(t, f.saw(fmt.Sprintf("killed %d", succ)), "Close did not kill the successor")
			} else {
				assert.False(t, f.saw(fmt.Sprintf("killed %d", succ)), "the successor, told to go, was killed")
			}
			select {
			case err := <-restarted:
				if c.stop == "signal" {
					require.NoError(t, err, "the successor serves: the restart succeeded")
					assert.False(t, f.saw(fmt.Sprintf("stopped %d", succ)), "the successor was asked to stop by a first stop signal")
					return
				}
				require.Error(t, err)
				assert.Contains(t, err.Error(), "restart abandoned")
				assert.True(t, f.saw(fmt.Sprintf("stopped %d", succ)), "the successor was not asked to stop")
			case <-time.After(5 * time.Second):
				t.Fatal("the Restart call got no answer")
			}
		})
	}
}
