package graceful

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A hot restart, both sides. The old process starts a successor from the
// program found now (spawn), passing it the listening sockets and one end
// of a socket pair; the successor opens its listeners from them, installs
// its signal handlers and writes "ready"; the old process writes the
// pidfile, says MAINPID to the service manager and answers "go"; only then
// does the successor accept, and the old process drains. A successor that
// exits, or is not ready within StartTimeout, is killed before "go": it has
// accepted nothing, so nothing is lost, and the old process serves on.
//
// hotRestart is the old side's record of one restart under way: the
// successor starting and the Restart calls waiting on it. It belongs to the
// loop goroutine of its process, single mode's or a master's.
type hotRestart struct {
	r       *runner
	succ    *successor   // nil when no restart is under way
	told    bool         // succ was told to go: its next outcome says whether it serves
	waiters []chan error // Restart calls waiting on succ
	stopped *successor   // one told to go, then asked by abort to stop
	held    string       // a stop signal held until succ, told to go, says whether it serves
}

// hold keeps a stop signal that arrived while the successor, told to go,
// has not yet said whether it serves, and reports whether it did. A
// signal sent to the whole process group (Ctrl-C, systemd's KillMode)
// reaches the successor too: stopping it as well, as abort does, would
// count as a second stop signal there and cut its drain. So the outcome
// decides: if the successor serves, this process retires, as on any stop
// signal to a retiring process; if not, it stops as asked. A second stop
// signal is not held.
func (h *hotRestart) hold(sig string) bool {
	if h.succ == nil || !h.told || h.held != "" {
		return false
	}
	h.held = sig
	h.r.log.Warn("graceful: stop signal during the hand-over: waiting for the successor's word", "signal", sig, "successor", h.succ.pid())
	return true
}

// heldSignal returns the stop signal held, once the restart has an outcome.
func (h *hotRestart) heldSignal() string {
	if h.succ != nil {
		return ""
	}
	sig := h.held
	h.held = ""
	return sig
}

// begin starts a successor unless one is already starting. done, if not
// nil, receives the outcome.
func (h *hotRestart) begin(by string, done chan error) {
	log := h.r.log
	if h.succ != nil {
		log.Warn("graceful: restart ignored: a restart is already in progress", "by", by, "successor", h.succ.pid())
		answer(done, ErrRestartInProgress)
		return
	}
	log.Info("graceful: restart requested", "by", by)
	h.r.began("hot")
	if os.Getpid() == 1 {
		// The successor would outlive us, but not for long: when PID 1
		// exits, the kernel kills every process of its PID namespace.
		err := errors.New("graceful: restart refused: this process is PID 1 (a container's init), and its exit after the hand-over would end the container; run with Workers and use a phased restart (SIGUSR1), which keeps the master")
		h.failed(err)
		answer(done, err)
		return
	}
	h.r.notify.reloading()
	succ, err := h.r.startSuccessor()
	if err != nil {
		h.failed(err)
		answer(done, err)
		return
	}
	log.Info("graceful: successor started", "successor", succ.pid(), "exe", succ.exe())
	h.succ = succ
	if done != nil {
		h.waiters = append(h.waiters, done)
	}
}

// result is the channel on which the starting successor's outcome
// arrives; nil, which blocks for ever in a select, when none is starting.
func (h *hotRestart) result() <-chan error {
	if h.succ == nil {
		return nil
	}
	return h.succ.result
}

// settle takes an outcome of the start. The first says whether the
// successor became ready: if so, it is told to go, and this process accepts
// on until the second says that the successor serves. settle then returns
// it, leaving the Restart calls waiting for the caller to answer. On a
// failure it reports why to them and returns nil, and this process serves
// on.
func (h *hotRestart) settle(err error) *successor {
	succ, told := h.succ, h.told
	if err == nil && !told {
		if err = h.r.handOver(succ); err == nil {
			h.told = true
			go succ.confirm()
			return nil
		}
	}
	h.succ, h.told = nil, false
	if err != nil {
		succ.ho.close()
		if told {
			h.r.takeBack()
		}
		h.failed(err)
		h.answer(err)
		return nil
	}
	h.r.log.Info("graceful: successor serving", "successor", succ.pid())
	h.r.ended(nil)
	h.r.successor.Store(int64(succ.pid()))
	return succ
}

// failed reports a restart that failed: this process serves on.
func (h *hotRestart) failed(err error) {
	h.r.log.Error("graceful: restart failed; still serving", "err", err)
	h.r.ended(err)
	h.r.notify.ready("restart failed: " + err.Error())
}

// abort ends a successor that is starting, if any. One not yet told to go
// has accepted nothing and is killed. One told to go may be accepting
// already, and killing it would cut the requests it took: it is asked to
// stop, as this process is, and drains them; reap waits for it.
func (h *hotRestart) abort(why string) {
	if h.succ == nil {
		return
	}
	if h.told {
		h.r.takeBack()
		h.succ.signal(syscall.SIGTERM)
		h.stopped = h.succ
		h.r.log.Warn("graceful: restart abandoned; the successor, told to go, may serve already: asked to stop and drain", "successor", h.succ.pid(), "reason", why)
	} else {
		h.succ.abort()
		h.r.log.Warn("graceful: restart abandoned", "successor", h.succ.pid(), "reason", why)
	}
	err := fmt.Errorf("graceful: restart abandoned: %s", why)
	h.r.ended(err)
	h.answer(err)
	h.succ, h.told, h.held = nil, false, ""
}

// kill kills the successor abort asked to stop, if any: Close cuts its
// requests too, and does not wait for its drain.
func (h *hotRestart) kill() {
	if h.stopped != nil {
		h.stopped.signal(os.Kill)
	}
}

// reap waits, at the end of the run, for the successor abort asked to stop
// to exit, so that none outlives this process; one still running after
// limit is killed.
func (h *hotRestart) reap(limit time.Duration) {
	s := h.stopped
	if s == nil {
		return
	}
	h.stopped = nil
	select {
	case <-s.exited:
	case <-time.After(limit):
		h.r.log.Warn("graceful: the successor asked to stop still runs; killing it", "successor", s.pid(), "after", limit)
		s.kill()
	}
	s.release()
}

func (h *hotRestart) answer(err error) {
	for _, w := range h.waiters {
		w <- err
	}
	h.waiters = nil
}

// answer sends err to done, a buffered reply channel, if there is one.
func answer(done chan error, err error) {
	if done != nil {
		done <- err
	}
}

// successor is a process this one started, a successor taking over or a
// worker of this master, from its start until it exits.
type successor struct {
	pidN   int
	signal func(os.Signal) error // the process's, to kill it
	ctrl   *os.File
	br     *bufio.Reader // reads ctrl
	rel    release       // what it was started from
	role   string        // "successor" or "worker", for messages
	result chan error    // one value: nil when ready, else why it failed
	exited chan struct{} // closed once the process is reaped
	copied chan struct{} // closed once its captured stderr reached EOF
	tail   *tail
	err    error   // the process's exit, valid once exited is closed
	ho     *hoLink // the hand-off socket to it (handoff_proc.go); nil if none
}

func (s *successor) pid() int { return s.pidN }

func (s *successor) exe() string { return s.rel.exe }

// spawnSpec says what process to start.
type spawnSpec struct {
	rel     release
	timeout time.Duration // to become ready
	worker  *inheritDesc  // worker fields, for a worker of this master
}

// startSuccessor starts a new process of the program to take over from
// this one.
func (r *runner) startSuccessor() (*successor, error) {
	if !restartSupported {
		return nil, ErrNotSupported
	}
	rel, err := r.resolveRelease(false)
	if err != nil {
		return nil, fmt.Errorf("graceful: restart: %w", err)
	}
	succ, err := r.spawnFn(spawnSpec{rel: rel, timeout: durationOr(r.s.StartTimeout, DefaultStartTimeout)})
	if err != nil {
		return nil, fmt.Errorf("graceful: restart: %w", err)
	}
	return succ, nil
}

// spawnFn starts a child: r.spawn, or in tests of the state machines a
// fake child in this process.
func (r *runner) spawnFn(sp spawnSpec) (*successor, error) {
	if r.spawner != nil {
		return r.spawner(sp)
	}
	return r.spawn(sp)
}

// spawn starts a new process of the program with the same arguments and
// environment, and the listeners. Its errors carry no "graceful:" prefix:
// the caller says what was being started.
func (r *runner) spawn(sp spawnSpec) (*successor, error) {
	ours, theirs, err := socketpair()
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	defer theirs.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("pipe: %w", err)
	}
	defer errW.Close()

	desc := inheritDesc{PPID: os.Getpid(), Base: baseDir(), StartTimeout: int(min(sp.timeout/time.Millisecond, 1<<29))}
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
	r.carryCounts(&desc)
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	// The hand-off socket (handoff_proc.go), if connections may be
	// passed to this child: nil otherwise.
	hoOurs, hoTheirs := r.handOffPair(sp)
	defer hoTheirs.Close()
	fail := func(err error) (*successor, error) {
		ours.Close()
		errR.Close()
		hoOurs.Close()
		return nil, err
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
	if hoTheirs != nil {
		desc.HandOff = desc.Stderr + 1
	}

	cmd := exec.Command(sp.rel.exe, os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	add := []string{envInherit + "=" + desc.encode()}
	if sp.rel.dir != "" {
		drop, add = append(drop, "PWD"), append(add, "PWD="+sp.rel.dir)
	}
	cmd.Env = append(environWithout(drop...), add...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, errW
	cmd.ExtraFiles = append(append([]*os.File{}, files...), theirs, r.realStderr())
	if hoTheirs != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, hoTheirs)
	}
	if err := sp.rel.start(cmd); err != nil {
		return fail(fmt.Errorf("start %s: %w", sp.rel.exe, err))
	}
	s := &successor{
		pidN:   cmd.Process.Pid,
		signal: cmd.Process.Signal,
		ctrl:   ours,
		br:     bufio.NewReader(ours),
		result: make(chan error, 1),
		exited: make(chan struct{}),
		copied: make(chan struct{}),
		tail:   &tail{},
		rel:    sp.rel,
		role:   role,
	}
	s.ho = newHOLink(r, hoOurs, fmt.Sprint(role, " ", s.pidN))
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
		if err == nil {
			var m message
			if m, err = parseMessage(line); err == nil && m.kind != msgReady {
				err = fmt.Errorf("unexpected message %q", line)
			}
		}
		ready <- err
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var fail error
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
	s.ctrl.Close()
	s.ho.close()
	s.result <- fail
}

func (s *successor) exitReport() error {
	return fmt.Errorf("%s %d exited during start-up: %s%s", s.role, s.pid(), exitStatus(s.err), s.output())
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
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

// kill kills the process and waits for it to be reaped.
func (s *successor) kill() {
	s.signal(os.Kill)
	<-s.exited
}

// abort kills a successor that has not been told to go.
func (s *successor) abort() {
	s.ctrl.Close()
	s.ho.close()
	s.kill()
}

// tell sends a message to the process on the other end of the control
// socket. If it fails, the process is exiting; its exit is reported.
func (s *successor) tell(m msgKind) error {
	_, err := s.ctrl.Write([]byte(message{kind: m}.String() + "\n"))
	return err
}

// handOver writes the pidfile for the successor and tells it to go.
func (r *runner) handOver(s *successor) error {
	if r.pidFile != "" {
		if err := writePIDFile(r.pidFile, s.pid()); err != nil {
			s.abort()
			return fmt.Errorf("graceful: restart: %w", err)
		}
	}
	r.notify.mainPID(s.pid())
	if err := s.tell(msgGo); err != nil {
		r.takeBack()
		s.abort()
		return fmt.Errorf("graceful: restart: successor %d went away before the hand-over: %w%s", s.pid(), err, s.output())
	}
	r.log.Info("graceful: successor ready", "successor", s.pid())
	return nil
}

// takeBack names this process again as the one that serves, after a
// hand-over that failed.
func (r *runner) takeBack() {
	if r.pidFile != "" {
		writePIDFile(r.pidFile, os.Getpid())
	}
	r.notify.mainPID(os.Getpid())
}

// confirm waits for a successor told to go to say that it serves, and
// sends that outcome. One that dies first fails the restart: this process
// has not stopped accepting, so nothing is lost. A successor of an older
// release closes the socket without a word; that, or silence for a few
// seconds from one that lives, is taken to mean it serves.
func (s *successor) confirm() {
	said := make(chan bool, 1)
	go func() {
		line, err := s.br.ReadString('\n')
		m, perr := parseMessage(line)
		said <- err == nil && perr == nil && m.kind == msgServing
	}()
	var ok bool
	select {
	case ok = <-said:
	case <-time.After(5 * time.Second):
	}
	s.ctrl.Close()
	if !ok {
		select {
		case <-s.exited:
			s.result <- fmt.Errorf("graceful: restart: %s %d died after it was told to go, before it served: %s%s", s.role, s.pid(), exitStatus(s.err), s.output())
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
	s.result <- nil
}

// release waits, briefly, for the successor's captured stderr to be passed
// on in full before this process exits.
func (s *successor) release() {
	select {
	case <-s.copied:
	case <-time.After(time.Second):
	}
}

// startWatch is the state of watchStart: the duplicate of the control
// socket it watches, -1 once the hand-over has begun.
var startWatch = struct {
	sync.Mutex
	fd int
}{fd: -1}

// stopStartWatch ends the start watch, as the hand-over begins.
func stopStartWatch() {
	startWatch.Lock()
	defer startWatch.Unlock()
	if startWatch.fd >= 0 {
		closeFD(startWatch.fd)
		startWatch.fd = -1
	}
}

// handshake is the new side of the hand-over: it reports ready to the
// process that started this one, waits for "go", then takes over the real
// stderr. It returns the control socket and its reader, for a worker to
// keep. A successor whose predecessor died during the hand-over holds the
// sockets alone: it serves, and orphaned says so.
func (r *runner) handshake() (ctrl *os.File, br *bufio.Reader, orphaned bool, err error) {
	in := r.inh
	ctrl, in.ctrl = in.ctrl, nil
	ppid := in.desc.PPID
	stopStartWatch()
	_, err = ctrl.Write([]byte(message{kind: msgReady, pid: os.Getpid()}.String() + "\n"))
	br = bufio.NewReader(ctrl)
	if err == nil {
		var line string
		if line, err = br.ReadString('\n'); err == nil {
			if m, perr := parseMessage(line); perr != nil || m.kind != msgGo {
				err = fmt.Errorf("unexpected message %q", line)
			}
		}
	}
	if in.errfd != nil {
		if err := dup2(int(in.errfd.Fd()), 2); err != nil {
			r.log.Warn("graceful: could not take over stderr", "err", err)
		}
		in.errfd.Close()
		in.errfd = nil
	}
	unguardStderr()
	if err != nil {
		if in.desc.Worker || !parentDied(ppid) {
			ctrl.Close()
			return nil, nil, false, fmt.Errorf("graceful: process %d withdrew the hand-over (%v)", ppid, err)
		}
		r.log.Warn("graceful: the process that started this one died during the hand-over; serving on the sockets it passed", "predecessor", ppid)
		orphaned = true
	}
	return ctrl, br, orphaned, nil
}

// parentDied reports whether the process that started this one, ppid, has
// died: its end of the control socket closes before the kernel gives this
// process a new parent, so wait a moment for that.
func parentDied(ppid int) bool {
	for i := 0; i < 50; i++ {
		if os.Getppid() != ppid {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// watchStart runs, from package initialisation, in a process started as a
// successor or a worker, until its hand-over begins. Such a process must
// not outlive a start that failed: one not ready within the start timeout
// its parent gave it exits, as it would have been killed; a worker whose
// master died exits at once. ctrl is a duplicate of the control socket.
// It is called at package initialisation and goes on in a goroutine.
func watchStart(d *inheritDesc, ctrl int) {
	// Until the hand-over, stderr is a pipe to the parent: were it to die,
	// a write there must fail, not kill this process with SIGPIPE.
	guardStderr()
	startWatch.fd = ctrl
	go watch(d, ctrl)
}

func watch(d *inheritDesc, ctrl int) {
	deadline := time.Now().Add(time.Duration(d.StartTimeout) * time.Millisecond)
	for {
		startWatch.Lock()
		fd := startWatch.fd
		startWatch.Unlock()
		if fd < 0 {
			return
		}
		if d.StartTimeout > 0 && time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "graceful: not ready within the start timeout (%dms) that process %d gave; exiting\n", d.StartTimeout, d.PPID)
			os.Exit(1)
		}
		if !waitReadable(fd, 100*time.Millisecond) {
			continue
		}
		startWatch.Lock()
		gone := startWatch.fd >= 0 && peerClosed(fd)
		if gone && d.Worker {
			fmt.Fprintf(os.Stderr, "graceful: master %d went away before worker %d was ready; exiting\n", d.PPID, d.WorkerID)
			os.Exit(1)
		}
		if gone {
			// The pipe is broken: write to the real stderr from now.
			// (Under the lock: once the hand-over begins, d.Stderr is
			// closed and its number may be reused.)
			dup2(d.Stderr, 2)
		}
		startWatch.Unlock()
		// A successor whose predecessor died may still become ready and
		// serve: only the deadline ends it.
		time.Sleep(100 * time.Millisecond)
	}
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
