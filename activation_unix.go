//go:build unix

package graceful

import (
	"debug/buildinfo"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

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
	grace int    // the parent, perhaps a grace process, to stop once serving, or 0
	note  string // why a LISTEN_FDS was ignored
	err   error  // a LISTEN_FDS that cannot be used
}

var handedOver = takeHanded()

func takeHanded() handed {
	count, ok := os.LookupEnv("LISTEN_FDS")
	if !ok {
		return handed{}
	}
	if pid, ok := os.LookupEnv("LISTEN_PID"); ok {
		// systemd: the go-systemd package checks LISTEN_PID against
		// this process and removes the variables; the count is checked
		// first, so that no descriptor the process does not own is
		// touched.
		if n, err := strconv.Atoi(count); pid == strconv.Itoa(os.Getpid()) && (err != nil || n < 0 || n > maxListeners) {
			return handed{err: fmt.Errorf("LISTEN_FDS=%q is not a count of listening descriptors in 0..%d", count, maxListeners)}
		}
		return handed{files: activation.Files(true)}
	}
	os.Unsetenv("LISTEN_FDS")
	if inheritEnv.set {
		return handed{} // a graceful predecessor says what it passed
	}
	// Nothing but this variable says that descriptors 3 and up were
	// passed: it may have been left in the environment by anything. The
	// count is checked, then every descriptor, before any is touched; the
	// ones checked are only looked at, so that a descriptor the Go runtime
	// or the launcher opened for its own use stays as it was.
	n, err := number(count, "LISTEN_FDS", 0, maxListeners+1)
	if err != nil {
		return handed{err: fmt.Errorf("LISTEN_FDS=%q without LISTEN_PID (as a facebookgo/grace parent sets it) is not a count of listening descriptors in 0..%d", count, maxListeners)}
	}
	for fd := 3; fd < 3+n; fd++ {
		if _, err := handedListener(fd); err != nil {
			return handed{note: fmt.Sprintf("LISTEN_FDS=%d without LISTEN_PID, but descriptor %d is %v: not listeners passed by a facebookgo/grace parent; ignoring LISTEN_FDS and leaving descriptors and parent process alone", n, fd, err)}
		}
	}
	h := handed{}
	if ppid := os.Getppid(); ppid != 1 {
		h.grace = ppid
	}
	for fd := 3; fd < 3+n; fd++ {
		unix.CloseOnExec(fd)
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
	if h.note != "" {
		return &inheritance{stale: h.note}, nil
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
		if errors.Is(err, errNotListening) && h.grace == 0 {
			err = fmt.Errorf("%w (for systemd, set Accept=no)", err)
		}
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
	sa, err := listeningSocket(fd)
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
// SIGTERM, on which it stops accepting and finishes its requests. LISTEN_FDS
// alone does not prove that the parent is such a process, so the parent is
// stopped only if one of the listeners this process serves came from those
// descriptors, the parent's executable is a program built with
// github.com/facebookgo/grace, and the parent is still this process's
// parent. Where the executable cannot be read (systems without /proc), the
// parent is not stopped. Otherwise the reason it is left alone is logged.
func (r *runner) stopGraceParent() {
	if r.inh == nil || r.inh.graceParent == 0 {
		return
	}
	pid := r.inh.graceParent
	r.inh.graceParent = 0
	leave := func(why string, args ...any) {
		r.log.Warn("graceful: leaving the parent process alone: "+why+" (a facebookgo/grace process still serving the same sockets must be stopped with SIGTERM by hand)", append([]any{"pid", pid}, args...)...)
	}
	if !r.servesHanded() {
		leave("none of the listeners served came from its LISTEN_FDS")
		return
	}
	if err := isGraceProcess(pid); err != nil {
		leave("not proven to be a facebookgo/grace process", "err", err)
		return
	}
	r.log.Info("graceful: serving; stopping the facebookgo/grace process we took over from", "pid", pid)
	if err := signalParent(pid, unix.SIGTERM); err != nil {
		r.log.Warn("graceful: could not stop the grace process", "pid", pid, "err", err)
	}
}

// killParent sends sig to pid if it is still this process's parent. A
// parent that exits between the check and the signal may have its PID taken
// by another process; where it can, signalParent holds the parent by a pidfd
// to rule that out.
func killParent(pid int, sig unix.Signal) error {
	if ppid := os.Getppid(); ppid != pid {
		return fmt.Errorf("graceful: process %d is no longer the parent (now %d)", pid, ppid)
	}
	return unix.Kill(pid, sig)
}

// servesHanded reports whether one of the run's listeners is one handed
// over at start-up, rather than one bound by this process.
func (r *runner) servesHanded() bool {
	r.inh.mu.Lock()
	defer r.inh.mu.Unlock()
	for _, l := range r.listeners() {
		for _, il := range r.inh.lns {
			if il.handed && il.l == l {
				return true
			}
		}
	}
	return false
}

// graceModule is the module a facebookgo/grace program is built with.
const graceModule = "github.com/facebookgo/grace"

// isGraceProcess returns nil if the executable of process pid is a Go
// program built with the facebookgo/grace module, and why not otherwise.
// The executable is read through /proc, so a binary replaced on disk since
// the process started is still the one it runs; where there is no
// /proc/PID/exe (systems other than Linux), that fails, and the process is
// not proven to be one.
func isGraceProcess(pid int) error {
	info, err := buildinfo.ReadFile("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		return fmt.Errorf("graceful: process %d: %w", pid, err)
	}
	if info.Main.Path == graceModule {
		return nil
	}
	for _, m := range info.Deps {
		if m.Path == graceModule {
			return nil
		}
	}
	return fmt.Errorf("graceful: process %d (%s) is not built with %s", pid, info.Path, graceModule)
}
