//go:build unix

// Command gracectl controls a server built with graceful: it shows its
// status and request counts, restarts it and waits for the outcome, stops
// it, and changes its number of workers.
//
//	gracectl --control /run/app/control.sock status
//	gracectl --control /run/app/control.sock stats --json
//	gracectl --control /run/app/control.sock restart          # hot restart; waits
//	gracectl --control /run/app/control.sock phased-restart   # workers one by one; waits
//	gracectl --control /run/app/control.sock stop
//	gracectl --control /run/app/control.sock add-worker
//	gracectl --control /run/app/control.sock remove-worker
//
// With --control it talks to the server's control socket (the Server's
// Control field). restart and phased-restart then wait until the restart
// has completed or failed, and exit 0 or 1 with the reason; --no-wait
// returns as soon as the server has taken the order, and --timeout bounds
// the wait.
//
// With only --pidfile it sends signals to the process the pidfile names
// (SIGUSR2, SIGUSR1, SIGTERM, SIGTTIN, SIGTTOU), and learns the rest from
// the state file the server keeps beside the pidfile (PIDFILE.state; see
// graceful.State). restart and phased-restart then wait, as with
// --control, until the state file records the outcome of the restart the
// signal began: exit 1 with the reason the server logged when it failed,
// 0 once a successor serves (restart) or every worker has been replaced
// (phased-restart). status and stats use the control socket the state
// file names; a server without one has only its state file to show, and
// gracectl says what it cannot know then. (A server of a release that
// keeps no state file: restart waits for the pidfile to name a new
// process, phased-restart does not wait, status refuses.)
//
// A pidfile left behind by a server that is gone may name a PID the system
// has since given to another process. Before it signals, gracectl checks
// that the process is a graceful server the pidfile was written for, and
// otherwise refuses (exit 2) and says which check failed. On Linux, from
// /proc: its executable links this module (its Go build information lists
// github.com/gograceful/graceful), it started no later than the pidfile
// was last written (a server writes its successor's PID after the
// successor started; a reused PID starts later), and it catches SIGUSR2.
// The check of the start needs the clock not to have been set forward
// since the pidfile was written. On other systems gracectl learns only the
// start, from ps(1), and checks only that; use --control there. It also
// learns, on Linux, whether the server is a cluster's master, which catches
// SIGTTIN: phased-restart, add-worker and remove-worker of a single-mode
// server exit 1 saying that single mode has no workers, and send nothing.
//
// Exit status: 0 on success, 1 when the server reports a failure or the
// wait times out, 2 on a usage error or when the server cannot be reached.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/gograceful/graceful"
)

const usage = `usage: gracectl (--control PATH | --pidfile PATH) [flags] COMMAND

commands:
  status            mode, PID, uptime, listeners, requests, workers
  stats             the same, as JSON
  restart           hot restart (SIGUSR2); waits for the outcome
  phased-restart    replace the workers one by one (SIGUSR1); waits
  stop              drain and exit (SIGTERM); waits
  add-worker        one worker more (SIGTTIN)
  remove-worker     one worker fewer (SIGTTOU)

flags:
`

type ctl struct {
	control string
	pidfile string
	timeout time.Duration
	noWait  bool
	json    bool
	out     io.Writer
}

// failure is an error the server reported, or a wait that timed out: exit 1.
type failure struct{ error }

func main() {
	c := &ctl{out: os.Stdout}
	fs := flag.NewFlagSet("gracectl", flag.ContinueOnError)
	fs.StringVar(&c.control, "control", "", "path of the server's control socket")
	fs.StringVar(&c.pidfile, "pidfile", "", "path of the server's pidfile (signals, and its state file)")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Minute, "how long to wait for the outcome")
	fs.BoolVar(&c.noWait, "no-wait", false, "return once the server has taken the order")
	fs.BoolVar(&c.json, "json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprint(os.Stderr, usage)
		fs.PrintDefaults()
	}
	// Flags may come before or after the command.
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	args := fs.Args()
	if len(args) == 0 {
		fs.Usage()
		os.Exit(2)
	}
	cmd := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "gracectl: unexpected argument %q\n", fs.Arg(0))
		os.Exit(2)
	}
	err := c.run(cmd)
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "gracectl: "+err.Error())
	var f failure
	if errors.As(err, &f) {
		os.Exit(1)
	}
	os.Exit(2)
}

func (c *ctl) run(cmd string) error {
	switch {
	case c.control != "":
		return c.viaControl(cmd)
	case c.pidfile != "":
		return c.viaSignals(cmd)
	default:
		return errors.New("say where the server is: --control PATH or --pidfile PATH")
	}
}

// viaControl runs cmd through the control socket.
func (c *ctl) viaControl(cmd string) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	client := c.client()
	switch cmd {
	case "status", "stats":
		st, err := c.status(ctx, client)
		if err != nil {
			return err
		}
		if cmd == "stats" || c.json {
			enc := json.NewEncoder(c.out)
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		}
		printStatus(c.out, st)
		return nil
	case "restart", "phased-restart", "stop":
		return c.order(ctx, client, cmd)
	case "add-worker":
		return c.order(ctx, client, "workers/add")
	case "remove-worker":
		return c.order(ctx, client, "workers/remove")
	}
	return fmt.Errorf("unknown command %q (see gracectl -h)", cmd)
}

func (c *ctl) client() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", c.control)
		},
		DisableKeepAlives: true,
	}}
}

// reachErr explains why the control socket could not be used.
func (c *ctl) reachErr(err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("no control socket at %s: is the server running, with Control set to this path?", c.control)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("nothing listens on control socket %s: the server that made it is gone (stale socket)", c.control)
	case errors.Is(err, os.ErrPermission):
		owner := ""
		if fi, serr := os.Stat(c.control); serr == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				owner = fmt.Sprintf(", owned by uid %d", st.Uid)
			}
		}
		return fmt.Errorf("may not open control socket %s: permission denied (it is mode 0600%s: run gracectl as the user the server runs as)", c.control, owner)
	case errors.Is(err, context.DeadlineExceeded):
		return failure{fmt.Errorf("no answer within %s", c.timeout)}
	}
	return fmt.Errorf("control socket %s: %w", c.control, err)
}

func (c *ctl) status(ctx context.Context, client *http.Client) (*graceful.Status, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://graceful/v1/status", nil)
	resp, err := client.Do(req)
	if err != nil {
		return nil, c.reachErr(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var rep graceful.ControlReply
		json.NewDecoder(resp.Body).Decode(&rep)
		return nil, failure{fmt.Errorf("status: %s", rep.Error)}
	}
	st := &graceful.Status{}
	if err := json.NewDecoder(resp.Body).Decode(st); err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	return st, nil
}

// order posts a command and reports its outcome.
func (c *ctl) order(ctx context.Context, client *http.Client, path string) error {
	url := "http://graceful/v1/" + path
	if c.noWait {
		url += "?wait=0"
	}
	req, _ := http.NewRequestWithContext(ctx, "POST", url, nil)
	resp, err := client.Do(req)
	if err != nil {
		return c.reachErr(err)
	}
	defer resp.Body.Close()
	var rep graceful.ControlReply
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return c.reachErr(err)
		}
		return fmt.Errorf("%s: unreadable answer (HTTP %d): %w", path, resp.StatusCode, err)
	}
	if !rep.OK {
		return failure{fmt.Errorf("%s failed: %s", path, rep.Error)}
	}
	switch {
	case c.noWait:
		fmt.Fprintf(c.out, "%s: ordered (pid %d)\n", path, rep.PID)
	case path == "restart":
		fmt.Fprintf(c.out, "restart: done; pid %d took over from pid %d\n", rep.Successor, rep.PID)
	case path == "stop":
		fmt.Fprintf(c.out, "stop: done; pid %d drained\n", rep.PID)
	default:
		// Tell what serves now.
		st, err := c.status(ctx, client)
		if err != nil {
			fmt.Fprintf(c.out, "%s: done\n", path)
			return nil
		}
		fmt.Fprintf(c.out, "%s: done; generation %d, %d workers\n", path, st.Generation, st.WorkersWanted)
	}
	return nil
}

func printStatus(w io.Writer, st *graceful.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "mode\t%s\n", st.Mode)
	fmt.Fprintf(tw, "pid\t%d (up %s)\n", st.PID, (time.Duration(st.UptimeSeconds * float64(time.Second))).Round(time.Second))
	fmt.Fprintf(tw, "state\t%s\n", st.State)
	fmt.Fprintf(tw, "restarts\t%d\n", st.Restarts)
	fmt.Fprintf(tw, "working dir\t%s\n", st.WorkingDir)
	if st.Mode == "cluster" {
		fmt.Fprintf(tw, "generation\t%d\n", st.Generation)
	}
	fmt.Fprintf(tw, "listeners\t%s\n", strings.Join(st.Listeners, " "))
	fmt.Fprintf(tw, "requests\t%d in flight, %d served\n", st.RequestsInFlight, st.RequestsTotal)
	for _, sv := range st.Services {
		// A master's services count nothing: their work is in the workers.
		if st.Mode == "cluster" {
			fmt.Fprintf(tw, "service %s\t%s\n", sv.Name, sv.Listener)
		} else {
			fmt.Fprintf(tw, "service %s\t%s, %d in flight, %d served\n", sv.Name, sv.Listener, sv.InFlight, sv.Total)
		}
	}
	if lr := st.LastRestart; lr != nil {
		fmt.Fprintf(tw, "last restart\t%s\n", restartLine(lr))
	}
	if st.Mode == "cluster" {
		fmt.Fprintf(tw, "workers\t%d wanted\n", st.WorkersWanted)
	}
	tw.Flush()
	if len(st.Workers) == 0 {
		return
	}
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  ID\tPID\tGEN\tSTATE\tCHECK-IN\tIN-FLIGHT\tSERVED\tDIR")
	for _, wk := range st.Workers {
		checkin := "-"
		if !wk.LastCheckin.IsZero() {
			checkin = time.Since(wk.LastCheckin).Round(time.Millisecond).String() + " ago"
		}
		fmt.Fprintf(tw, "  %d\t%d\t%d\t%s\t%s\t%d\t%d\t%s\n", wk.ID, wk.PID, wk.Generation, wk.State, checkin, wk.RequestsInFlight, wk.RequestsTotal, wk.WorkingDir)
	}
	tw.Flush()
}

// viaSignals runs cmd by signalling the process the pidfile names, and
// waits for the outcome by watching the state file beside the pidfile.
// status and stats use the control socket the state file names.
func (c *ctl) viaSignals(cmd string) error {
	type order struct {
		sig  syscall.Signal
		name string
	}
	orders := map[string]order{
		"restart": {syscall.SIGUSR2, "SIGUSR2"}, "phased-restart": {syscall.SIGUSR1, "SIGUSR1"},
		"stop": {syscall.SIGTERM, "SIGTERM"}, "add-worker": {syscall.SIGTTIN, "SIGTTIN"},
		"remove-worker": {syscall.SIGTTOU, "SIGTTOU"},
	}
	o, ok := orders[cmd]
	if !ok {
		if cmd == "status" || cmd == "stats" {
			return c.statusViaState(cmd)
		}
		return fmt.Errorf("unknown command %q (see gracectl -h)", cmd)
	}
	pid, mtime, err := c.readPID()
	if err != nil {
		return err
	}
	// Take hold of the process before checking it: where the system has
	// process handles (pidfds, Linux 5.3), a process that exits after the
	// checks cannot pass its PID on to another that gets the signal.
	p, err := os.FindProcess(pid)
	if err != nil {
		return fmt.Errorf("pid %d: %w", pid, err)
	}
	defer p.Release()
	info, err := verify(pid, c.pidfile, mtime)
	if err != nil {
		return err
	}
	// What the server recorded before the signal: the restart the signal
	// leads to is a later one (or one already under way, which it joins).
	before := c.stateOf(pid)
	if o.sig == syscall.SIGTTIN || o.sig == syscall.SIGTTOU || o.sig == syscall.SIGUSR1 {
		if info.singleMode() || before != nil && before.Mode == "single" {
			return failure{fmt.Errorf("%s: pid %d serves in single mode, and single mode has no workers; nothing sent", cmd, pid)}
		}
	}
	if err := busy(cmd, pid, before); err != nil {
		return err
	}
	sent := time.Now()
	if err := p.Signal(o.sig); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("%s to pid %d: it exited meanwhile: is the server running?", o.name, pid)
		}
		return fmt.Errorf("%s to pid %d: %w", o.name, pid, err)
	}
	deadline := time.Now().Add(c.timeout)
	switch {
	case c.noWait:
		fmt.Fprintf(c.out, "%s: sent %s to pid %d\n", cmd, o.name, pid)
	case cmd == "restart" && before != nil:
		return c.waitHot(pid, before, deadline)
	case cmd == "phased-restart" && before != nil:
		return c.waitPhased(pid, before, deadline)
	case cmd == "restart":
		// No state file of pid's: a server of an older release, or one
		// whose file was removed or damaged, which it rewrites as the
		// restart begins. Wait for the pidfile to name another process,
		// or for pid to record that the restart the signal began failed.
		for time.Now().Before(deadline) {
			if np, _, err := c.readPID(); err == nil && np != pid {
				fmt.Fprintf(c.out, "restart: done; pid %d took over from pid %d\n", np, pid)
				return nil
			}
			if st := c.stateOf(pid); st != nil {
				if lr := st.LastRestart; lr != nil && lr.Kind == "hot" && !lr.Started.Before(sent) && !lr.Finished.IsZero() && lr.Error != "" {
					return failure{fmt.Errorf("restart failed: %s", lr.Error)}
				}
			}
			if !alive(pid) {
				return failure{fmt.Errorf("restart: pid %d exited and no process took over", pid)}
			}
			time.Sleep(20 * time.Millisecond)
		}
		return failure{fmt.Errorf("restart: no new process took over within %s; see the server's log (gracectl found no state file %s written by pid %d, from which it would learn why)", c.timeout, graceful.StatePath(c.pidfile), pid)}
	case cmd == "stop":
		for time.Now().Before(deadline) {
			if !alive(pid) {
				fmt.Fprintf(c.out, "stop: done; pid %d exited\n", pid)
				return nil
			}
			time.Sleep(20 * time.Millisecond)
		}
		return failure{fmt.Errorf("stop: pid %d still running after %s", pid, c.timeout)}
	case cmd == "phased-restart":
		fmt.Fprintf(c.out, "%s: sent %s to pid %d (it keeps no state file %s: use --control to wait for the outcome)\n", cmd, o.name, pid, graceful.StatePath(c.pidfile))
	default:
		fmt.Fprintf(c.out, "%s: sent %s to pid %d (use --control to wait for the outcome)\n", cmd, o.name, pid)
	}
	return nil
}

// readPID reads the pidfile, checks that its process runs, and returns it
// with the time the pidfile was last written.
func (c *ctl) readPID() (int, time.Time, error) {
	// Content and time from one open file, the time taken after the
	// content: the time is that of the write of the PID read or later,
	// whether the pidfile is replaced by renaming a new one over it (as
	// graceful does) or rewritten in place.
	f, err := os.Open(c.pidfile)
	if errors.Is(err, os.ErrNotExist) {
		return 0, time.Time{}, fmt.Errorf("pidfile %s does not exist: is the server running?", c.pidfile)
	}
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("pidfile: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64))
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("pidfile: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("pidfile: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, time.Time{}, fmt.Errorf("pidfile %s does not hold a PID: %q", c.pidfile, strings.TrimSpace(string(b)))
	}
	if !alive(pid) {
		return 0, time.Time{}, fmt.Errorf("pidfile %s names pid %d, which is not running (stale pidfile)", c.pidfile, pid)
	}
	return pid, fi.ModTime(), nil
}

// alive reports whether pid runs (a zombie counts as gone).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true // no /proc: trust kill
	}
	if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) {
		return b[i+2] != 'Z'
	}
	return true
}
