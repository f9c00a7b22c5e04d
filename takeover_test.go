//go:build linux

package graceful_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gograceful/graceful/internal/proc"
)

// successorPID waits for the log line naming the successor a restart
// started and returns its PID.
func successorPID(t *testing.T, s *proc.Server, after int) int {
	t.Helper()
	re := regexp.MustCompile(`successor started successor=(\d+)`)
	var pid int
	require.Eventually(t, func() bool {
		for _, m := range re.FindAllStringSubmatch(s.Output.String(), -1) {
			if p, _ := strconv.Atoi(m[1]); p != after {
				pid = p
			}
		}
		return pid != 0
	}, 15*time.Second, 2*time.Millisecond, "no successor started")
	return pid
}

// waitInitialised waits until the package of the new process pid has been
// initialised: it has taken its inherited descriptors in hand, marking the
// first listener's close-on-exec.
func waitInitialised(t *testing.T, pid int) {
	t.Helper()
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/3", pid))
		if err != nil {
			return false
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "flags:"); ok {
				f, _ := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
				return f&syscall.O_CLOEXEC != 0
			}
		}
		return false
	}, 15*time.Second, time.Millisecond, "process %d never initialised", pid)
}

// TestOrphanedSuccessorServes: the old process is killed (kill -9, the OOM
// killer) while its successor starts, once that has inherited the sockets.
// The successor holds the listening sockets alone and must serve on them:
// it may not die writing its warning to the stderr pipe of the process
// that is gone.
func TestOrphanedSuccessorServes(t *testing.T) {
	_, server := binaries(t)
	s := start(t, server, "TS_START_DELAY=1s")
	old, err := s.Signal(syscall.SIGUSR2)
	require.NoError(t, err)
	succ := successorPID(t, s, 0)
	waitInitialised(t, succ)
	require.NoError(t, syscall.Kill(old, syscall.SIGKILL))
	require.NoError(t, proc.WaitGone(old, 10*time.Second))
	pid, err := s.WaitPIDFile(old, 20*time.Second)
	require.NoError(t, err, "the orphaned successor never took over")
	assert.Equal(t, succ, pid)
	waitServedBy(t, s, succ)
	waitOutput(t, s, "died during the hand-over; serving on the sockets it passed")
	stop(t, s)
}

// TestOrphanedMasterServes: in a hot restart of a cluster, the old master
// is killed while the new one boots its workers. The new master, which
// logs as its workers boot, must not die of the dead master's stderr pipe:
// it takes over and its workers serve.
func TestOrphanedMasterServes(t *testing.T) {
	_, server := binaries(t)
	dir := t.TempDir()
	mode := filepath.Join(dir, "mode")
	s := start(t, server, "TS_WORKERS=2", "TS_MODE_FILE="+mode)
	require.Eventually(t, func() bool { return strings.Count(s.Output.String(), "worker ready") == 2 }, 15*time.Second, time.Millisecond,
		"the workers never booted")
	require.NoError(t, os.WriteFile(mode, []byte("slow\n"), 0o644)) // every new process takes a second to start
	old, err := s.Signal(syscall.SIGUSR2)
	require.NoError(t, err)
	succ := successorPID(t, s, 0)
	require.Eventually(t, func() bool { return strings.Count(s.Output.String(), "worker booting") == 4 }, 15*time.Second, time.Millisecond,
		"the new master never started its workers")
	require.NoError(t, syscall.Kill(old, syscall.SIGKILL))
	require.NoError(t, proc.WaitGone(old, 10*time.Second))
	pid, err := s.WaitPIDFile(old, 20*time.Second)
	require.NoError(t, err, "the orphaned new master never took over")
	assert.Equal(t, succ, pid)
	waitOutput(t, s, "died during the hand-over; serving on the sockets it passed")
	code, _, _ := get(t, "tcp", s.Addr(), "/")
	assert.Equal(t, 200, code)
	proc.ReapZombies() // the old master's workers, adopted here
	stop(t, s)
}

// TestClusterStopRefusesNewConnections: once a stopping cluster's workers
// have stopped accepting, while one still finishes a long request, a new
// connection must be refused at once (a client or balancer can retry that
// safely), not queued in the backlog of a socket the master holds open and
// no one accepts on, to be reset when the master ends.
func TestClusterStopRefusesNewConnections(t *testing.T) {
	_, server := binaries(t)
	s := start(t, server, "TS_WORKERS=1")
	require.Eventually(t, func() bool { return strings.Contains(s.Output.String(), "worker ready") }, 15*time.Second, time.Millisecond)
	// A long request, in flight once its headers arrive.
	conn, err := net.Dial("tcp", s.Addr())
	require.NoError(t, err)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	_, err = conn.Write([]byte("GET /sleep?ms=6000 HTTP/1.1\r\nHost: x\r\n\r\n"))
	require.NoError(t, err)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode)

	_, err = s.Signal(syscall.SIGTERM)
	require.NoError(t, err)
	waitOutput(t, s, `reason="the master is stopping"`)
	refused := false
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
		if err != nil {
			refused = true
			break
		}
		c.Close()
	}
	assert.True(t, refused, "new connections were still taken in while the only worker drained")
	body, err := io.ReadAll(resp.Body)
	assert.NoError(t, err, "the request in flight")
	assert.Equal(t, "slept 6000\n", string(body))
	stop(t, s)
}

// TestOrphanedBeforeItRan: a successor whose predecessor died before the
// successor's own code ran (its parent PID is no longer the one its
// description names, and the predecessor's end of the control socket is
// closed) still takes over the sockets it was given: it serves on them and
// names itself in the pidfile. The test holds the port, so the server can
// only serve on the socket passed to it.
func TestOrphanedBeforeItRan(t *testing.T) {
	_, server := binaries(t)
	port, err := proc.FreePort()
	require.NoError(t, err)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	l, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	defer l.Close()
	lf, err := l.(*net.TCPListener).File()
	require.NoError(t, err)
	defer lf.Close()
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	syscall.Close(pair[0]) // the dead predecessor's end
	ctrl := os.NewFile(uintptr(pair[1]), "ctrl")
	defer ctrl.Close()
	errR, errW, err := os.Pipe()
	require.NoError(t, err)
	defer errR.Close()
	var logs proc.Buffer
	go io.Copy(&logs, errR)
	dead := exec.Command("true")
	require.NoError(t, dead.Run())
	desc := url.Values{"v": {"1"}, "ppid": {strconv.Itoa(dead.Process.Pid)}, "l": {"3:tcp:" + addr}, "ctrl": {"4"}, "stderr": {"5"}}
	s, err := proc.StartFiles(port, nil, server, t.TempDir(), []string{"GRACEFUL_INHERIT=" + desc.Encode()}, []*os.File{lf, ctrl, errW})
	require.NoError(t, err)
	errW.Close()
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			t.Logf("server output:\n%s\n%s", s.Output, logs.String())
		}
	})
	pid, err := s.WaitPIDFile(0, 15*time.Second)
	require.NoError(t, err, "the orphan never named itself in the pidfile")
	assert.Equal(t, s.PID(), pid)
	_, got, _ := get(t, "tcp", addr, "/")
	assert.Equal(t, strconv.Itoa(pid), got, "it serves on the socket it was given")
	require.NoError(t, s.Stop(10*time.Second))
}
