//go:build unix

package graceful

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFakeHeldStopSuccessorDies: a stop signal held while the successor,
// told to go, has not said it serves, is carried out when the successor
// dies instead: the old process stops, as asked, and the Restart call is
// told the restart failed.
func TestFakeHeldStopSuccessorDies(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		t.Run(fmt.Sprintf("cluster=%v", cluster), func(t *testing.T) {
			hold := make(chan struct{})
			defer close(hold)
			f := &fakes{script: func(sp spawnSpec) script {
				if sp.worker != nil {
					return script{}
				}
				return script{goHold: hold}
			}}
			var r *runner
			var done chan error
			if cluster {
				r, done = fakeMaster(t, 1, f)
				workers(t, r, 1, 0)
			} else {
				r, _, done = fakeSingle(t, f)
			}
			restarted := make(chan error, 1)
			go func() { restarted <- r.call(context.Background(), reqRestart) }()
			var succ int
			require.Eventually(t, func() bool {
				f.mu.Lock()
				defer f.mu.Unlock()
				for _, l := range f.log {
					var pid int
					if _, err := fmt.Sscanf(l, "go %d", &pid); err == nil && pid > 100000 {
						for _, s := range f.log {
							if s == fmt.Sprintf("spawn %d gen -1", pid) {
								succ = pid
								return true
							}
						}
					}
				}
				return false
			}, 10*time.Second, 2*time.Millisecond, "the successor was never told to go")
			r.sigs <- syscall.SIGTERM
			time.Sleep(200 * time.Millisecond) // the signal is held
			select {
			case err := <-done:
				t.Fatalf("the old process ended before the successor's word: %v", err)
			default:
			}
			f.mu.Lock()
			die := f.exits[succ]
			f.mu.Unlock()
			die(errors.New("signal: killed"))
			select {
			case err := <-restarted:
				require.Error(t, err, "the successor died: the restart failed")
			case <-time.After(10 * time.Second):
				t.Fatal("the Restart call got no answer")
			}
			select {
			case err := <-done:
				assert.Equal(t, http.ErrServerClosed, err)
			case <-time.After(20 * time.Second):
				t.Fatal("the old process did not stop on the held signal")
			}
		})
	}
}
