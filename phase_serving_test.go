//go:build unix

package graceful

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFakePhaseNewWorkerSilent: a phase's new worker, told to go, that
// then says nothing (neither "serving" nor a heartbeat: hung, or stopped)
// is killed after WorkerTimeout as a slot's worker would be, and the phase
// fails with the old workers serving on, instead of waiting for ever.
func TestFakePhaseNewWorkerSilent(t *testing.T) {
	f := &fakes{script: func(sp spawnSpec) script { return script{noBeats: sp.worker != nil && sp.worker.Gen == 1} }}
	r, done := fakeMaster(t, 2, f)
	old := workers(t, r, 2, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := r.call(ctx, reqPhased)
	require.Error(t, err)
	require.NotErrorIs(t, err, context.DeadlineExceeded, "the phase waited for ever on a silent new worker")
	assert.Contains(t, err.Error(), "phased restart stopped")
	assert.True(t, f.saw(fmt.Sprintf("killed %d", old[1]+1)), "the silent new worker was killed")
	assert.Equal(t, old, workers(t, r, 2, 0), "the old workers serve on")
	r.sigs <- os.Interrupt
	assert.Equal(t, http.ErrServerClosed, <-done)
}
