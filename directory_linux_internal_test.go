package graceful

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func fdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

// TestHeldReleaseStartsAfterDeletion: a release pinned through Directory
// starts, after its directory has been deleted and the link moved on, in
// that directory and from that executable, even when the new process is
// handed more descriptors than the release's own numbers (which the child
// reuses before execve); once closed, it holds nothing and starts by path.
func TestHeldReleaseStartsAfterDeletion(t *testing.T) {
	sh, err := exec.LookPath("sh")
	require.NoError(t, err)
	root := t.TempDir()
	r1 := filepath.Join(root, "r1")
	require.NoError(t, os.MkdirAll(filepath.Join(r1, "bin"), 0o755))
	b, err := os.ReadFile(sh)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(r1, "bin", "app"), b, 0o755))
	current := filepath.Join(root, "current")
	require.NoError(t, os.Symlink(r1, current))

	before := fdCount(t)
	r := &runner{dir: current, exeRel: "bin/app"}
	rel, err := r.resolveRelease(true)
	require.NoError(t, err)
	require.NotNil(t, rel.held, "a pinned release is held open on Linux")
	assert.Equal(t, r1, rel.dir)
	require.NoError(t, os.Remove(current))
	require.NoError(t, os.Symlink(t.TempDir(), current))
	require.NoError(t, os.RemoveAll(r1))

	run := func() (string, error) {
		out, err := os.CreateTemp(root, "out")
		require.NoError(t, err)
		defer out.Close()
		errs, err := os.CreateTemp(root, "err") // sh complains of its deleted directory
		require.NoError(t, err)
		defer errs.Close()
		// Descriptors to pass on, opened above a gap of free low
		// numbers that the child overwrites before execve.
		var gap, extra []*os.File
		for i := 0; i < 50; i++ {
			f, err := os.Open(os.DevNull)
			require.NoError(t, err)
			defer f.Close()
			if i < 30 {
				gap = append(gap, f)
			} else {
				extra = append(extra, f)
			}
		}
		for _, f := range gap {
			f.Close()
		}
		cmd := exec.Command(rel.exe, "-c", `readlink /proc/self/cwd; readlink /proc/$$/exe`)
		cmd.Args[0] = "app"
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, out, errs
		cmd.ExtraFiles = extra
		err = rel.start(cmd)
		if err != nil {
			return "", err
		}
		if err := cmd.Wait(); err != nil {
			return "", err
		}
		b, err := os.ReadFile(out.Name())
		return string(b), err
	}
	got, err := run()
	require.NoError(t, err)
	assert.Equal(t, []string{r1 + " (deleted)", filepath.Join(r1, "bin", "app") + " (deleted)"},
		strings.Split(strings.TrimSpace(got), "\n"))

	rel.close()
	rel.close()
	assert.Equal(t, before, fdCount(t), "closed, the release holds no descriptor")
	_, err = run()
	assert.ErrorContains(t, err, "chdir "+r1, "closed, it starts by path")
}

// TestHeldScriptStartsAfterDeletion: a release whose executable is a
// script (a launcher) starts from what is held, also once deleted: its
// interpreter can open it.
func TestHeldScriptStartsAfterDeletion(t *testing.T) {
	root := t.TempDir()
	r1 := filepath.Join(root, "r1")
	require.NoError(t, os.MkdirAll(filepath.Join(r1, "bin"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(r1, "bin", "app"), []byte("#!/bin/sh\necho \"launched in $(readlink /proc/$$/cwd)\"\n"), 0o755))
	current := filepath.Join(root, "current")
	require.NoError(t, os.Symlink(r1, current))
	r := &runner{dir: current, exeRel: "bin/app"}
	rel, err := r.resolveRelease(true)
	require.NoError(t, err)
	defer rel.close()
	require.NoError(t, os.Remove(current))
	require.NoError(t, os.RemoveAll(r1))
	out, err := os.CreateTemp(root, "out")
	require.NoError(t, err)
	defer out.Close()
	cmd := exec.Command(rel.exe)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, out, os.Stderr
	require.NoError(t, rel.start(cmd))
	require.NoError(t, cmd.Wait())
	b, err := os.ReadFile(out.Name())
	require.NoError(t, err)
	assert.Equal(t, "launched in "+r1+" (deleted)\n", string(b))
}
