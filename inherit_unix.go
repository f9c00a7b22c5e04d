//go:build unix

package graceful

import (
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// loadInheritance reads and removes envInherit and turns the descriptors it
// names into listeners. A description written for another process (its
// parent PID is not ours) is ignored; one that is malformed or names a
// descriptor that is not what it says is an error, and every descriptor it
// names is closed, so that nothing is ever served on the wrong socket.
func loadInheritance() (*inheritance, error) {
	if !inheritEnv.set {
		return loadHanded()
	}
	if inheritEnv.err != nil {
		return nil, fmt.Errorf("graceful: inherited environment %s: %w", envInherit, inheritEnv.err)
	}
	d := inheritEnv.desc
	if ppid := inheritEnv.ppid; d.PPID != ppid {
		return &inheritance{stale: fmt.Sprintf("%s was written for a child of process %d, but this process's parent is %d; ignoring it", envInherit, d.PPID, ppid)}, nil
	}
	in := &inheritance{desc: d}
	// fail closes what is still open: the listeners made so far, and the
	// descriptors from the skip-th listener on.
	fail := func(err error, skip int) (*inheritance, error) {
		for _, il := range in.lns {
			il.l.Close()
		}
		for _, fd := range d.fds()[skip:] {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("graceful: inherited environment %s: %w", envInherit, err)
	}
	for _, ln := range d.Listeners {
		if err := checkListenerFD(ln); err != nil {
			return fail(err, len(in.lns))
		}
		f := os.NewFile(uintptr(ln.FD), ln.Network+":"+ln.Addr)
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return fail(fmt.Errorf("listener %s:%s on descriptor %d: %w", ln.Network, ln.Addr, ln.FD, err), len(in.lns)+1)
		}
		in.lns = append(in.lns, &inheritedListener{inheritedLn: ln, l: l})
	}
	if err := checkSocket(d.Ctrl); err != nil {
		return fail(fmt.Errorf("control descriptor %d: %w", d.Ctrl, err), len(in.lns))
	}
	in.ctrl = os.NewFile(uintptr(d.Ctrl), "graceful-ctrl")
	in.errfd = os.NewFile(uintptr(d.Stderr), "graceful-stderr")
	if d.HandOff > 0 {
		// Hand-off (handoff_proc.go): a socket that is not one is
		// ignored, never fatal: connections are then drained as before.
		if checkSocket(d.HandOff) == nil {
			in.ho = os.NewFile(uintptr(d.HandOff), "graceful-handoff")
		} else {
			unix.Close(d.HandOff)
		}
	}
	return in, nil
}

// inheritEnv is envInherit as the process started with it, taken out of
// the environment when the package is initialised, before the application
// can start a process of its own that would inherit it.
var inheritEnv = takeInheritEnv()

type envSnapshot struct {
	set  bool
	ppid int
	desc *inheritDesc // the value parsed, nil if err
	err  error        // why the value is malformed
	base string       // the inherited Base, if desc is ours
}

func takeInheritEnv() envSnapshot {
	v, ok := os.LookupEnv(envInherit)
	if !ok {
		return envSnapshot{}
	}
	os.Unsetenv(envInherit)
	snap := envSnapshot{set: true, ppid: os.Getppid()}
	snap.desc, snap.err = parseInherit(v)
	if d := snap.desc; d != nil && d.PPID != snap.ppid && !d.Worker && orphaned(d) {
		// The predecessor died even before this process started: the
		// description is still this process's, the listeners are checked
		// as ever, and stderr, a pipe to the dead process, is replaced.
		snap.ppid = d.PPID
		dup2(d.Stderr, 2)
	}
	// Keep the descriptors from processes the application starts before
	// it listens.
	if d := snap.desc; d != nil && d.PPID == snap.ppid {
		for _, fd := range d.fds() {
			unix.CloseOnExec(fd)
		}
		snap.base = d.Base
		if c := dupFD(d.Ctrl); c >= 0 {
			watchStart(d, c)
		}
	}
	return snap
}

// workerDesc returns the description this process inherited as a worker of
// a cluster, or nil.
func workerDesc() *inheritDesc {
	if d := inheritEnv.desc; d != nil && d.Worker && d.PPID == inheritEnv.ppid {
		return d
	}
	return nil
}

// fds lists the descriptors of d, listeners first.
func (d *inheritDesc) fds() []int {
	var fds []int
	for _, l := range d.Listeners {
		fds = append(fds, l.FD)
	}
	fds = append(fds, d.Ctrl, d.Stderr)
	if d.HandOff > 0 {
		fds = append(fds, d.HandOff)
	}
	return fds
}

func checkSocket(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("not open: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return errors.New("not a socket")
	}
	return nil
}

// listeningSocket checks that fd is a listening stream socket and returns
// the address it is bound to.
func listeningSocket(fd int) (unix.Sockaddr, error) {
	if err := checkSocket(fd); err != nil {
		return nil, err
	}
	if t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || t != unix.SOCK_STREAM {
		return nil, errors.New("not a stream socket")
	}
	if a, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || a != 1 {
		return nil, errNotListening
	}
	return unix.Getsockname(fd)
}

// errNotListening is listeningSocket's error for a socket that is not a
// listening one.
var errNotListening = errors.New("not listening")

// checkListenerFD verifies that ln.FD is a listening stream socket of the
// family ln.Network names, bound where ln.Addr says.
func checkListenerFD(ln inheritedLn) error {
	what := fmt.Sprintf("listener %s:%s on descriptor %d", ln.Network, ln.Addr, ln.FD)
	sa, err := listeningSocket(ln.FD)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	var port int
	var ipv string // the IP version of a TCP socket
	switch a := sa.(type) {
	case *unix.SockaddrUnix:
		if ln.Network != "unix" {
			return fmt.Errorf("%s: is a Unix socket", what)
		}
		if a.Name != ln.Addr {
			return fmt.Errorf("%s: bound to %q", what, a.Name)
		}
		return nil
	case *unix.SockaddrInet4:
		port, ipv = a.Port, "4"
	case *unix.SockaddrInet6:
		port, ipv = a.Port, "6"
	default:
		return fmt.Errorf("%s: unexpected address family", what)
	}
	if ln.Network != "tcp" && ln.Network != "tcp"+ipv {
		return fmt.Errorf("%s: is an IPv%s socket", what, ipv)
	}
	if _, p, err := net.SplitHostPort(ln.Addr); err == nil {
		if want, err := net.LookupPort(ln.Network, p); err == nil && want != 0 && want != port {
			return fmt.Errorf("%s: bound to port %d", what, port)
		}
	}
	return nil
}

// orphaned reports whether d's control socket is a socket whose other end,
// held by the process that wrote d, has closed: that process died.
func orphaned(d *inheritDesc) bool {
	var st unix.Stat_t
	return unix.Fstat(d.Ctrl, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK && peerClosed(d.Ctrl)
}

// inheritedBase is the Base a predecessor passed, or "".
func inheritedBase() string { return inheritEnv.base }
