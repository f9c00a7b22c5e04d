package graceful

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// The state file: a small JSON file beside the pidfile, for whoever knows
// the pidfile and not the control socket (a deploy script, gracectl
// --pidfile). The process that owns the restarts, the single-mode process
// or the master, writes it when it starts serving, at the start and at the
// end of each restart it runs, and a successor rewrites it when it takes
// over; it is removed with the pidfile at a final stop. A worker never
// writes it. It is replaced atomically, like the pidfile: a reader sees one
// whole version or the next.

// StatePath returns the path of the state file kept beside pidfile: the
// pidfile's path with ".state" appended.
func StatePath(pidfile string) string { return pidfile + ".state" }

// State is what a serving process records in the state file beside its
// pidfile (see [StatePath]) when PIDFile is set: enough for a program that
// knows only the pidfile to find the control socket and to learn the
// outcome of a restart. The JSON field names are part of the API.
type State struct {
	// PID is the process that wrote the file: the one that serves (in a
	// cluster, the master). During a hot restart the pidfile names the
	// successor a moment before the successor rewrites this file.
	PID int `json:"pid"`
	// Mode is "single" or "cluster".
	Mode string `json:"mode"`
	// Control is the absolute path of the control socket; empty when the
	// server has none.
	Control string `json:"control,omitempty"`
	// Started is when PID started.
	Started time.Time `json:"started"`
	// Restarts counts the hot restarts that led to PID.
	Restarts int `json:"restarts"`
	// LastRestart is the last restart PID began or, after a hot restart,
	// the one that made PID take over, marked finished once PID served.
	LastRestart *RestartStatus `json:"last_restart,omitempty"`
	// Updated is when the file was written.
	Updated time.Time `json:"updated"`
}

// ReadState reads the state file kept beside pidfile. Its error wraps
// [os.ErrNotExist] when there is none: the server has stopped, has no
// pidfile, or is of a release that keeps no state file.
func ReadState(pidfile string) (*State, error) {
	b, err := os.ReadFile(StatePath(pidfile))
	if err != nil {
		return nil, fmt.Errorf("graceful: state file: %w", err)
	}
	st := &State{}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("graceful: state file %s: %w", StatePath(pidfile), err)
	}
	return st, nil
}

// saveState rewrites the state file, with last as the last restart, in the
// process that owns the restarts. A failure is logged: serving goes on.
func (r *runner) saveState(last *RestartStatus) {
	if r.pidFile == "" || r.worker() {
		return
	}
	st := &State{
		PID:     os.Getpid(),
		Mode:    "single",
		Started: r.started,
		Updated: time.Now(),
	}
	if r.s.Workers > 0 && clusterSupported {
		st.Mode = "cluster"
	}
	if r.ctl != nil {
		st.Control = r.control
	}
	if r.inh != nil && r.inh.desc != nil {
		st.Restarts = r.inh.desc.Restarts
	}
	if last != nil {
		c := *last
		st.LastRestart = &c
	}
	if err := writeState(StatePath(r.pidFile), st); err != nil {
		r.log.Warn("graceful: could not write the state file", "err", err)
	}
}

// stateTakenOver rewrites the state file in a process that has just taken
// over from its predecessor and accepts: the hot restart that the
// predecessor recorded as under way is the one that started this process,
// and it has succeeded. A first process, with no predecessor, records no
// restart.
func (r *runner) stateTakenOver() {
	if r.pidFile == "" || r.worker() {
		return
	}
	var last *RestartStatus
	if r.inh != nil && r.inh.desc != nil {
		if prev, err := ReadState(r.pidFile); err == nil && prev.PID == r.inh.desc.PPID {
			if lr := prev.LastRestart; lr != nil && lr.Kind == "hot" && lr.Finished.IsZero() {
				last = lr
				last.Finished = time.Now()
			}
		}
	}
	r.saveState(last)
}

// savedEnd records the end of a restart in the state file, except the
// success of a hot restart: the successor, which serves, has rewritten
// the file already (before it said so), and this process must not take it
// back.
func (r *runner) savedEnd(err error) {
	if err == nil && r.last != nil && r.last.Kind == "hot" {
		return
	}
	r.saveState(r.last)
}

// removeStateFile removes the state file kept beside pidfile if pid wrote
// it: at a final stop, with the pidfile.
func removeStateFile(pidfile string, pid int) {
	if pidfile == "" {
		return
	}
	if st, err := ReadState(pidfile); err == nil && st.PID == pid {
		os.Remove(StatePath(pidfile))
	}
}

// writeState replaces path with st, atomically, mode 0644.
func writeState(path string, st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	if err := writeAtomic(path, append(b, '\n')); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	return nil
}
