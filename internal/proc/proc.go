//go:build linux

// Package proc builds, starts, signals and reaps the server processes that
// the restart tests and the benchmark run, and checks that none is left.
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// BecomeSubreaper makes the calling process adopt its orphaned descendants,
// so that a server's successors, whose parents exit at every restart, are
// reaped here and not left as zombies elsewhere.
func BecomeSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// Build compiles the package pkg (a path relative to the module root, dir)
// into out, with the extra go build flags given.
func Build(dir, pkg, out string, flags ...string) error {
	args := append([]string{"build", "-o", out}, flags...)
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Server is a server process started by Start, and its successors.
type Server struct {
	Bin     string
	Port    int
	PIDFile string
	Cmd     *exec.Cmd
	Output  *Buffer // what the first process and its successors wrote

	mu   sync.Mutex
	pids []int // every PID seen serving
}

// Buffer is a bytes.Buffer safe for concurrent use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Start starts bin with PORT and PIDFILE set (in dir) and the environment
// given, and waits until the pidfile names it and it answers on the port.
func Start(bin, dir string, env []string) (*Server, error) {
	return StartWrapped(nil, bin, dir, env)
}

// StartWrapped is Start with bin run through a wrapper command that execs
// it, such as taskset.
func StartWrapped(wrapper []string, bin, dir string, env []string) (*Server, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	return StartOn(port, wrapper, bin, dir, env)
}

// StartOn is StartWrapped on a given port.
func StartOn(port int, wrapper []string, bin, dir string, env []string) (*Server, error) {
	return StartFiles(port, wrapper, bin, dir, env, nil)
}

// StartFiles is StartOn with files passed as descriptors 3 and up, as a
// service manager's socket activation passes them.
func StartFiles(port int, wrapper []string, bin, dir string, env []string, files []*os.File) (*Server, error) {
	return startWith(port, wrapper, bin, dir, env, files, nil)
}

// StartInGroup is Start with the server leading a process group of its
// own, which its successors and workers join, so that a test can signal
// the whole group at once, as a service manager or a terminal's Ctrl-C
// does, without signalling itself.
func StartInGroup(bin, dir string, env []string) (*Server, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	return startWith(port, nil, bin, dir, env, nil, &syscall.SysProcAttr{Setpgid: true})
}

func startWith(port int, wrapper []string, bin, dir string, env []string, files []*os.File, attr *syscall.SysProcAttr) (*Server, error) {
	s := &Server{Bin: bin, Port: port, PIDFile: filepath.Join(dir, "server.pid"), Output: &Buffer{}}
	os.Remove(s.PIDFile)
	argv := append(append([]string{}, wrapper...), bin)
	s.Cmd = exec.Command(argv[0], argv[1:]...)
	s.Cmd.Env = append(os.Environ(), append([]string{"PORT=" + strconv.Itoa(port), "PIDFILE=" + s.PIDFile, "GORACE=atexit_sleep_ms=0"}, env...)...)
	s.Cmd.Stdout, s.Cmd.Stderr = s.Output, s.Output
	s.Cmd.ExtraFiles = files
	s.Cmd.SysProcAttr = attr
	if err := s.Cmd.Start(); err != nil {
		return nil, err
	}
	pid, err := s.WaitPIDFile(0, 20*time.Second)
	if err != nil {
		s.Cmd.Process.Kill()
		s.Cmd.Wait()
		return nil, fmt.Errorf("%w; output:\n%s", err, s.Output)
	}
	if pid != s.Cmd.Process.Pid {
		return nil, fmt.Errorf("pidfile names %d, started %d", pid, s.Cmd.Process.Pid)
	}
	return s, s.WaitListening(10 * time.Second)
}

// Addr is the server's TCP address.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// WaitListening waits until the port accepts a connection.
func (s *Server) WaitListening(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening after %s: %w", s.Addr(), timeout, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// PID reads the pidfile; 0 if it cannot.
func (s *Server) PID() int {
	b, err := os.ReadFile(s.PIDFile)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// WaitPIDFile waits until the pidfile names a live process other than old,
// and returns it.
func (s *Server) WaitPIDFile(old int, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for {
		if pid := s.PID(); pid != 0 && pid != old && Alive(pid) {
			s.mu.Lock()
			s.pids = append(s.pids, pid)
			s.mu.Unlock()
			return pid, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("pidfile %s still names %d after %s", s.PIDFile, s.PID(), timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Signal sends sig to the process the pidfile names and returns its PID.
func (s *Server) Signal(sig syscall.Signal) (int, error) {
	pid := s.PID()
	if pid == 0 {
		return 0, errors.New("no pid in pidfile")
	}
	return pid, syscall.Kill(pid, sig)
}

// Restart sends SIGUSR2 and waits until a new PID is in the pidfile.
func (s *Server) Restart(timeout time.Duration) (old, new int, err error) {
	old, err = s.Signal(syscall.SIGUSR2)
	if err != nil {
		return 0, 0, err
	}
	new, err = s.WaitPIDFile(old, timeout)
	return old, new, err
}

// Stop sends SIGTERM to the serving process and waits for every process
// this server ever ran to be gone.
func (s *Server) Stop(timeout time.Duration) error {
	if pid := s.PID(); pid != 0 && Alive(pid) {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	s.mu.Lock()
	pids := append([]int{s.Cmd.Process.Pid}, s.pids...)
	s.mu.Unlock()
	for _, pid := range pids {
		if err := WaitGone(pid, timeout); err != nil {
			return err
		}
	}
	return nil
}

// Dump asks every live process of this server for a goroutine dump
// (SIGQUIT makes a Go program print one and exit), for a failed test's log.
func (s *Server) Dump() {
	for _, pid := range Running(s.Bin) {
		syscall.Kill(pid, syscall.SIGQUIT)
		WaitGone(pid, 5*time.Second)
	}
}

// Kill ends, by PID, every process this server ran that is still there.
func (s *Server) Kill() {
	s.mu.Lock()
	pids := append([]int{s.Cmd.Process.Pid}, s.pids...)
	s.mu.Unlock()
	for _, pid := range pids {
		if Alive(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		WaitGone(pid, 5*time.Second)
	}
	for _, pid := range Running(s.Bin) {
		syscall.Kill(pid, syscall.SIGKILL)
		WaitGone(pid, 5*time.Second)
	}
}

// Alive reports whether pid is a process that has not exited (a zombie
// counts as exited).
func Alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// WaitGone waits until pid has exited, reaping it if it is a child of this
// process.
func WaitGone(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		if got == pid || (err != nil && !Alive(pid)) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d still running after %s", pid, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Running lists the live processes whose executable is bin.
func Running(bin string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink("/proc/" + e.Name() + "/exe"); err == nil && exe == bin && Alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Zombies lists the zombie children of this process.
func Zombies() []int {
	ents, _ := os.ReadDir("/proc")
	me := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 2 && f[0] == "Z" && f[1] == strconv.Itoa(me) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ReapZombies reaps the zombie children of this process, such as the
// workers of a master that a failed test killed, adopted here as their
// subreaper.
func ReapZombies() {
	for _, pid := range Zombies() {
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	}
}

// RSS returns pid's resident memory in bytes.
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// CPUTime returns the CPU time pid has used, user and system, in all its
// threads: time stolen by a hypervisor is not in it. (Linux counts it in
// ticks of 1/100 s.)
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("malformed stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("malformed stat")
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// FDCount returns how many descriptors pid holds.
func FDCount(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}
