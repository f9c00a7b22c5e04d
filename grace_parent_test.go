//go:build linux

package graceful_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/gograceful/graceful/internal/proc"
)

// watchSIGTERM catches SIGTERM sent to the test process, which is the
// parent of the servers it starts, until the end of the test. It is to be
// called before the server is started, so that its cleanup runs after the
// server's: a SIGTERM arriving later would end the test binary.
func watchSIGTERM(t *testing.T) <-chan os.Signal {
	t.Helper()
	c := make(chan os.Signal, 4)
	signal.Notify(c, syscall.SIGTERM)
	t.Cleanup(func() { signal.Stop(c) })
	return c
}

// assertNoSIGTERM checks that no SIGTERM reached the test process. It is
// called once the server is gone, so that any signal it sent is already
// pending here; the wait only lets the runtime deliver it to c.
func assertNoSIGTERM(t *testing.T, c <-chan os.Signal) {
	t.Helper()
	select {
	case sig := <-c:
		t.Errorf("the server sent %v to its parent, the test process", sig)
	case <-time.After(500 * time.Millisecond):
	}
}

// waitParentDecision waits until the server has decided whether to stop
// its parent, and returns the line that says what it decided.
func waitParentDecision(t *testing.T, s *proc.Server) string {
	t.Helper()
	var line string
	require.Eventually(t, func() bool {
		for _, l := range strings.Split(s.Output.String(), "\n") {
			if strings.Contains(l, "leaving the parent process alone") || strings.Contains(l, "stopping the facebookgo/grace process") {
				line = l
				return true
			}
		}
		return false
	}, 15*time.Second, 5*time.Millisecond, "the server never said whether it stops its parent")
	return line
}

// startHanded starts the test server as a launcher that sets LISTEN_FDS
// without LISTEN_PID would: with files as descriptors 3 and up.
func startHanded(t *testing.T, port int, files []*os.File, env ...string) *proc.Server {
	t.Helper()
	_, server := binaries(t)
	s, err := proc.StartFiles(port, nil, server, t.TempDir(), append([]string{"GRACEFUL_LOG=info"}, env...), files)
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server output:\n%s", s.Output)
		}
		s.Kill()
		proc.ReapZombies()
	})
	return s
}

// TestHandedParentLeftAlone: a server started with LISTEN_FDS and no
// LISTEN_PID, by a parent that is not a facebookgo/grace process (the test
// itself), serves, and does not send its parent SIGTERM: whether the
// descriptors are not listeners, are listeners it does not ask for, or are
// the very listener it serves on.
func TestHandedParentLeftAlone(t *testing.T) {
	t.Run("not a listener", func(t *testing.T) {
		sigs := watchSIGTERM(t)
		r, w, err := os.Pipe()
		require.NoError(t, err)
		defer r.Close()
		var pipe unix.Stat_t
		require.NoError(t, unix.Fstat(int(w.Fd()), &pipe))
		port, err := proc.FreePort()
		require.NoError(t, err)
		s := startHanded(t, port, []*os.File{w}, "LISTEN_FDS=1")
		w.Close()
		pid := s.PID()
		waitOutput(t, s, "ignoring LISTEN_FDS")
		assert.Contains(t, s.Output.String(), "descriptor 3 is not a socket")
		waitServedBy(t, s, pid)

		// Descriptor 3 is as the launcher passed it: open, the same
		// pipe, not marked close-on-exec.
		var got unix.Stat_t
		require.NoError(t, unix.Stat("/proc/"+strconv.Itoa(pid)+"/fd/3", &got))
		assert.Equal(t, pipe.Ino, got.Ino, "descriptor 3 is no longer the pipe")
		info, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/fdinfo/3")
		require.NoError(t, err)
		assert.False(t, fdCloseOnExec(t, string(info)), "descriptor 3 was marked close-on-exec:\n%s", info)

		stop(t, s)
		assertNoSIGTERM(t, sigs)
	})

	t.Run("listener not asked for", func(t *testing.T) {
		sigs := watchSIGTERM(t)
		other, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		f, err := other.(*net.TCPListener).File()
		require.NoError(t, err)
		other.Close()
		port, err := proc.FreePort()
		require.NoError(t, err)
		s := startHanded(t, port, []*os.File{f}, "LISTEN_FDS=1")
		f.Close()
		pid := s.PID()
		said := waitParentDecision(t, s)
		waitServedBy(t, s, pid)
		stop(t, s)
		assertNoSIGTERM(t, sigs)
		assert.Contains(t, said, "leaving the parent process alone: none of the listeners served came from its LISTEN_FDS")
	})

	for _, workers := range []string{"0", "2"} {
		t.Run("listener served, workers="+workers, func(t *testing.T) {
			sigs := watchSIGTERM(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			port := ln.Addr().(*net.TCPAddr).Port
			f, err := ln.(*net.TCPListener).File()
			require.NoError(t, err)
			// The test holds the port while the server starts: had the
			// server bound it anew, it would have failed.
			s := startHanded(t, port, []*os.File{f}, "LISTEN_FDS=1", "TS_WORKERS="+workers)
			f.Close()
			ln.Close()
			said := waitParentDecision(t, s)
			code, _, _ := get(t, "tcp", s.Addr(), "/")
			assert.Equal(t, 200, code)
			stop(t, s)
			assertNoSIGTERM(t, sigs)
			assert.Contains(t, said, "leaving the parent process alone: not proven to be a facebookgo/grace process")
			assert.Contains(t, said, "is not built with github.com/facebookgo/grace")
		})
	}

	t.Run("nothing passed", func(t *testing.T) {
		// Descriptors 3 and up are whatever the Go runtime opened for
		// itself: none may be taken, closed or marked.
		sigs := watchSIGTERM(t)
		port, err := proc.FreePort()
		require.NoError(t, err)
		s := startHanded(t, port, nil, "LISTEN_FDS=64")
		pid := s.PID()
		waitOutput(t, s, "ignoring LISTEN_FDS")
		waitServedBy(t, s, pid)
		stop(t, s)
		assertNoSIGTERM(t, sigs)
	})
}

// fdCloseOnExec reads the close-on-exec flag from a /proc fdinfo file.
func fdCloseOnExec(t *testing.T, info string) bool {
	t.Helper()
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			require.NoError(t, err)
			return flags&unix.O_CLOEXEC != 0
		}
	}
	t.Fatalf("no flags in fdinfo:\n%s", info)
	return false
}

// TestListenFDSTooLarge: a LISTEN_FDS without LISTEN_PID larger than any
// grace parent passes makes the server fail at once, saying why.
func TestListenFDSTooLarge(t *testing.T) {
	_, server := binaries(t)
	port, err := proc.FreePort()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, server)
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "LISTEN_FDS=1000", "GORACE=atexit_sleep_ms=0")
	began := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(began)
	require.Error(t, err, "the server did not fail:\n%s", out)
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	assert.NotZero(t, exit.ExitCode(), "exit status; output:\n%s", out)
	assert.NoError(t, ctx.Err(), "the server did not exit by itself")
	assert.Less(t, took, 10*time.Second)
	assert.Contains(t, string(out), `LISTEN_FDS="1000" without LISTEN_PID`)
	assert.Contains(t, string(out), "0..64")
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err == nil {
		c.Close()
		t.Errorf("something listens on the server's port")
	}
}
