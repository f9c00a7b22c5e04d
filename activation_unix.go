//go:build unix

package graceful

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

// handed is what a process was given at start-up by something other than
// a graceful predecessor: listening sockets from systemd's socket
// activation (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES), or from a
// facebookgo/grace process that started it as its successor (LISTEN_FDS
// alone, with the listeners from descriptor 3 on). The variables are read
// and removed from the environment when the package is initialised, so
// that processes the application starts do not see them.
type handed struct {
	files []*os.File
	grace int   // the grace process to stop once serving, or 0
	err   error // a LISTEN_FDS that cannot be used
}

var handedOver = takeHanded()

func takeHanded() handed {
	count, ok := os.LookupEnv("LISTEN_FDS")
	if !ok {
		return handed{}
	}
	if _, ok := os.LookupEnv("LISTEN_PID"); ok {
		// systemd: the go-systemd package checks LISTEN_PID against
		// this process and removes the variables.
		return handed{files: activation.Files(true)}
	}
	os.Unsetenv("LISTEN_FDS")
	if inheritEnv.set {
		return handed{} // a graceful predecessor says what it passed
	}
	n, err := strconv.Atoi(count)
	if err != nil || n < 0 || n > maxListeners {
		return handed{err: fmt.Errorf("LISTEN_FDS=%q is not a count of descriptors", count)}
	}
	h := handed{}
	if ppid := os.Getppid(); ppid != 1 {
		h.grace = ppid
	}
	for fd := 3; fd < 3+n; fd++ {
		syscall.CloseOnExec(fd)
		h.files = append(h.files, os.NewFile(uintptr(fd), "LISTEN_FD_"+strconv.Itoa(fd)))
	}
	return h
}

// loadHanded turns the handed-over descriptors into listeners.
func loadHanded() (*inheritance, error) {
	h := handedOver
	if h.err != nil {
		return nil, fmt.Errorf("graceful: inherited environment: %w", h.err)
	}
	if len(h.files) == 0 {
		return nil, nil
	}
	in := &inheritance{graceParent: h.grace}
	for i, f := range h.files {
		ln, err := handedListener(int(f.Fd()))
		var l net.Listener
		if err == nil {
			l, err = net.FileListener(f)
		}
		f.Close()
		if err != nil {
			for _, il := range in.lns {
				il.l.Close()
			}
			for _, rest := range h.files[i+1:] {
				rest.Close()
			}
			return nil, fmt.Errorf("graceful: inherited descriptor %s: %w", f.Name(), err)
		}
		in.lns = append(in.lns, &inheritedListener{inheritedLn: ln, l: l, handed: true})
	}
	return in, nil
}

// handedListener checks that fd is a listening stream socket and says
// where it is bound.
func handedListener(fd int) (inheritedLn, error) {
	ln := inheritedLn{FD: fd}
	if err := checkSocket(fd); err != nil {
		return ln, err
	}
	if t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || t != unix.SOCK_STREAM {
		return ln, errors.New("not a stream socket")
	}
	if a, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || a != 1 {
		return ln, errors.New("not listening (for systemd, set Accept=no)")
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return ln, err
	}
	switch a := sa.(type) {
	case *unix.SockaddrUnix:
		ln.Network, ln.Addr = "unix", a.Name
	case *unix.SockaddrInet4:
		ln.Network, ln.Addr = "tcp", net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *unix.SockaddrInet6:
		ln.Network, ln.Addr = "tcp", net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	default:
		return ln, errors.New("unexpected address family")
	}
	return ln, nil
}

// stopGraceParent ends the facebookgo/grace process this one took over
// from, now that this one serves, as grace's own successor would: with
// SIGTERM, on which it stops accepting and finishes its requests.
func (r *runner) stopGraceParent() {
	if r.inh == nil || r.inh.graceParent == 0 {
		return
	}
	pid := r.inh.graceParent
	r.inh.graceParent = 0
	r.log.Info("graceful: serving; stopping the facebookgo/grace process we took over from", "pid", pid)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		r.log.Warn("graceful: could not stop the grace process", "pid", pid, "err", err)
	}
}
