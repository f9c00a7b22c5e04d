package graceful

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"time"
)

// The counts behind the metrics. Every one is kept by the loop of the
// process that sees the event, so none needs a lock: restarts by the
// process that began them, worker respawns and drains by a cluster's
// master. A successor started by a hot restart carries on its
// predecessor's restart and respawn counts (passed in GRACEFUL_INHERIT),
// so that they only ever grow while the service runs; request counts are
// the serving process's (in a cluster, its master's) and start again at 0
// in a new process, as a process's own counters do.

// processStarted is about when this process started: for a successor, the
// start of the hand-over's second half.
var processStarted = time.Now()

// counters are a process's own counts, kept by its loop.
type counters struct {
	ok, failed [2]uint64        // restarts ended here, by kind (hot, phased)
	last       [2]time.Duration // the last restart's length, by kind
	respawns   uint64           // workers started in place of one that died or failed to boot
	drain      time.Duration    // the last drain of a worker, from the order to its exit
}

// kindIndex is the index of a restart kind in counters.
func kindIndex(kind string) int {
	if kind == "phased" {
		return 1
	}
	return 0
}

// restartEnded counts a restart of the kind given that took d.
func (c *counters) restartEnded(kind string, d time.Duration, err error) {
	k := kindIndex(kind)
	if err != nil {
		c.failed[k]++
	} else {
		c.ok[k]++
	}
	c.last[k] = d
}

// fillCounts sets the counts of st: those carried over from the predecessors
// plus this process's own.
func (r *runner) fillCounts(st *Status) {
	c := &r.counts
	st.HotRestartsOK, st.HotRestartsFailed = c.ok[0], c.failed[0]
	st.PhasedRestartsOK, st.PhasedRestartsFailed = c.ok[1], c.failed[1]
	st.WorkerRespawns = c.respawns
	st.LastDrainSeconds = c.drain.Seconds()
	st.LastHotRestartSeconds, st.LastPhasedRestartSeconds = c.last[0].Seconds(), c.last[1].Seconds()
	if r.inh == nil || r.inh.desc == nil || r.inh.desc.Worker {
		return
	}
	d := r.inh.desc
	st.HotRestartsOK += uint64(d.Restarts)
	st.HotRestartsFailed += uint64(d.HotFailed)
	st.PhasedRestartsOK += uint64(d.PhasedOK)
	st.PhasedRestartsFailed += uint64(d.PhasedFailed)
	st.WorkerRespawns += uint64(d.Respawns)
}

// carryCounts passes this process's restart and respawn counts on to the
// successor that d describes; a worker gets none.
func (r *runner) carryCounts(d *inheritDesc) {
	if d.Worker {
		return
	}
	st := &Status{}
	r.fillCounts(st)
	clamp := func(n uint64) int { return int(min(n, 1<<30-1)) }
	d.HotFailed, d.PhasedOK, d.PhasedFailed, d.Respawns = clamp(st.HotRestartsFailed), clamp(st.PhasedRestartsOK), clamp(st.PhasedRestartsFailed), clamp(st.WorkerRespawns)
}

// tookOver records, in a process started by a hot restart, how long the
// restart took from this side: from the process's start until it serves.
// Its predecessor, which measured the whole restart, is draining and no
// longer answers.
func (r *runner) tookOver() {
	r.counts.last[0] = time.Since(processStarted)
}

// TreeStatus is Status for the whole process tree this process belongs
// to, for exporters of metrics: in a worker of a cluster, it is the
// master's Status, which counts every worker, asked over the control
// socket; elsewhere it is Status. A worker whose Server has no Control
// returns its own Status, with Mode "worker".
func (s *Server) TreeStatus(ctx context.Context) (*Status, error) {
	r := s.runner()
	if r == nil {
		return nil, ErrNotServing
	}
	if _, worker := Worker(); !worker || r.control == "" {
		return r.status(ctx)
	}
	c := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", r.control)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://master/v1/status", nil)
	if err != nil {
		return nil, fmt.Errorf("graceful: master's status: %w", err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("graceful: master's status: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("graceful: master's status: %s", resp.Status)
	}
	st := &Status{}
	if err := json.NewDecoder(resp.Body).Decode(st); err != nil {
		return nil, fmt.Errorf("graceful: master's status: %w", err)
	}
	return st, nil
}

// StatusVar is a Server's TreeStatus as a variable of the expvar package,
// which this package does not import (importing expvar serves
// /debug/vars on http.DefaultServeMux). Publish it once, under the name
// "graceful" by convention:
//
//	expvar.Publish("graceful", srv.StatusVar())
//
// Its value is the Status as JSON, as `gracectl stats` prints it, or
// {"error": "..."} while the server does not serve.
type StatusVar struct {
	s *Server
}

// StatusVar returns the server's expvar variable.
func (s *Server) StatusVar() StatusVar { return StatusVar{s} }

// String returns the JSON value of the variable.
func (v StatusVar) String() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var b []byte
	st, err := v.s.TreeStatus(ctx)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"error": err.Error()})
	} else {
		b, _ = json.Marshal(st)
	}
	return string(b)
}
