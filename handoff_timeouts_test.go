//go:build linux

package graceful_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gograceful/graceful/internal/proc"
)

// TestHandOffIdleTimeoutKept: an idle keep-alive connection is closed once
// it has been idle for the server's IdleTimeout, however many hot restarts
// handed it on meanwhile: a hand-off does not give it a fresh IdleTimeout
// (with restarts more frequent than IdleTimeout, it would never be closed).
func TestHandOffIdleTimeoutKept(t *testing.T) {
	_, server := binaries(t)
	const idle = 3 * time.Second
	s := start(t, server, "TS_DRAIN_IDLE=300ms", "TS_IDLE_TIMEOUT="+idle.String())
	o := dialOne(t, s.Addr())
	_, err := o.get()
	require.NoError(t, err)
	last := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		o.c.SetReadDeadline(time.Now().Add(30 * time.Second))
		o.c.Read(make([]byte, 1))
		closed <- time.Since(last)
	}()
	// Restarts more often than the idle timeout: the connection is handed
	// at each one, idle all along.
	handed := 0
	for {
		select {
		case d := <-closed:
			t.Logf("closed after %s idle, %d hot restarts", d.Round(time.Millisecond), handed)
			assert.Positive(t, handed, "handed at least once")
			assert.Less(t, d, idle+1500*time.Millisecond, "closed once idle for IdleTimeout (%s)", idle)
			stop(t, s)
			return
		case <-time.After(700 * time.Millisecond):
		}
		require.Less(t, time.Since(last), 3*idle, "the idle connection is never closed")
		old, _, err := s.Restart(15 * time.Second)
		require.NoError(t, err)
		require.NoError(t, proc.WaitGone(old, 15*time.Second))
		handed++
	}
}
