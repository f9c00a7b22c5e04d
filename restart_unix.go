//go:build unix

package graceful

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// successor is a process this one started, a successor taking over or a
// worker of this master, from its start until it is ready or has failed. The hand-over protocol on the control socket pair:
// the successor writes "ready <pid>\n" once its listeners are open and its
// signal handlers installed; the predecessor answers "go\n" once it has
// written the pidfile, and only then does the successor accept. A successor
// killed before "go" has accepted nothing, so killing it loses nothing.
type successor struct {
	cmd    *exec.Cmd
	ctrl   *os.File
	br     *bufio.Reader // reads ctrl
	rel    release       // what it was started from
	role   string        // "successor" or "worker", for messages
	result chan error    // one value: nil when ready, else why it failed
	exited chan struct{} // closed once the process is reaped
	copied chan struct{} // closed once its captured stderr reached EOF
	tail   *tail
	err    error // the process's exit, valid once exited is closed
}

func (s *successor) pid() int { return s.cmd.Process.Pid }

func (s *successor) exe() string { return s.rel.exe }

// spawnSpec says what process to start.
type spawnSpec struct {
	rel     release
	timeout time.Duration // to become ready
	worker  *inheritDesc  // worker fields, for a worker of this master
}

// startSuccessor starts a new process of the program to take over from
// this one: a hot restart.
func (r *runner) startSuccessor() (*successor, error) {
	rel, err := r.s.resolveRelease(r.exeRel, false)
	if err != nil {
		return nil, fmt.Errorf("graceful: restart: %w", err)
	}
	return r.spawn(spawnSpec{rel: rel, timeout: durationOr(r.s.StartTimeout, DefaultStartTimeout)})
}

// spawn starts a new process of the program with the same arguments and
// environment, and the listeners.
func (r *runner) spawn(sp spawnSpec) (*successor, error) {
	pair, err := socketpair()
	if err != nil {
		return nil, fmt.Errorf("graceful: restart: socketpair: %w", err)
	}
	ours := os.NewFile(uintptr(pair[0]), "graceful-ctrl")
	theirs := os.NewFile(uintptr(pair[1]), "graceful-ctrl")
	defer theirs.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("graceful: restart: pipe: %w", err)
	}
	defer errW.Close()

	desc := inheritDesc{PPID: os.Getpid()}
	role := "successor"
	// A worker never speaks to the service manager; a successor does, and
	// its watchdog is its own.
	drop := []string{envInherit, "WATCHDOG_PID"}
	if sp.worker != nil {
		desc.Worker, desc.WorkerID, desc.Gen, desc.Heartbeat = true, sp.worker.WorkerID, sp.worker.Gen, sp.worker.Heartbeat
		role = "worker"
		drop = append(drop, "NOTIFY_SOCKET", "WATCHDOG_USEC")
	} else if r.inh != nil && r.inh.desc != nil {
		desc.Restarts = r.inh.desc.Restarts + 1
	} else {
		desc.Restarts = 1
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	fail := func(err error) (*successor, error) {
		ours.Close()
		errR.Close()
		return nil, fmt.Errorf("graceful: restart: %w", err)
	}
	pass := func(l net.Listener, key lnKey) error {
		f, err := dupListener(l)
		if err != nil {
			return fmt.Errorf("listener %s: %w", l.Addr(), err)
		}
		files = append(files, f)
		desc.Listeners = append(desc.Listeners, inheritedLn{FD: 3 + len(files) - 1, Network: key.network, Addr: key.addr})
		return nil
	}
	for _, sv := range r.served {
		if err := pass(sv.l, sv.key); err != nil {
			return fail(err)
		}
	}
	if r.ctl != nil && sp.worker == nil {
		if err := pass(r.ctl.l, r.ctl.key); err != nil {
			return fail(err)
		}
	}
	desc.Ctrl = 3 + len(files)
	desc.Stderr = desc.Ctrl + 1

	cmd := exec.Command(sp.rel.exe, os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	add := []string{envInherit + "=" + desc.encode()}
	if sp.rel.dir != "" {
		cmd.Dir = sp.rel.dir
		drop, add = append(drop, "PWD"), append(add, "PWD="+sp.rel.dir)
	}
	cmd.Env = append(environWithout(drop...), add...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, errW
	cmd.ExtraFiles = append(append([]*os.File{}, files...), theirs, r.realStderr())
	if err := cmd.Start(); err != nil {
		return fail(fmt.Errorf("start %s: %w", sp.rel.exe, err))
	}
	s := &successor{
		cmd:    cmd,
		ctrl:   ours,
		br:     bufio.NewReader(ours),
		result: make(chan error, 1),
		exited: make(chan struct{}),
		copied: make(chan struct{}),
		tail:   &tail{},
		rel:    sp.rel,
		role:   role,
	}
	go func() {
		s.err = cmd.Wait()
		close(s.exited)
	}()
	go s.copyStderr(errR)
	go s.watch(sp.timeout)
	return s, nil
}

// copyStderr passes on what the successor writes to stderr while it starts,
// keeping the last lines for an error report, until the successor takes
// over the real stderr.
func (s *successor) copyStderr(r *os.File) {
	defer close(s.copied)
	defer r.Close()
	buf := make([]byte, 16<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			os.Stderr.Write(buf[:n])
			s.tail.Write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// watch sends the outcome of the start to s.result.
func (s *successor) watch(timeout time.Duration) {
	ready := make(chan error, 1)
	go func() {
		line, err := s.br.ReadString('\n')
		if err == nil && !strings.HasPrefix(line, "ready ") {
			err = fmt.Errorf("unexpected message %q", line)
		}
		ready <- err
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var fail error
	defer func() {
		if fail != nil {
			s.ctrl.Close()
			s.result <- fail
		}
	}()
	select {
	case err := <-ready:
		if err == nil {
			s.result <- nil
			return
		}
		// The control socket closed without "ready": the process is
		// exiting, or has closed it and hangs.
		select {
		case <-s.exited:
			fail = s.exitReport()
		case <-timer.C:
			s.kill()
			fail = fmt.Errorf("%s %d closed its control socket (%v) and was killed", s.role, s.pid(), err)
		}
	case <-s.exited:
		fail = s.exitReport()
	case <-timer.C:
		s.kill()
		fail = fmt.Errorf("%s %d was not ready within %s and was killed%s", s.role, s.pid(), timeout, s.output())
	}
}

func (s *successor) exitReport() error {
	return fmt.Errorf("%s %d exited during start-up: %v%s", s.role, s.pid(), s.err, s.output())
}

// output returns the last lines the successor wrote to stderr, waiting a
// moment for the copy to catch up.
func (s *successor) output() string {
	select {
	case <-s.copied:
	case <-time.After(500 * time.Millisecond):
	}
	if t := s.tail.last(5); t != "" {
		return "; last output: " + t
	}
	return ""
}

func (s *successor) kill() {
	s.cmd.Process.Kill()
	<-s.exited
}

// abort kills a successor that has not been told to go.
func (s *successor) abort() {
	s.ctrl.Close()
	s.kill()
}

// handOver writes the pidfile for the successor and tells it to go.
func (r *runner) handOver(s *successor) error {
	if r.s.PIDFile != "" {
		if err := writePIDFile(r.s.PIDFile, s.pid()); err != nil {
			s.abort()
			return fmt.Errorf("graceful: restart: %w", err)
		}
	}
	r.notify.mainPID(s.pid())
	_, err := s.ctrl.Write([]byte("go\n"))
	s.ctrl.Close()
	if err != nil {
		if r.s.PIDFile != "" {
			writePIDFile(r.s.PIDFile, os.Getpid())
		}
		r.notify.mainPID(os.Getpid())
		s.kill()
		return fmt.Errorf("graceful: restart: successor %d went away before the hand-over: %w%s", s.pid(), err, s.output())
	}
	r.log.Info("graceful: successor ready", "successor", s.pid())
	return nil
}

// release waits, briefly, for the successor's captured stderr to be passed
// on in full before this process exits.
func (s *successor) release() {
	select {
	case <-s.copied:
	case <-time.After(time.Second):
	}
}

// confirmReady is the single-mode successor's side of the hand-over.
func (r *runner) confirmReady() error {
	ctrl, _, err := r.handshake()
	if ctrl != nil {
		ctrl.Close()
	}
	return err
}

// handshake reports ready to the process that started this one, waits for
// "go", then takes over the real stderr. It returns the control socket and
// its reader, for a worker to keep.
func (r *runner) handshake() (*os.File, *bufio.Reader, error) {
	in := r.inh
	ctrl := in.ctrl
	in.ctrl = nil
	ppid := in.desc.PPID
	if _, err := fmt.Fprintf(ctrl, "ready %d\n", os.Getpid()); err != nil {
		ctrl.Close()
		return nil, nil, fmt.Errorf("graceful: telling process %d we are ready: %w", ppid, err)
	}
	br := bufio.NewReader(ctrl)
	line, err := br.ReadString('\n')
	if line != "go\n" {
		if os.Getppid() == ppid || in.desc.Worker {
			ctrl.Close()
			return nil, nil, fmt.Errorf("graceful: process %d withdrew the hand-over (%v)", ppid, err)
		}
		// The predecessor died mid-hand-over: we hold the sockets now.
		r.log.Warn("graceful: predecessor died during the hand-over; serving", "predecessor", ppid)
	}
	if in.errfd != nil {
		if err := dup2(int(in.errfd.Fd()), 2); err != nil {
			r.log.Warn("graceful: could not take over stderr", "err", err)
		}
		in.errfd.Close()
		in.errfd = nil
	}
	return ctrl, br, nil
}

// realStderr is the stderr a new process should end up with: this
// process's, or, before this process's own hand-over, the one it will take
// over then (its fd 2 is still a pipe to its predecessor, which goes away).
func (r *runner) realStderr() *os.File {
	if r.inh != nil && r.inh.errfd != nil {
		return r.inh.errfd
	}
	return os.Stderr
}

// tell sends a line to the process on the other end of the control socket.
func (s *successor) tell(msg string) error {
	_, err := s.ctrl.Write([]byte(msg + "\n"))
	return err
}

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
	return os.NewFile(uintptr(dup), l.Addr().String()), nil
}

// socketpair returns a connected pair of Unix stream sockets, both
// close-on-exec.
func socketpair() ([2]int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.CloseOnExec(pair[0])
		unix.CloseOnExec(pair[1])
	}
	return pair, err
}

func environWithout(names ...string) []string {
	var env []string
next:
	for _, kv := range os.Environ() {
		for _, name := range names {
			if strings.HasPrefix(kv, name+"=") {
				continue next
			}
		}
		env = append(env, kv)
	}
	return env
}
