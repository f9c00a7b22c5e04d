//go:build unix

package graceful

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// nonBlocking reports whether l's descriptor is in non-blocking mode. The
// mode belongs to the socket's open file description, which every process
// holding the socket shares.
func nonBlocking(t *testing.T, l net.Listener) bool {
	rc, err := l.(syscall.Conn).SyscallConn()
	require.NoError(t, err)
	var flags int
	require.NoError(t, rc.Control(func(fd uintptr) { flags, err = unix.FcntlInt(fd, unix.F_GETFL, 0) }))
	require.NoError(t, err)
	return flags&unix.O_NONBLOCK != 0
}

// TestSpawnKeepsListenerNonBlocking: passing a listener to a new process
// must not put the shared socket into blocking mode, or this process's
// Accept can block in the kernel and its Close then waits forever.
func TestSpawnKeepsListenerNonBlocking(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	require.True(t, nonBlocking(t, l))
	r := &runner{s: &Server{}, log: discardLogger(), served: []*served{{l: l, key: lnKey{"tcp", l.Addr().String()}}}}
	p, err := r.spawn(spawnSpec{rel: release{exe: "/bin/true"}, timeout: 5 * time.Second})
	require.NoError(t, err)
	assert.True(t, nonBlocking(t, l), "spawning made the listening socket blocking")
	assert.Error(t, <-p.result, "/bin/true exits without reporting ready")
}
