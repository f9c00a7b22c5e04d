//go:build linux

package graceful_test

import (
	"context"
	"encoding/json"
	"expvar"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gograceful/graceful"
)

// counts is the part of a Status that the metrics export as counters.
type counts struct {
	hotOK, hotFailed, phasedOK, phasedFailed, respawns uint64
}

func countsOf(st *graceful.Status) counts {
	return counts{st.HotRestartsOK, st.HotRestartsFailed, st.PhasedRestartsOK, st.PhasedRestartsFailed, st.WorkerRespawns}
}

// TestStatusCountsSingle: in single mode, each hot restart adds exactly one
// to its outcome's count, and a successor carries the counts on.
func TestStatusCountsSingle(t *testing.T) {
	_, server := binaries(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	modeFile := filepath.Join(dir, "mode")
	s := start(t, server, "TS_CONTROL="+sock, "TS_MODE_FILE="+modeFile)

	st := ctlStats(t, sock)
	assert.Equal(t, counts{}, countsOf(st))
	assert.Zero(t, st.LastHotRestartSeconds)

	first := s.PID()
	_, errs, code := ctlRun(t, "--control", sock, "restart")
	require.Equal(t, 0, code, errs)
	_, err := s.WaitPIDFile(first, 10*time.Second) // for stop to wait for it
	require.NoError(t, err)
	st = ctlStats(t, sock)
	assert.NotEqual(t, first, st.PID)
	assert.Equal(t, counts{hotOK: 1}, countsOf(st))
	assert.Equal(t, 1, st.Restarts)
	assert.Greater(t, st.LastHotRestartSeconds, 0.0, "the successor's take-over time")
	assert.Less(t, st.LastHotRestartSeconds, 30.0)

	require.NoError(t, os.WriteFile(modeFile, []byte("exit"), 0o644))
	second := st.PID
	_, _, code = ctlRun(t, "--control", sock, "restart")
	require.Equal(t, 1, code)
	st = ctlStats(t, sock)
	assert.Equal(t, second, st.PID, "the failed restart left the old process serving")
	assert.Equal(t, counts{hotOK: 1, hotFailed: 1}, countsOf(st))
	require.NotNil(t, st.LastRestart)
	assert.NotEmpty(t, st.LastRestart.Error)
	assert.InDelta(t, st.LastRestart.Finished.Sub(st.LastRestart.Started).Seconds(), st.LastHotRestartSeconds, 1e-6)

	require.NoError(t, os.WriteFile(modeFile, nil, 0o644))
	_, errs, code = ctlRun(t, "--control", sock, "restart")
	require.Equal(t, 0, code, errs)
	_, err = s.WaitPIDFile(second, 10*time.Second)
	require.NoError(t, err)
	st = ctlStats(t, sock)
	assert.NotEqual(t, second, st.PID)
	assert.Equal(t, counts{hotOK: 2, hotFailed: 1}, countsOf(st), "the failed restart's count carried over")
	stop(t, s)
}

// TestStatusCountsCluster: a master counts phased restarts by outcome,
// respawns and worker drains, and its successor after a hot restart of the
// tree carries the counts on.
func TestStatusCountsCluster(t *testing.T) {
	_, server := binaries(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	modeFile := filepath.Join(dir, "mode")
	s := start(t, server, "TS_CONTROL="+sock, "TS_MODE_FILE="+modeFile, "TS_WORKERS=2")
	waitWorkers(t, s, 2)

	_, errs, code := ctlRun(t, "--control", sock, "phased-restart")
	require.Equal(t, 0, code, errs)
	var st *graceful.Status
	require.Eventually(t, func() bool {
		st = ctlStats(t, sock)
		return st.LastDrainSeconds > 0
	}, 15*time.Second, 20*time.Millisecond, "no worker drain seen")
	assert.Equal(t, counts{phasedOK: 1}, countsOf(st))
	assert.Greater(t, st.LastPhasedRestartSeconds, 0.0)
	assert.Less(t, st.LastDrainSeconds, 30.0)

	require.NoError(t, os.WriteFile(modeFile, []byte("exit"), 0o644))
	_, _, code = ctlRun(t, "--control", sock, "phased-restart")
	require.Equal(t, 1, code)
	assert.Equal(t, counts{phasedOK: 1, phasedFailed: 1}, countsOf(ctlStats(t, sock)))
	require.NoError(t, os.WriteFile(modeFile, nil, 0o644))

	// A worker killed is replaced: one respawn.
	ws := waitWorkers(t, s, 2)
	require.NoError(t, syscall.Kill(ws[0], syscall.SIGKILL))
	require.Eventually(t, func() bool {
		st = ctlStats(t, sock)
		ready := 0
		for _, w := range st.Workers {
			if w.State == "ready" && w.PID != ws[0] {
				ready++
			}
		}
		return st.WorkerRespawns == 1 && ready == 2
	}, 15*time.Second, 20*time.Millisecond, "the killed worker was not replaced")
	assert.Equal(t, counts{phasedOK: 1, phasedFailed: 1, respawns: 1}, countsOf(st))

	master := s.PID()
	_, errs, code = ctlRun(t, "--control", sock, "restart")
	require.Equal(t, 0, code, errs)
	_, err := s.WaitPIDFile(master, 10*time.Second)
	require.NoError(t, err)
	st = ctlStats(t, sock)
	assert.NotEqual(t, master, st.PID)
	assert.Equal(t, "cluster", st.Mode)
	assert.Equal(t, counts{hotOK: 1, phasedOK: 1, phasedFailed: 1, respawns: 1}, countsOf(st), "counts carried to the new master")
	assert.Greater(t, st.LastHotRestartSeconds, 0.0)

	_, errs, code = ctlRun(t, "--control", sock, "phased-restart")
	require.Equal(t, 0, code, errs)
	assert.Equal(t, counts{hotOK: 1, phasedOK: 2, phasedFailed: 1, respawns: 1}, countsOf(ctlStats(t, sock)))
	stop(t, s)
}

// TestStatusVar: the expvar variable is the server's Status as JSON, and an
// error once it no longer serves.
func TestStatusVar(t *testing.T) {
	srv := &graceful.Server{Server: &http.Server{Addr: "127.0.0.1:0", Handler: http.NotFoundHandler()}, NoSignals: true}
	var v expvar.Var = srv.StatusVar() // what expvar.Publish takes
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var st graceful.Status
	require.Eventually(t, func() bool {
		st = graceful.Status{}
		return json.Unmarshal([]byte(v.String()), &st) == nil && st.State == "serving"
	}, 10*time.Second, 5*time.Millisecond, "value: %s", v)
	assert.Equal(t, "single", st.Mode)
	assert.Equal(t, os.Getpid(), st.PID)
	assert.Len(t, st.Listeners, 1)
	cancel()
	require.NoError(t, <-done)
	var e map[string]string
	require.NoError(t, json.Unmarshal([]byte(v.String()), &e))
	assert.Contains(t, e["error"], "not serving")
}
