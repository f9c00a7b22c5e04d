//go:build unix

package graceful

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

const handoffOS = true

// dupConn duplicates c's socket with F_DUPFD_CLOEXEC. Unlike File, it
// leaves the socket non-blocking, as the connection still uses it.
func dupConn(c net.Conn) (*os.File, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, errors.New("graceful: duplicating a connection: not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("graceful: duplicating a connection: %w", err)
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, fmt.Errorf("graceful: duplicating a connection: %w", err)
	}
	if derr != nil {
		return nil, fmt.Errorf("graceful: duplicating a connection: %w", derr)
	}
	return os.NewFile(uintptr(fd), "handed "+c.RemoteAddr().String()), nil
}
