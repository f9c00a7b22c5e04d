//go:build linux

package prometheus_test

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gograceful/graceful/internal/proc"
)

var app string // the test application, built by TestMain

func TestMain(m *testing.M) {
	if err := proc.BecomeSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, "subreaper:", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "graceful-prom-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	app = filepath.Join(dir, "testapp")
	if err := proc.Build(".", "./internal/testapp", app); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server runs the test application with its metrics on a port of their
// own and arranges for every process it leads to be gone at the end.
type server struct {
	*proc.Server
	metrics string // the metrics server's address
	mode    string // the mode file
	sock    string // the control socket
}

func startApp(t *testing.T, env ...string) *server {
	t.Helper()
	port, err := proc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &server{metrics: "127.0.0.1:" + strconv.Itoa(port), mode: filepath.Join(dir, "mode"), sock: filepath.Join(dir, "control.sock")}
	env = append(env, "METRICS="+s.metrics, "MODE_FILE="+s.mode, "CONTROL="+s.sock)
	if s.Server, err = proc.Start(app, dir, env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Kill()
		proc.ReapZombies()
		if t.Failed() {
			t.Logf("server output:\n%s", s.Output)
		}
	})
	return s
}

// stop stops the server and checks that no process is left.
func (s *server) stop(t *testing.T) {
	t.Helper()
	if err := s.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if left := proc.Running(app); len(left) > 0 {
		t.Errorf("leftover processes: %v", left)
	}
}

func (s *server) setMode(t *testing.T, mode string) {
	t.Helper()
	if err := os.WriteFile(s.mode, []byte(mode), 0o644); err != nil {
		t.Fatal(err)
	}
}

// scrape fetches the metrics, keyed as exposed: name{label="value",...}.
func (s *server) scrape() (map[string]float64, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + s.metrics + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape: %s", resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			return nil, fmt.Errorf("scrape: bad line %q", line)
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

// The counters each test follows.
var counters = []string{
	`graceful_restarts_total{kind="hot",outcome="ok"}`,
	`graceful_restarts_total{kind="hot",outcome="failed"}`,
	`graceful_restarts_total{kind="phased",outcome="ok"}`,
	`graceful_restarts_total{kind="phased",outcome="failed"}`,
}

// await scrapes until ok accepts the metrics, and returns them.
func (s *server) await(t *testing.T, what string, ok func(map[string]float64) bool) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var m map[string]float64
	var err error
	for time.Now().Before(deadline) {
		if m, err = s.scrape(); err == nil && m["graceful_up"] == 1 && ok(m) {
			return m
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: never seen; last scrape: %v (err %v)", what, m, err)
	return nil
}

// step waits until the counter named changes and checks that it went up by
// exactly one while the other counters stayed as they were.
func (s *server) step(t *testing.T, before map[string]float64, name string) map[string]float64 {
	t.Helper()
	m := s.await(t, name+" to change", func(m map[string]float64) bool { return m[name] != before[name] })
	for _, c := range counters {
		want := before[c]
		if c == name {
			want++
		}
		if m[c] != want {
			t.Errorf("%s = %v, want %v", c, m[c], want)
		}
	}
	return m
}

// TestCollectorSingle: in single mode the hot-restart counters step by
// exactly one per restart, in outcome "failed" for a failed one, and carry
// on in each successor.
func TestCollectorSingle(t *testing.T) {
	s := startApp(t)
	m := s.await(t, "the first scrape", func(m map[string]float64) bool { return true })
	for _, c := range counters[:2] {
		if v, ok := m[c]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v), want 0", c, v, ok)
		}
	}
	if _, ok := m[counters[2]]; ok {
		t.Errorf("phased restarts exported in single mode")
	}

	first, _, err := s.Restart(20 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m = s.step(t, m, counters[0])
	if m[`graceful_last_restart_duration_seconds{kind="hot"}`] <= 0 {
		t.Errorf("no duration for the hot restart: %v", m)
	}

	s.setMode(t, "exit")
	second, err := s.Signal(syscall.SIGUSR2)
	if err != nil {
		t.Fatal(err)
	}
	m = s.step(t, m, counters[1])
	if pid := s.PID(); pid != second || pid == first {
		t.Errorf("pidfile names %d after a failed restart; want %d still", pid, second)
	}

	s.setMode(t, "")
	if _, _, err := s.Restart(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	s.step(t, m, counters[0])
	s.stop(t)
}

// TestCollectorCluster: scraped from a worker, the numbers are the master's
// for the whole tree: phased restarts step by one per restart and outcome,
// and every count carries on over a hot restart of the tree.
func TestCollectorCluster(t *testing.T) {
	s := startApp(t, "WORKERS=2")
	m := s.await(t, "2 ready workers", func(m map[string]float64) bool {
		return m[`graceful_workers{state="ready"}`] == 2 && m["graceful_workers_wanted"] == 2
	})
	for _, c := range counters {
		if v, ok := m[c]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v), want 0", c, v, ok)
		}
	}

	signal := func(sig syscall.Signal) {
		t.Helper()
		if _, err := s.Signal(sig); err != nil {
			t.Fatal(err)
		}
	}
	signal(syscall.SIGUSR1)
	m = s.step(t, m, counters[2])
	if m[`graceful_last_restart_duration_seconds{kind="phased"}`] <= 0 {
		t.Errorf("no duration for the phased restart: %v", m)
	}
	m = s.await(t, "a worker drain", func(m map[string]float64) bool { return m["graceful_drain_duration_seconds"] > 0 })

	s.setMode(t, "exit")
	signal(syscall.SIGUSR1)
	m = s.step(t, m, counters[3])

	s.setMode(t, "")
	master, _, err := s.Restart(20 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m = s.step(t, m, counters[0])
	if s.PID() == master {
		t.Errorf("the master was not replaced")
	}

	signal(syscall.SIGUSR1)
	s.step(t, m, counters[2])
	s.stop(t)
}
