//go:build unix

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gograceful/graceful"
)

// With only --pidfile, gracectl learns what the server does from the state
// file the server keeps beside its pidfile (graceful.StatePath): the
// control socket, the mode, and each restart's start and outcome, written
// by the process that runs the restart and, after a hot restart, by the
// successor once it serves.

// stateOf returns the state file if it was written by pid, the process the
// pidfile names; nil if there is none, or if it is another's (a server of
// a release that keeps none, whose predecessor's file was left behind).
func (c *ctl) stateOf(pid int) *graceful.State {
	st, err := graceful.ReadState(c.pidfile)
	if err != nil || st.PID != pid {
		return nil
	}
	return st
}

// ours reports whether lr is the restart of kind that the signal led to:
// one begun after the state before it was read, or the one then under
// way, which the signal joined.
func ours(lr *graceful.RestartStatus, kind string, before *graceful.State) bool {
	if lr == nil || lr.Kind != kind {
		return false
	}
	b := before.LastRestart
	if b == nil || !lr.Started.Equal(b.Started) {
		return true
	}
	return b.Finished.IsZero()
}

// busy refuses, before anything is sent, a restart of one kind while one of
// the other kind is under way: the server would ignore the signal.
func busy(cmd string, pid int, before *graceful.State) error {
	if before == nil || before.LastRestart == nil || !before.LastRestart.Finished.IsZero() {
		return nil
	}
	kind := map[string]string{"restart": "hot", "phased-restart": "phased"}[cmd]
	if kind == "" || kind == before.LastRestart.Kind {
		return nil
	}
	return failure{fmt.Errorf("%s: pid %d is in a %s restart begun at %s; nothing sent: try again once it is over",
		cmd, pid, before.LastRestart.Kind, before.LastRestart.Started.Format(time.RFC3339))}
}

// waitHot waits for the outcome of the hot restart of pid: the restart
// failed (pid wrote why), or a successor took over and rewrote the state
// file once it served.
func (c *ctl) waitHot(pid int, before *graceful.State, deadline time.Time) error {
	succ := -1 // a successor pid started, once looked for; 0: none
	for time.Now().Before(deadline) {
		st, err := graceful.ReadState(c.pidfile)
		if err == nil {
			lr := st.LastRestart
			done := ours(lr, "hot", before) && !lr.Finished.IsZero()
			switch {
			case st.PID == pid && done && lr.Error != "":
				return failure{fmt.Errorf("restart failed: %s", lr.Error)}
			case st.PID != pid && done && lr.Error == "" && alive(st.PID):
				fmt.Fprintf(c.out, "restart: done; pid %d took over from pid %d (took %s)\n", st.PID, pid, lr.Finished.Sub(lr.Started).Round(time.Millisecond))
				return nil
			}
		}
		if !alive(pid) {
			// A successor of a release that keeps no state file says
			// nothing: the pidfile names it, and pid has drained.
			if np, _, err := c.readPID(); err == nil && np != pid {
				fmt.Fprintf(c.out, "restart: done; pid %d took over from pid %d\n", np, pid)
				return nil
			}
			// pid died during the restart: a successor it started serves
			// alone once ready, and says so then.
			if succ < 0 {
				succ = startedBy(pid)
			}
			if succ == 0 || !alive(succ) {
				return failure{fmt.Errorf("restart: pid %d exited and no process took over", pid)}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return failure{fmt.Errorf("restart: no outcome within %s; see the server's log", c.timeout)}
}

// waitPhased waits until the master, pid, records the outcome of the
// phased restart.
func (c *ctl) waitPhased(pid int, before *graceful.State, deadline time.Time) error {
	for time.Now().Before(deadline) {
		if st, err := graceful.ReadState(c.pidfile); err == nil && st.PID == pid {
			if lr := st.LastRestart; ours(lr, "phased", before) && !lr.Finished.IsZero() {
				if lr.Error != "" {
					return failure{fmt.Errorf("phased-restart failed: %s", lr.Error)}
				}
				fmt.Fprintf(c.out, "phased-restart: done; every worker of pid %d replaced (took %s)\n", pid, lr.Finished.Sub(lr.Started).Round(time.Millisecond))
				return nil
			}
		}
		if !alive(pid) {
			return failure{fmt.Errorf("phased-restart: pid %d exited before the phased restart was over", pid)}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return failure{fmt.Errorf("phased-restart: no outcome within %s; see the server's log", c.timeout)}
}

// statusViaState answers status and stats with only a pidfile: through
// the control socket the state file names, or else with what the state
// file records, saying what only the control socket could tell.
func (c *ctl) statusViaState(cmd string) error {
	pid, _, err := c.readPID()
	if err != nil {
		return err
	}
	st, err := graceful.ReadState(c.pidfile)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: pid %d keeps no state file %s (a server of an older release): pass --control with its control socket", cmd, pid, graceful.StatePath(c.pidfile))
	}
	if err != nil {
		return err
	}
	if st.PID != pid && !alive(st.PID) {
		// A hot restart's successor rewrites the file a moment after the
		// pidfile names it; a file whose writer is gone is left behind.
		return fmt.Errorf("%s: the state file %s was written by pid %d, which is not running (the pidfile names pid %d): pass --control with its control socket", cmd, graceful.StatePath(c.pidfile), st.PID, pid)
	}
	if st.Control != "" {
		c.control = st.Control
		return c.viaControl(cmd)
	}
	const missing = "no control socket: the state, listeners, requests in flight and served, and workers are known only through it (set the Server's Control field)"
	if cmd == "stats" || c.json {
		fmt.Fprintln(os.Stderr, "gracectl: "+missing+"; this is the state file "+graceful.StatePath(c.pidfile))
		enc := json.NewEncoder(c.out)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "mode\t%s\n", st.Mode)
	fmt.Fprintf(tw, "pid\t%d (up %s)\n", st.PID, time.Since(st.Started).Round(time.Second))
	fmt.Fprintf(tw, "restarts\t%d\n", st.Restarts)
	if lr := st.LastRestart; lr != nil {
		fmt.Fprintf(tw, "last restart\t%s\n", restartLine(lr))
	}
	fmt.Fprintf(tw, "control\t%s\n", missing)
	return tw.Flush()
}

// restartLine describes a restart and its outcome.
func restartLine(lr *graceful.RestartStatus) string {
	outcome := "under way"
	if !lr.Finished.IsZero() {
		outcome = "ok"
		if lr.Error != "" {
			outcome = "failed: " + lr.Error
		}
		outcome += fmt.Sprintf(" (took %s)", lr.Finished.Sub(lr.Started).Round(time.Millisecond))
	}
	return fmt.Sprintf("%s at %s: %s", lr.Kind, lr.Started.Format(time.RFC3339), outcome)
}

// startedBy returns a successor that pid started, which has not yet taken
// over, or 0 if there is none: a process whose GRACEFUL_INHERIT names pid
// as its parent and is not a worker's. Where /proc cannot tell, 0.
func startedBy(pid int) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil || n == pid {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		for _, kv := range strings.Split(string(b), "\x00") {
			v, ok := strings.CutPrefix(kv, "GRACEFUL_INHERIT=")
			if !ok {
				continue
			}
			q, err := url.ParseQuery(v)
			if err == nil && q.Get("ppid") == strconv.Itoa(pid) && !q.Has("w") && alive(n) {
				return n
			}
		}
	}
	return 0
}
