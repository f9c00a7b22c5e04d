//go:build unix

package graceful

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// startDir is the working directory the program started in, against which
// a relative os.Args[0] is resolved.
var startDir, _ = os.Getwd()

// successor is a process started to take over, from its start until it is
// ready or has failed. The hand-over protocol on the control socket pair:
// the successor writes "ready <pid>\n" once its listeners are open and its
// signal handlers installed; the predecessor answers "go\n" once it has
// written the pidfile, and only then does the successor accept. A successor
// killed before "go" has accepted nothing, so killing it loses nothing.
type successor struct {
	cmd    *exec.Cmd
	ctrl   *os.File
	result chan error    // one value: nil when ready, else why it failed
	exited chan struct{} // closed once the process is reaped
	copied chan struct{} // closed once its captured stderr reached EOF
	tail   *tail
	err    error // the process's exit, valid once exited is closed
}

func (s *successor) pid() int { return s.cmd.Process.Pid }

// startSuccessor starts a new process of the program's executable with the
// same arguments, environment and working directory, and the listeners.
func (r *runner) startSuccessor() (*successor, error) {
	exe, err := executable()
	if err != nil {
		return nil, fmt.Errorf("graceful: restart: %w", err)
	}
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
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, sv := range r.served {
		fl, ok := sv.l.(interface{ File() (*os.File, error) })
		if !ok {
			ours.Close()
			errR.Close()
			return nil, fmt.Errorf("graceful: restart: listener %s of type %T cannot be passed on", sv.l.Addr(), sv.l)
		}
		f, err := fl.File()
		if err != nil {
			ours.Close()
			errR.Close()
			return nil, fmt.Errorf("graceful: restart: listener %s: %w", sv.l.Addr(), err)
		}
		files = append(files, f)
		desc.Listeners = append(desc.Listeners, inheritedLn{FD: 3 + len(files) - 1, Network: sv.key.network, Addr: sv.key.addr})
	}
	desc.Ctrl = 3 + len(files)
	desc.Stderr = desc.Ctrl + 1

	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(environWithout(envInherit), envInherit+"="+desc.encode())
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, errW
	cmd.ExtraFiles = append(append([]*os.File{}, files...), theirs, os.Stderr)
	if err := cmd.Start(); err != nil {
		ours.Close()
		errR.Close()
		return nil, fmt.Errorf("graceful: restart: start %s: %w", exe, err)
	}
	s := &successor{
		cmd:    cmd,
		ctrl:   ours,
		result: make(chan error, 1),
		exited: make(chan struct{}),
		copied: make(chan struct{}),
		tail:   &tail{},
	}
	r.log.Info("graceful: successor started", "successor", s.pid(), "exe", exe)
	go func() {
		s.err = cmd.Wait()
		close(s.exited)
	}()
	go s.copyStderr(errR)
	go s.watch(durationOr(r.s.StartTimeout, DefaultStartTimeout))
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
		line, err := bufio.NewReader(s.ctrl).ReadString('\n')
		if err == nil && !strings.HasPrefix(line, "ready ") {
			err = fmt.Errorf("unexpected message %q", line)
		}
		ready <- err
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
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
			s.result <- s.exitReport()
		case <-timer.C:
			s.kill()
			s.result <- fmt.Errorf("successor %d closed its control socket (%v) and was killed", s.pid(), err)
		}
	case <-s.exited:
		s.result <- s.exitReport()
	case <-timer.C:
		s.kill()
		s.result <- fmt.Errorf("successor %d was not ready within %s and was killed%s", s.pid(), timeout, s.output())
	}
}

func (s *successor) exitReport() error {
	return fmt.Errorf("successor %d exited during start-up: %v%s", s.pid(), s.err, s.output())
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
	_, err := s.ctrl.Write([]byte("go\n"))
	s.ctrl.Close()
	if err != nil {
		if r.s.PIDFile != "" {
			writePIDFile(r.s.PIDFile, os.Getpid())
		}
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

// confirmReady is the successor's side of the hand-over: report ready, wait
// for "go", then take over the predecessor's stderr.
func (r *runner) confirmReady() error {
	in := r.inh
	ctrl := in.ctrl
	in.ctrl = nil
	defer ctrl.Close()
	ppid := in.desc.PPID
	if _, err := fmt.Fprintf(ctrl, "ready %d\n", os.Getpid()); err != nil {
		return fmt.Errorf("graceful: telling predecessor %d we are ready: %w", ppid, err)
	}
	line, err := bufio.NewReader(ctrl).ReadString('\n')
	if line != "go\n" {
		if os.Getppid() == ppid {
			return fmt.Errorf("graceful: predecessor %d withdrew the hand-over (%v)", ppid, err)
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
	return nil
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

// executable returns the path to start a successor from: os.Args[0] as the
// program was started (so a binary replaced at that path is picked up),
// falling back to the running executable.
func executable() (string, error) {
	arg0 := os.Args[0]
	var path string
	switch {
	case strings.Contains(arg0, "/"):
		path = arg0
		if !filepath.IsAbs(path) {
			path = filepath.Join(startDir, path)
		}
	default:
		if p, err := exec.LookPath(arg0); err == nil {
			path = p
		}
	}
	if path == "" {
		p, err := os.Executable()
		if err != nil {
			return "", fmt.Errorf("finding the executable: %w", err)
		}
		path = p
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("executable: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("executable %s: not an executable file", path)
	}
	return path, nil
}

func environWithout(name string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, name+"=") {
			env = append(env, kv)
		}
	}
	return env
}
