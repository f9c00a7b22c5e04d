//go:build linux

package graceful_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gograceful/graceful/internal/loadgen"
)

// TestShutdownDelay: behind a load balancer, SIGTERM flips the readiness
// check to 503 at once, the server keeps serving new connections for
// ShutdownDelay, then drains, and exits 0, losing nothing.
func TestShutdownDelay(t *testing.T) {
	for _, workers := range []string{"0", "2"} {
		t.Run("workers="+workers, func(t *testing.T) {
			_, server := binaries(t)
			const delay = 1500 * time.Millisecond
			s := start(t, server, "TS_SHUTDOWN_DELAY="+delay.String(), "TS_WORKERS="+workers)
			if workers != "0" {
				waitWorkers(t, s, 2)
			}
			code, _, body := get(t, "tcp", s.Addr(), "/readyz")
			require.Equal(t, 200, code)
			require.Equal(t, "ready\n", body)

			gen := loadgen.Start(loadgen.Config{Addr: s.Addr(), KeepAlive: 2, Fresh: 2, Duration: 30 * time.Second})
			require.True(t, gen.WaitDone(100, 10*time.Second))
			_, err := s.Signal(syscall.SIGTERM)
			require.NoError(t, err)
			termAt := time.Now()
			require.Eventually(t, func() bool {
				code, _, _ := get(t, "tcp", s.Addr(), "/readyz")
				return code == 503
			}, time.Second, time.Millisecond, "readiness never flipped")
			flipped := time.Since(termAt)
			// Until the delay is nearly over, new connections are served.
			for time.Since(termAt) < delay-300*time.Millisecond {
				code, _, _ := get(t, "tcp", s.Addr(), "/")
				require.Equal(t, 200, code, "during the delay, at %s", time.Since(termAt))
			}
			require.NoError(t, s.Cmd.Wait(), "exit status")
			exited := time.Since(termAt)
			res := gen.Stop()
			// Once the delay is over the server stops accepting and, with
			// no successor, new connections are refused: a load balancer
			// has stopped sending by then. Every request sent before the
			// end of the delay (less a margin for the clock of this test)
			// must have succeeded.
			var during []loadgen.Sample
			for _, sm := range res.Samples {
				if sm.Start.Before(termAt.Add(delay - 100*time.Millisecond)) {
					during = append(during, sm)
				}
			}
			failed := 0
			for _, sm := range during {
				if sm.Fail != "" {
					failed++
				}
			}
			assert.Zero(t, failed, "requests sent before the delay ended that failed; all failures: %v", res.Failures())
			assert.Greater(t, len(during), 100)
			assert.Less(t, flipped, 200*time.Millisecond, "readiness flipped late")
			assert.GreaterOrEqual(t, exited, delay, "exited before the delay was over")
			t.Logf("readiness 503 after %s; exit 0 after %s; %d requests before the delay ended, 0 failed", flipped, exited, len(during))
		})
	}
}
