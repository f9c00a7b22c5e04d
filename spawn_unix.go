//go:build unix

package graceful

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const restartSupported = true

// dupListener returns a duplicate of l's descriptor to pass to a new
// process. Not l.File(): os/exec calls Fd on what it passes, and Fd on the
// File that a net listener returns switches the descriptor to blocking
// mode. That mode is shared by every duplicate of the socket, in every
// process, so this process's Accept would then block in the kernel, and
// closing the listener would wait for it forever. os.NewFile on a
// non-blocking descriptor leaves the mode alone.
func dupListener(l net.Listener) (*os.File, error) {
	sc, ok := l.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("a %T cannot be passed on", l)
	}
	return dupSocket(sc, l.Addr().String())
}

// dupSocket duplicates sc's socket with F_DUPFD_CLOEXEC, as a file named
// name. Unlike File, it leaves the socket non-blocking, as sc still uses
// it.
func dupSocket(sc syscall.Conn, name string) (*os.File, error) {
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) { dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup: %w", derr)
	}
	return os.NewFile(uintptr(dup), name), nil
}

// socketpair returns a connected pair of Unix stream sockets, both
// close-on-exec: a control socket.
func socketpair() (*os.File, *os.File, error) {
	return socketPair(unix.SOCK_STREAM, "graceful-ctrl")
}

// socketPair returns a connected pair of Unix sockets of type typ, both
// close-on-exec, as files named name.
func socketPair(typ int, name string) (*os.File, *os.File, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	pair, err := unix.Socketpair(unix.AF_UNIX, typ, 0)
	if err != nil {
		return nil, nil, err
	}
	unix.CloseOnExec(pair[0])
	unix.CloseOnExec(pair[1])
	return os.NewFile(uintptr(pair[0]), name), os.NewFile(uintptr(pair[1]), name), nil
}

// dup2 makes descriptor to a copy of from.
func dup2(from, to int) error {
	for {
		if err := unix.Dup2(from, to); err != unix.EINTR {
			return err
		}
	}
}

// dupFD returns a close-on-exec duplicate of fd, or -1.
func dupFD(fd int) int {
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return d
}

func closeFD(fd int) { unix.Close(fd) }

// waitReadable waits up to wait for fd to be readable, or closed at the
// other end.
func waitReadable(fd int, wait time.Duration) bool {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(p, int(wait/time.Millisecond))
	return err == nil && n > 0
}

// peerClosed reports whether the other end of the stream socket fd has
// closed. It reads nothing.
func peerClosed(fd int) bool {
	var b [1]byte
	n, _, err := unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	return err == nil && n == 0
}

// sigpipe catches SIGPIPE while a new process's stderr is a pipe to the
// process that started it, so that a write there after that process died
// fails instead of killing this one (the Go runtime's default for fd 2).
var sigpipe = make(chan os.Signal, 1)

func guardStderr()   { signal.Notify(sigpipe, syscall.SIGPIPE) }
func unguardStderr() { signal.Stop(sigpipe) }
