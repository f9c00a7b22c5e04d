package graceful

import (
	"context"
	"os"
	"time"
)

// Status is a snapshot of a serving process: what [Server.Status] returns
// and what `gracectl stats --json` prints. The JSON field names are part of
// the API and stay as they are; fields may be added.
type Status struct {
	// Mode is "single", "cluster" (a master) or "worker".
	Mode string `json:"mode"`
	// PID is the process that answered.
	PID int `json:"pid"`
	// Started is when this process started serving.
	Started time.Time `json:"started"`
	// UptimeSeconds is the time since Started.
	UptimeSeconds float64 `json:"uptime_seconds"`
	// State is "serving", "restarting" (a successor is starting),
	// "phased-restart" (workers are being replaced), "stopping" (not
	// ready, serving on for ShutdownDelay) or "draining".
	State string `json:"state"`
	// Restarts counts the hot restarts that led to this process: 0 for
	// the process the service manager started.
	Restarts int `json:"restarts"`
	// Generation is the phased-restart generation of a cluster's master:
	// the number of phased restarts it has begun. 0 in single mode.
	Generation int `json:"generation"`
	// WorkingDir is the answering process's working directory: with
	// Directory, the release it runs.
	WorkingDir string `json:"working_dir"`
	// Listeners are the addresses served, as network:address.
	Listeners []string `json:"listeners"`
	// RequestsInFlight counts the requests being served now.
	RequestsInFlight int64 `json:"requests_in_flight"`
	// RequestsTotal counts the requests this process (in a cluster: this
	// master's workers, present and past) has finished.
	RequestsTotal uint64 `json:"requests_total"`
	// WorkersWanted is the number of workers a master keeps running.
	WorkersWanted int `json:"workers_wanted,omitempty"`
	// Workers are a master's worker processes, by slot, including those
	// booting and those draining.
	Workers []WorkerStatus `json:"workers,omitempty"`
	// Services are the Services served beside HTTP (service.go).
	Services []ServiceStatus `json:"services,omitempty"`
	// LastRestart is the most recent restart this process began, if any.
	LastRestart *RestartStatus `json:"last_restart,omitempty"`

	// The counts below are those of the service since the service manager
	// (or a shell) started its first process: a process started by a hot
	// restart carries on its predecessor's. In a cluster they are the
	// master's. A failed restart is one that left the old processes
	// serving, or that a stop abandoned.

	// HotRestartsOK counts the hot restarts that succeeded: a successor
	// took over. The same as Restarts in the process that serves.
	HotRestartsOK uint64 `json:"hot_restarts_ok"`
	// HotRestartsFailed counts the hot restarts that failed.
	HotRestartsFailed uint64 `json:"hot_restarts_failed"`
	// PhasedRestartsOK counts the phased restarts that replaced every
	// worker.
	PhasedRestartsOK uint64 `json:"phased_restarts_ok"`
	// PhasedRestartsFailed counts the phased restarts that stopped before
	// replacing every worker.
	PhasedRestartsFailed uint64 `json:"phased_restarts_failed"`
	// WorkerRespawns counts the workers a master started in place of one
	// that died, missed its heartbeat or failed to boot.
	WorkerRespawns uint64 `json:"worker_respawns"`

	// LastHotRestartSeconds is how long the last hot restart took: in the
	// process that began it, from the request until its successor served
	// or the restart failed; in the successor, from its own start until it
	// served. 0 when there was none.
	LastHotRestartSeconds float64 `json:"last_hot_restart_seconds"`
	// LastPhasedRestartSeconds is how long the master's last phased
	// restart took, from the request until it completed or failed. 0 when
	// there was none; it is not carried over a hot restart.
	LastPhasedRestartSeconds float64 `json:"last_phased_restart_seconds"`
	// LastDrainSeconds is how long a cluster's master saw the last worker
	// drain take, from the order to drain (with ShutdownDelay, when the
	// master stops) until the worker exited. 0 in single mode: a process
	// that drains itself no longer answers.
	LastDrainSeconds float64 `json:"last_drain_seconds"`

	// ConnsHanded counts the keep-alive connections that the last restart
	// passed, open, to the processes that took over (connection
	// hand-off): in a process started by a hot restart, those its
	// predecessor handed it; in a master, those the workers replaced in
	// its last phased restart handed to their replacements.
	ConnsHanded int64 `json:"conns_handed"`
	// ConnsClosed counts, likewise, the connections of the processes
	// replaced that ended instead of being handed: closed by the drain
	// (TLS, HTTP/2, hijacked, hand-off off or failed) or by the client.
	ConnsClosed int64 `json:"conns_closed"`
}

// WorkerStatus is one worker of a cluster as its master sees it. Request
// counts are those of the worker's last check-in, at most a heartbeat old.
type WorkerStatus struct {
	ID         int    `json:"id"`
	PID        int    `json:"pid"`
	Generation int    `json:"generation"`
	State      string `json:"state"` // "booting", "ready" or "draining"
	// Started is when the master started the worker.
	Started time.Time `json:"started"`
	// WorkingDir is where the worker was started: with Directory, its
	// release.
	WorkingDir string `json:"working_dir,omitempty"`
	// LastCheckin is the worker's last heartbeat; zero before it serves.
	LastCheckin      time.Time `json:"last_checkin"`
	RequestsInFlight int64     `json:"requests_in_flight"`
	RequestsTotal    uint64    `json:"requests_total"`
}

// RestartStatus is the outcome of a restart.
type RestartStatus struct {
	// Kind is "hot" or "phased".
	Kind    string    `json:"kind"`
	Started time.Time `json:"started"`
	// Finished is zero while the restart is under way.
	Finished time.Time `json:"finished"`
	// Error says why the restart failed; empty when it succeeded or is
	// under way.
	Error string `json:"error,omitempty"`
}

// Status returns a snapshot of the server: its mode, state, listeners,
// request counts and, for a cluster's master, its workers. It returns
// ErrNotServing when the server is not serving.
func (s *Server) Status() (*Status, error) {
	r := s.runner()
	if r == nil {
		return nil, ErrNotServing
	}
	return r.status(context.Background())
}

// status asks the loop for a snapshot.
func (r *runner) status(ctx context.Context) (*Status, error) {
	req := request{kind: reqStatus, done: make(chan error, 1), status: make(chan *Status, 1)}
	if err := r.send(ctx, req); err != nil {
		return nil, err
	}
	select {
	case st := <-req.status:
		return st, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// snapshot is the part of a Status every mode shares.
func (r *runner) snapshot(state string) *Status {
	mode := "single"
	if r.worker() {
		mode = "worker"
	}
	st := &Status{
		Mode:             mode,
		PID:              os.Getpid(),
		Started:          r.started,
		UptimeSeconds:    time.Since(r.started).Seconds(),
		State:            state,
		Listeners:        r.addrs(),
		RequestsInFlight: r.inflight.Load(),
		RequestsTotal:    r.total.Load(),
		Services:         r.serviceStatus(),
	}
	st.WorkingDir, _ = os.Getwd()
	if r.inh != nil && r.inh.desc != nil {
		st.Restarts = r.inh.desc.Restarts
	}
	if r.last != nil {
		c := *r.last
		st.LastRestart = &c
	}
	r.fillCounts(st)
	r.fillHandOff(st)
	return st
}

// began records the start of a restart; ended its outcome. Both record it
// in the state file too (statefile.go).
func (r *runner) began(kind string) {
	r.last = &RestartStatus{Kind: kind, Started: time.Now()}
	r.saveState(r.last)
}

func (r *runner) ended(err error) {
	if r.last == nil || !r.last.Finished.IsZero() {
		return
	}
	r.last.Finished = time.Now()
	if err != nil {
		r.last.Error = err.Error()
	}
	r.counts.restartEnded(r.last.Kind, r.last.Finished.Sub(r.last.Started), err)
	r.savedEnd(err)
}
