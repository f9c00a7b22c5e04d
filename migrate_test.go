//go:build linux

package graceful_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gograceful/graceful/internal/loadgen"
	"github.com/gograceful/graceful/internal/proc"
)

var peerBins struct {
	once              sync.Once
	gracehttp, target string
	err               error
}

// benchTargets builds, from the bench module (where facebookgo/grace is
// pinned, away from the library's own requirements), the benchmark
// application served by gracehttp and by graceful.
func benchTargets(t *testing.T) (gracehttp, graceful string) {
	t.Helper()
	binaries(t)
	peerBins.once.Do(func() {
		peerBins.gracehttp = filepath.Join(bins.dir, "bench-gracehttp")
		peerBins.target = filepath.Join(bins.dir, "bench-graceful")
		if peerBins.err = proc.Build("bench", "./targets/gracehttp", peerBins.gracehttp); peerBins.err != nil {
			return
		}
		peerBins.err = proc.Build("bench", "./targets/graceful", peerBins.target)
	})
	require.NoError(t, peerBins.err)
	return peerBins.gracehttp, peerBins.target
}

func install(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	require.NoError(t, err)
	defer in.Close()
	tmp := dst + ".new"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
	require.NoError(t, os.Rename(tmp, dst))
}

// TestMigrateFromGrace: a running facebookgo/grace gracehttp server, sent
// SIGUSR2 after its binary was replaced by one built with graceful, starts
// it with grace's LISTEN_FDS; the graceful process serves on the inherited
// socket and stops the grace process, as grace's own successor would. The
// next SIGUSR2 is graceful's own hot restart.
func TestMigrateFromGrace(t *testing.T) {
	gracehttp, target := benchTargets(t)
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	install(t, gracehttp, app)
	s := start(t, app, "GRACEFUL_LOG=info")
	gracePID := s.PID()

	check := func(path, pid string, body []byte) error {
		if want := map[string]string{"/": "hello\n", "/sleep?ms=300": "slept\n"}[path]; string(body) != want {
			return fmt.Errorf("%s answered %q, want %q", path, body, want)
		}
		return nil
	}
	gen := loadgen.Start(loadgen.Config{
		Addr: s.Addr(), KeepAlive: 4, Fresh: 2, Slow: 2, SlowPath: "/sleep?ms=300", Check: check,
		Duration: 60 * time.Second,
	})
	// Clients as most are: net/http's, which may resend an idempotent
	// request on a keep-alive connection the server closed unanswered.
	stdDone := make(chan struct{})
	var stdMu sync.Mutex
	var stdOK int
	var stdErrs []error
	var stdWG sync.WaitGroup
	for i := 0; i < 2; i++ {
		stdWG.Add(1)
		go func() {
			defer stdWG.Done()
			c := &http.Client{Timeout: 5 * time.Second}
			for n := 0; n < 100000; n++ {
				select {
				case <-stdDone:
					return
				default:
				}
				resp, err := c.Get("http://" + s.Addr() + "/")
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
					if err == nil && resp.Header.Get("X-Pid") == "" {
						err = fmt.Errorf("no X-Pid")
					}
				}
				stdMu.Lock()
				if err != nil {
					stdErrs = append(stdErrs, err)
				} else {
					stdOK++
				}
				stdMu.Unlock()
			}
		}()
	}
	require.True(t, gen.WaitDone(200, 10*time.Second))

	// The deploy: the new binary replaces the old, then grace's restart.
	install(t, target, app)
	signalled := time.Now()
	_, err := s.Signal(syscall.SIGUSR2)
	require.NoError(t, err)
	gracefulPID, err := s.WaitPIDFile(gracePID, 15*time.Second)
	require.NoError(t, err)
	require.NoError(t, proc.WaitGone(gracePID, 70*time.Second), "the grace process was not stopped")
	graceGone := time.Now()
	waitOutput(t, s, "stopping the facebookgo/grace process we took over from")
	waitServedBy(t, s, gracefulPID)
	require.True(t, gen.WaitDone(200, 10*time.Second))

	// From now on, graceful's own restarts.
	ownRestart := time.Now()
	_, next, err := s.Restart(15 * time.Second)
	require.NoError(t, err)
	waitServedBy(t, s, next)
	require.NoError(t, proc.WaitGone(gracefulPID, 15*time.Second))
	require.True(t, gen.WaitDone(200, 10*time.Second))
	res := gen.Stop()
	close(stdDone)
	stdWG.Wait()
	stop(t, s)

	// What graceful controls loses nothing: no request on a new
	// connection, no long request, no request of a net/http client, and
	// nothing at all from graceful's own restart on.
	lostKeepAlive := 0
	lostBy := map[int]int{}
	for _, sm := range res.Samples {
		if sm.Fail == "" {
			continue
		}
		switch {
		case !sm.Start.Before(ownRestart):
			t.Errorf("lost after the switch: %s %s", sm.Fail, sm.Detail)
		case sm.Fresh || sm.Slow:
			t.Errorf("lost at the switch, not on a keep-alive connection: %s %s", sm.Fail, sm.Detail)
		case sm.Start.Before(signalled) || sm.Start.After(graceGone):
			t.Errorf("lost on a keep-alive connection outside grace's stop: %s %s", sm.Fail, sm.Detail)
		case sm.Fail != loadgen.EOF && sm.Fail != loadgen.Reset:
			t.Errorf("lost on a keep-alive connection, not by its close: %s %s", sm.Fail, sm.Detail)
		default:
			lostKeepAlive++
			lostBy[sm.Client]++
		}
	}
	assert.Empty(t, stdErrs, "net/http client errors")
	assert.GreaterOrEqual(t, stdOK, 1600, "net/http requests served: fewer than half of a normal run")
	// What it does not: on SIGTERM, grace closes its idle keep-alive
	// connections at once, so a client that never retries and had just
	// sent its next request on one loses it. That is grace's own stop, the
	// loss a grace-to-grace restart has too: at most one request per
	// keep-alive connection it holds.
	for client, n := range lostBy {
		assert.LessOrEqual(t, n, 1, "keep-alive client %d lost more than the one request grace's stop can cut", client)
	}
	assert.LessOrEqual(t, lostKeepAlive, 4)
	assert.GreaterOrEqual(t, res.Served(), 3000, "requests served: fewer than half of a normal run")
	assert.GreaterOrEqual(t, len(res.PIDs()), 3)
	t.Logf("%d requests from clients that never retry, failed %v (keep-alive requests cut by grace's stop: %d); net/http clients: %d ok, %d failed; served by %v",
		res.Requests(), res.Failures(), lostKeepAlive, stdOK, len(stdErrs), res.PIDs())
}
