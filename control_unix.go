//go:build unix

package graceful

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenControl returns the control socket's listener: the one inherited
// from a predecessor, or a new socket at path that only this user may
// connect to. On Linux the mode is set on the socket before it is bound, so
// the file never exists with a wider one; elsewhere it is set right after.
func listenControl(inh *inheritance, path string) (net.Listener, error) {
	if l := inh.claim("unix", path); l != nil {
		return l, nil
	}
	fail := func(err error) (net.Listener, error) {
		return nil, fmt.Errorf("graceful: control socket %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return fail(errors.New("the path exists and is not a socket"))
		}
		if !staleSocket(path) {
			return fail(errors.New("in use by another process"))
		}
		if err := os.Remove(path); err != nil {
			return fail(err)
		}
	}
	syscall.ForkLock.RLock()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return fail(err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	// Linux applies a socket's mode to the file bind creates; some
	// systems refuse fchmod on a socket, and get the chmod below alone.
	if err := unix.Fchmod(fd, 0o600); err != nil && runtime.GOOS == "linux" {
		return fail(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return fail(err)
	}
	// The socket file exists from here on: a failure removes it.
	err = os.Chmod(path, 0o600)
	if err == nil {
		err = unix.Listen(fd, 64)
	}
	var l net.Listener
	if err == nil {
		l, err = net.FileListener(f)
	}
	if err != nil {
		os.Remove(path)
		return fail(err)
	}
	inh.remember(l, "unix", path)
	return l, nil
}
