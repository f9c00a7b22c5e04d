package graceful

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// heldRelease is a release held open by descriptors on its directory and
// its executable, so that a process can be started from it, through
// /proc/self/fd, after both have been deleted.
type heldRelease struct {
	mu       sync.Mutex
	dir, exe int  // -1 once closed
	script   bool // the executable starts with "#!"
}

// holdRelease opens the release directory dir and the executable rel
// inside it. Without /proc, nothing can be started from a descriptor, and
// it holds nothing (nil): the release is started by path.
func holdRelease(dir, rel string) (*heldRelease, error) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		return nil, nil
	}
	d, err := openRetry(unix.AT_FDCWD, dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("holding %s open: %w", dir, err)
	}
	e, err := openRetry(d, rel, unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		unix.Close(d)
		return nil, fmt.Errorf("holding %s open: %w", rel, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(e, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mode&0o111 == 0 {
		unix.Close(d)
		unix.Close(e)
		if err == nil {
			err = fmt.Errorf("%s changed: not an executable file", rel)
		}
		return nil, fmt.Errorf("holding %s open: %w", rel, err)
	}
	h := &heldRelease{dir: d, exe: e}
	if f, err := os.Open("/proc/self/fd/" + strconv.Itoa(e)); err == nil {
		b := make([]byte, 2)
		n, _ := f.Read(b)
		h.script = string(b[:n]) == "#!"
		f.Close()
	}
	return h, nil
}

func openRetry(at int, path string, flags int) (int, error) {
	for {
		fd, err := unix.Openat(at, path, flags, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// use points cmd at the held directory and executable, through copies of
// the descriptors that done closes once cmd has started. Where that cannot
// be done safely, cmd is left to start by path.
//
// The child that os/exec forks changes to cmd.Dir before it moves the
// descriptors it passes on into place, so any descriptor number will do
// for the directory. The executable is opened at execve, after that
// shuffle, which writes over descriptors 0 to 2+len(ExtraFiles) and a few
// above the highest descriptor passed: its copy is made above all of them.
func (h *heldRelease) use(cmd *exec.Cmd) (done func()) {
	nothing := func() {}
	if h == nil {
		return nothing
	}
	low, ok := aboveChildFDs(cmd)
	h.mu.Lock()
	defer h.mu.Unlock()
	if !ok || h.exe < 0 {
		return nothing
	}
	dir, err := unix.FcntlInt(uintptr(h.dir), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nothing
	}
	// A script's interpreter opens the script by the path it is given,
	// after execve: for it, the copy stays open across execve (and is
	// then one descriptor the new process inherits and does not use).
	dup := unix.F_DUPFD_CLOEXEC
	if h.script {
		dup = unix.F_DUPFD
	}
	exe, err := unix.FcntlInt(uintptr(h.exe), dup, low)
	if err != nil {
		unix.Close(dir)
		return nothing
	}
	cmd.Dir = "/proc/self/fd/" + strconv.Itoa(dir)
	cmd.Path = "/proc/self/fd/" + strconv.Itoa(exe)
	return func() {
		unix.Close(dir)
		unix.Close(exe)
	}
}

// aboveChildFDs returns a descriptor number that the child os/exec forks
// for cmd leaves alone until execve: above both the descriptors it is
// given and those it moves the passed descriptors through on the way. It
// reports false if cmd's standard streams are not files, for which
// os/exec opens descriptors of its own.
func aboveChildFDs(cmd *exec.Cmd) (int, bool) {
	n := 3 + len(cmd.ExtraFiles)
	top := n
	for _, s := range []any{cmd.Stdin, cmd.Stdout, cmd.Stderr} {
		f, ok := s.(*os.File)
		if !ok || f == nil {
			return 0, false
		}
		top = max(top, int(f.Fd()))
	}
	for _, f := range cmd.ExtraFiles {
		if f != nil {
			top = max(top, int(f.Fd()))
		}
	}
	// One more for the child's error pipe, and a margin.
	return top + n + 8, true
}

// close closes what h holds; a nil h holds nothing.
func (h *heldRelease) close() {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.exe >= 0 {
		unix.Close(h.dir)
		unix.Close(h.exe)
		h.dir, h.exe = -1, -1
	}
}
