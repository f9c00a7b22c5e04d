//go:build linux

package graceful_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/gograceful/graceful/internal/loadgen"
	"github.com/gograceful/graceful/internal/proc"
)

// notifySocket is a fake systemd notify socket: it records each message
// with the PID of its sender, as systemd learns it from the kernel.
type notifySocket struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []notifyMsg
}

type notifyMsg struct {
	pid  int
	text string
}

func (m notifyMsg) String() string { return fmt.Sprintf("[%d] %s", m.pid, m.text) }

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	require.NoError(t, err)
	rc, err := conn.SyscallConn()
	require.NoError(t, err)
	rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
	n := &notifySocket{path: path, conn: conn}
	go func() {
		buf, oob := make([]byte, 4096), make([]byte, 1024)
		for {
			k, ok, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			m := notifyMsg{text: string(buf[:k])}
			if cms, err := unix.ParseSocketControlMessage(oob[:ok]); err == nil {
				for _, cm := range cms {
					if cred, err := unix.ParseUnixCredentials(&cm); err == nil {
						m.pid = int(cred.Pid)
					}
				}
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, m)
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return n
}

// messages returns what was received, with MONOTONIC_USEC's value and
// STATUS's detail cut, and with each process's watchdog pings after its
// first left out when pings is false.
func (n *notifySocket) messages(pings bool) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	pinged := map[int]bool{}
	for _, m := range n.msgs {
		text := m.text
		if i := strings.Index(text, "MONOTONIC_USEC="); i >= 0 {
			v := strings.TrimSpace(text[i+len("MONOTONIC_USEC="):])
			if _, err := strconv.ParseUint(v, 10, 64); err == nil {
				text = text[:i] + "MONOTONIC_USEC=<n>"
			}
		}
		if i := strings.Index(text, "STATUS=restart failed: "); i >= 0 {
			text = text[:i] + "STATUS=restart failed: ..."
		}
		if text == "WATCHDOG=1" && !pings {
			if pinged[m.pid] {
				continue
			}
			pinged[m.pid] = true
		}
		out = append(out, notifyMsg{m.pid, text}.String())
	}
	return out
}

func (n *notifySocket) count(pid int, text string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, m := range n.msgs {
		if m.pid == pid && m.text == text {
			c++
		}
	}
	return c
}

func (n *notifySocket) waitFor(t *testing.T, pid int, text string) {
	t.Helper()
	require.Eventually(t, func() bool { return n.count(pid, text) > 0 }, 15*time.Second, 2*time.Millisecond,
		"no %q from %d; got %v", text, pid, n.messages(true))
}

// TestNotifySingle records the exact notifications of a start, a hot
// restart, a failed restart and a stop.
func TestNotifySingle(t *testing.T) {
	_, server := binaries(t)
	ns := newNotifySocket(t)
	modeFile := filepath.Join(t.TempDir(), "mode")
	s := start(t, server, "NOTIFY_SOCKET="+ns.path, "WATCHDOG_USEC=60000000", "TS_MODE_FILE="+modeFile)
	p1 := s.PID()
	ns.waitFor(t, p1, "WATCHDOG=1")

	_, p2, err := s.Restart(15 * time.Second)
	require.NoError(t, err)
	ns.waitFor(t, p2, "WATCHDOG=1")

	require.NoError(t, os.WriteFile(modeFile, []byte("exit"), 0o644))
	_, err = s.Signal(syscall.SIGUSR2)
	require.NoError(t, err)
	waitOutput(t, s, "restart failed; still serving")
	require.Eventually(t, func() bool { return len(ns.messages(false)) >= 8 }, 5*time.Second, 2*time.Millisecond)
	stop(t, s)

	want := []string{
		fmt.Sprintf("[%d] READY=1", p1),
		fmt.Sprintf("[%d] WATCHDOG=1", p1),
		fmt.Sprintf("[%d] RELOADING=1\nMONOTONIC_USEC=<n>", p1),
		fmt.Sprintf("[%d] MAINPID=%d", p1, p2),
		fmt.Sprintf("[%d] READY=1", p2),
		fmt.Sprintf("[%d] WATCHDOG=1", p2),
		fmt.Sprintf("[%d] RELOADING=1\nMONOTONIC_USEC=<n>", p2),
		fmt.Sprintf("[%d] READY=1\nSTATUS=restart failed: ...", p2),
		fmt.Sprintf("[%d] STOPPING=1", p2),
	}
	assert.Equal(t, want, ns.messages(false))
}

// TestNotifyCluster: the master alone speaks, pings the watchdog on time,
// and reports a phased restart as a reload.
func TestNotifyCluster(t *testing.T) {
	_, server := binaries(t)
	ns := newNotifySocket(t)
	s := start(t, server, "NOTIFY_SOCKET="+ns.path, "WATCHDOG_USEC=200000", "TS_WORKERS=2")
	m := s.PID()
	ns.waitFor(t, m, "READY=1")
	began := time.Now()
	_, err := s.Signal(syscall.SIGUSR1)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return ns.count(m, "READY=1") == 2 }, 15*time.Second, 2*time.Millisecond)
	// Pings every 100 ms: at least five in the next 700 ms.
	pings := ns.count(m, "WATCHDOG=1")
	time.Sleep(700 * time.Millisecond)
	assert.GreaterOrEqual(t, ns.count(m, "WATCHDOG=1")-pings, 5, "watchdog pings")
	stop(t, s)

	seq := ns.messages(false)
	want := []string{
		fmt.Sprintf("[%d] READY=1", m),
		fmt.Sprintf("[%d] WATCHDOG=1", m),
		fmt.Sprintf("[%d] RELOADING=1\nMONOTONIC_USEC=<n>", m),
		fmt.Sprintf("[%d] READY=1", m),
		fmt.Sprintf("[%d] STOPPING=1", m),
	}
	assert.Equal(t, want, seq)
	for _, msg := range ns.messages(true) {
		assert.True(t, strings.HasPrefix(msg, fmt.Sprintf("[%d] ", m)), "a message not from the master: %s", msg)
	}
	t.Logf("phased restart took %s", time.Since(began))
}

// TestNotifyClusterHotRestart: a new master takes over the service with
// MAINPID and pings at once.
func TestNotifyClusterHotRestart(t *testing.T) {
	_, server := binaries(t)
	ns := newNotifySocket(t)
	s := start(t, server, "NOTIFY_SOCKET="+ns.path, "WATCHDOG_USEC=60000000", "TS_WORKERS=2")
	m1 := s.PID()
	ns.waitFor(t, m1, "WATCHDOG=1")
	_, m2, err := s.Restart(15 * time.Second)
	require.NoError(t, err)
	ns.waitFor(t, m2, "WATCHDOG=1")
	stop(t, s)
	want := []string{
		fmt.Sprintf("[%d] READY=1", m1),
		fmt.Sprintf("[%d] WATCHDOG=1", m1),
		fmt.Sprintf("[%d] RELOADING=1\nMONOTONIC_USEC=<n>", m1),
		fmt.Sprintf("[%d] MAINPID=%d", m1, m2),
		fmt.Sprintf("[%d] READY=1", m2),
		fmt.Sprintf("[%d] WATCHDOG=1", m2),
		fmt.Sprintf("[%d] STOPPING=1", m2),
	}
	assert.Equal(t, want, ns.messages(false))
}

// TestSocketActivation: listeners handed over as systemd does (LISTEN_PID,
// LISTEN_FDS, LISTEN_FDNAMES) are served, not bound again, and survive hot
// and phased restarts.
func TestSocketActivation(t *testing.T) {
	for _, workers := range []string{"0", "2"} {
		t.Run("workers="+workers, func(t *testing.T) {
			_, server := binaries(t)
			dir := t.TempDir()
			tl, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			sockPath := filepath.Join(dir, "app.sock")
			ul, err := net.Listen("unix", sockPath)
			require.NoError(t, err)
			ul.(*net.UnixListener).SetUnlinkOnClose(false)
			tf, err := tl.(*net.TCPListener).File()
			require.NoError(t, err)
			uf, err := ul.(*net.UnixListener).File()
			require.NoError(t, err)
			port := tl.Addr().(*net.TCPAddr).Port
			// The test keeps its listeners open while the server starts:
			// had the server tried to bind the port, it would have failed.
			s, err := proc.StartFiles(port, []string{"sh", "-c", `LISTEN_PID=$$ exec "$0"`}, server, dir,
				[]string{"LISTEN_FDS=2", "LISTEN_FDNAMES=http:app", "TS_UNIX=" + sockPath, "TS_WORKERS=" + workers}, []*os.File{tf, uf})
			require.NoError(t, err)
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("server output:\n%s", s.Output)
				}
				s.Kill()
				proc.ReapZombies()
			})
			tf.Close()
			uf.Close()
			tl.Close()
			ul.Close()

			gen := loadgen.Start(loadgen.Config{Addr: s.Addr(), KeepAlive: 2, Fresh: 1, Duration: 60 * time.Second})
			code, _, _ := get(t, "unix", sockPath, "/")
			assert.Equal(t, 200, code)
			require.True(t, gen.WaitDone(100, 10*time.Second))
			_, _, err = s.Restart(15 * time.Second)
			require.NoError(t, err)
			if workers != "0" {
				waitAllGen(t, s, 0)
				s.Signal(syscall.SIGUSR1)
				waitAllGen(t, s, 1)
			}
			require.True(t, gen.WaitDone(100, 10*time.Second))
			code, _, _ = get(t, "unix", sockPath, "/")
			assert.Equal(t, 200, code)
			res := gen.Stop()
			assertNoFailures(t, res)
			assert.NotContains(t, s.Output.String(), "closed an inherited listener")
			stop(t, s)
		})
	}
}
