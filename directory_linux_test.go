package graceful_test

import (
	"fmt"
	"os"
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

// TestRespawnFromDeletedRelease: with Directory a "current" symbolic link,
// a worker killed after "current" moved on and its release directory was
// deleted is respawned by the master from that same release, the one its
// sibling still runs, and serves, and so does a worker added then; the
// next phased restart moves every worker to the new release, and the
// master lets go of the old one and, over more phases, holds only the
// newest one open.
func TestRespawnFromDeletedRelease(t *testing.T) {
	root := t.TempDir()
	var flags []string
	if raceEnabled {
		flags = append(flags, "-race")
	}
	bin := func(r string) string { return filepath.Join(root, "releases", r, "bin", "app") }
	for _, r := range []string{"r1", "r2"} {
		require.NoError(t, proc.Build(".", "./internal/testserver", bin(r), append(flags, "-ldflags", "-X main.version="+r)...))
	}
	current := filepath.Join(root, "current")
	link := func(r string) {
		tmp := current + ".tmp"
		os.Remove(tmp)
		require.NoError(t, os.Symlink(filepath.Join("releases", r), tmp))
		require.NoError(t, os.Rename(tmp, current))
	}
	link("r1")
	s := start(t, filepath.Join(current, "bin", "app"), "TS_WORKERS=2", "TS_DIRECTORY="+current, "TS_DRAIN_IDLE=100ms")
	// Once r1 is deleted, /proc shows its processes' executable so.
	deleted := bin("r1") + " (deleted)"
	t.Cleanup(func() {
		for _, pid := range proc.Running(deleted) {
			syscall.Kill(pid, syscall.SIGKILL)
			proc.WaitGone(pid, 5*time.Second)
		}
	})
	s.Bin = bin("r1")
	master := s.PID()
	waitAllGen(t, s, 0)
	waitWorkers(t, s, 2)
	assert.Equal(t, 2, heldIn(t, master, filepath.Join(root, "releases", "r1")),
		"the master holds its release's directory and executable open")

	// Deploy r2 and delete r1, without a restart yet; then a worker dies.
	link("r2")
	require.NoError(t, os.RemoveAll(filepath.Join(root, "releases", "r1")))
	s.Bin = deleted
	victim := probe(t, s.Addr())
	require.Equal(t, "r1", victim.build)
	vpid, _ := strconv.Atoi(victim.pid)
	require.NoError(t, syscall.Kill(vpid, syscall.SIGKILL))
	require.NoError(t, proc.WaitGone(vpid, 10*time.Second))

	// Its slot's replacement serves, from r1, within a few seconds.
	var respawned served
	require.Eventually(t, func() bool {
		respawned = probe(t, s.Addr())
		return respawned.worker == victim.worker && respawned.pid != victim.pid
	}, 10*time.Second, 5*time.Millisecond, "worker %s was not replaced by one that serves", victim.worker)
	assert.Equal(t, "r1", respawned.build, "the respawned worker runs its sibling's release")
	assert.Equal(t, "0", respawned.gen)
	for i := 0; i < 20; i++ {
		assert.Equal(t, "r1", probe(t, s.Addr()).build, "every worker runs the last phase's release")
	}
	// So does a worker added now.
	require.NoError(t, syscall.Kill(master, syscall.SIGTTIN))
	waitOutput(t, s, "worker ready worker=2 ")
	require.Eventually(t, func() bool { return probe(t, s.Addr()).worker == "2" }, 10*time.Second, 5*time.Millisecond,
		"the added worker never served")
	for i := 0; i < 20; i++ {
		assert.Equal(t, "r1", probe(t, s.Addr()).build, "every worker runs the last phase's release")
	}
	waitWorkers(t, s, 3)
	assert.NotContains(t, s.Output.String(), "failed to boot")

	// A phased restart moves every worker to r2.
	require.NoError(t, syscall.Kill(master, syscall.SIGUSR1))
	waitOutput(t, s, "phased restart complete gen=1 ")
	waitAllGen(t, s, 1)
	for i := 0; i < 20; i++ {
		assert.Equal(t, "r2", probe(t, s.Addr()).build)
	}
	require.Eventually(t, func() bool { return len(proc.Running(deleted)) == 1 }, 15*time.Second, 5*time.Millisecond,
		"only the master still runs r1")
	s.Bin = bin("r2")
	waitWorkers(t, s, 3)

	// The master let go of r1 and holds r2, only once after more phases.
	assert.Zero(t, heldIn(t, master, filepath.Join(root, "releases", "r1")), "descriptors on r1 after the phase")
	for g := 2; g <= 4; g++ {
		require.NoError(t, syscall.Kill(master, syscall.SIGUSR1))
		waitOutput(t, s, fmt.Sprintf("phased restart complete gen=%d ", g))
	}
	assert.Equal(t, 2, heldIn(t, master, filepath.Join(root, "releases", "r2")), "descriptors on r2 after 4 phases")
	waitAllGen(t, s, 4)

	stop(t, s)
	assert.Empty(t, proc.Running(deleted), "leftover processes")
}

// heldIn counts pid's descriptors on dir or what is inside it, deleted or
// not.
func heldIn(t *testing.T, pid int, dir string) int {
	t.Helper()
	fds := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(fds)
	require.NoError(t, err)
	n := 0
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(fds, e.Name()))
		if err == nil && (target == dir || strings.HasPrefix(target, dir+"/") || target == dir+" (deleted)") {
			n++
		}
	}
	return n
}
