//go:build linux

package graceful_test

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gograceful/graceful"
	"github.com/gograceful/graceful/internal/loadgen"
	"github.com/gograceful/graceful/internal/proc"
)

// Two HAProxy processes balance the same instances, with a health check
// of their readiness handler every 100 ms, two failures to take a server
// out and two successes to put it back: one configured as docs/deploy.md
// recommends, whose retries (with option redispatch, on another server)
// would hide a request lost to a refused connection, and one that never
// retries, so that no loss can hide. rollingDelay, the instances'
// ShutdownDelay, is far above the check's interval times its failure
// threshold (200 ms), for a loaded 2-core machine.
var balancers = []struct{ name, retries string }{
	{"guide", "retries 3\n    option redispatch"},
	{"retries 0", "retries 0"},
}

const rollingDelay = 2 * time.Second

// haproxy is an HAProxy process in front of instances on loopback ports.
type haproxy struct {
	name string
	cmd  *exec.Cmd
	addr string // the frontend
	sock string // the stats socket, at level admin
	out  *proc.Buffer
}

// haproxyConfig is the configuration the tests run HAProxy with: the one
// of docs/deploy.md but for the ports, the socket's path, the check's
// interval, and retries (haproxyRetries, or "retries 0" to see what
// reaches a client without them).
func haproxyConfig(port int, sock, retries string, backends []int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
    nbthread 1
    stats socket %s mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
    timeout check 1s
    %s

frontend web
    bind 127.0.0.1:%d
    default_backend app

backend app
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host localhost
    http-check expect status 200
    default-server check inter 100ms fall 2 rise 2
`, sock, retries, port)
	for i, p := range backends {
		fmt.Fprintf(&b, "    server app%d 127.0.0.1:%d\n", i+1, p)
	}
	return b.String()
}

// startHAProxy starts HAProxy in the foreground in front of the ports
// given, and stops it, by PID, at the end of the test. It skips the test
// if HAProxy is not installed.
func startHAProxy(t *testing.T, name, retries string, backends []int) *haproxy {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		bin, err = exec.LookPath("/usr/sbin/haproxy") // Debian's, if PATH lacks sbin
	}
	if err != nil {
		t.Skip("haproxy is not installed (Debian: apt-get install haproxy); the rolling deploy tests need it")
	}
	dir := t.TempDir()
	port, err := proc.FreePort()
	require.NoError(t, err)
	h := &haproxy{name: name, addr: "127.0.0.1:" + strconv.Itoa(port), sock: filepath.Join(dir, "admin.sock"), out: &proc.Buffer{}}
	cfg := filepath.Join(dir, "haproxy.cfg")
	require.NoError(t, os.WriteFile(cfg, []byte(haproxyConfig(port, h.sock, retries, backends)), 0o644))
	if b, err := exec.Command(bin, "-c", "-q", "-f", cfg).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, b)
	}
	// -db: in the foreground, not as a daemon, so that it is this test's
	// child and stops with it.
	h.cmd = exec.Command(bin, "-db", "-f", cfg)
	h.cmd.Stdout, h.cmd.Stderr = h.out, h.out
	require.NoError(t, h.cmd.Start())
	t.Cleanup(func() {
		h.cmd.Process.Kill()
		h.cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy (%s) output:\n%s", h.name, h.out)
		}
	})
	require.Eventually(t, func() bool { _, err := h.status(); return err == nil }, 10*time.Second, 10*time.Millisecond,
		"the stats socket never answered; haproxy output:\n%s", h.out)
	return h
}

// command sends one command to the stats socket and returns the answer.
func (h *haproxy) command(cmd string) (string, error) {
	c, err := net.DialTimeout("unix", h.sock, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(bufio.NewReader(c))
	return string(b), err
}

// status returns the check status HAProxy gives each server of the
// backend ("UP", "DOWN", "UP 1/2" while going down...), from "show stat".
func (h *haproxy) status() (map[string]string, error) {
	out, err := h.command("show stat")
	if err != nil {
		return nil, err
	}
	r := csv.NewReader(strings.NewReader(strings.TrimPrefix(out, "# ")))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("show stat: %w: %q", err, out)
	}
	if len(rows) < 2 {
		return nil, fmt.Errorf("show stat: %q", out)
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	st := map[string]string{}
	for _, row := range rows[1:] {
		if row[col["pxname"]] == "app" && row[col["svname"]] != "BACKEND" {
			st[row[col["svname"]]] = row[col["status"]]
		}
	}
	return st, nil
}

// waitStatus waits until HAProxy gives server the status want.
func (h *haproxy) waitStatus(t *testing.T, server, want string, timeout time.Duration) {
	t.Helper()
	var last map[string]string
	require.Eventually(t, func() bool {
		st, err := h.status()
		last = st
		return err == nil && st[server] == want
	}, timeout, 5*time.Millisecond, "haproxy (%s) never said %s is %s; last: %v", h.name, server, want, last)
}

// statusWatch records, until stopped, every change of the servers' status
// that HAProxy reports, and the most servers ever out of service at once.
func (h *haproxy) statusWatch() (stop func() (changes []string, maxOut int)) {
	var changes []string
	maxOut := 0
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		prev := map[string]string{}
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			st, err := h.status()
			if err != nil {
				continue
			}
			out := 0
			for name, s := range st {
				if s != prev[name] {
					changes = append(changes, name+" "+s)
				}
				if s != "UP" {
					out++
				}
			}
			maxOut = max(maxOut, out)
			prev = st
		}
	}()
	return func() ([]string, int) { close(done); <-finished; return changes, maxOut }
}

// rollingFixture is three instances of the test server on loopback ports
// behind the balancers, each run from a path of its own (its installed
// release) that a deploy replaces.
type rollingFixture struct {
	t       *testing.T
	lbs     []*haproxy
	ports   []int
	paths   []string // each instance's installed executable
	dirs    []string
	servers []*proc.Server // each instance's server now
	mu      sync.Mutex
	all     []*proc.Server // every instance ever started, for the clean-up
}

// releases are the test server's two releases, r1 and r2, which say which
// they are in the X-Build header.
var releases struct {
	once   sync.Once
	r1, r2 string
	err    error
}

func rollingReleases(t *testing.T) (r1, r2 string) {
	t.Helper()
	binaries(t) // for bins.dir, removed at the end of the run
	releases.once.Do(func() {
		flags := func(v string) []string {
			f := []string{"-ldflags", "-X main.version=" + v}
			if raceEnabled {
				f = append(f, "-race")
			}
			return f
		}
		releases.r1 = filepath.Join(bins.dir, "testserver-r1")
		releases.r2 = filepath.Join(bins.dir, "testserver-r2")
		if releases.err = proc.Build(".", "./internal/testserver", releases.r1, flags("r1")...); releases.err != nil {
			return
		}
		releases.err = proc.Build(".", "./internal/testserver", releases.r2, flags("r2")...)
	})
	require.NoError(t, releases.err)
	return releases.r1, releases.r2
}

// newRollingFixture starts three instances of release r behind the
// balancers, and waits until every balancer sees all three up.
func newRollingFixture(t *testing.T, r string) *rollingFixture {
	t.Helper()
	f := &rollingFixture{t: t}
	for i := 0; i < 3; i++ {
		port := portBelowEphemeral(t)
		dir := t.TempDir()
		f.ports = append(f.ports, port)
		f.dirs = append(f.dirs, dir)
		f.paths = append(f.paths, filepath.Join(dir, "app"))
		f.servers = append(f.servers, nil)
	}
	t.Cleanup(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, s := range f.all {
			s.Kill()
		}
		proc.ReapZombies()
		if t.Failed() {
			for _, s := range f.all {
				t.Logf("instance output (port %d):\n%s", s.Port, s.Output)
			}
		}
	})
	for _, b := range balancers {
		f.lbs = append(f.lbs, startHAProxy(t, b.name, b.retries, f.ports))
	}
	for i := range f.ports {
		f.install(i, r)
		f.start(i)
	}
	for i := range f.ports {
		for _, lb := range f.lbs {
			lb.waitStatus(t, f.name(i), "UP", 15*time.Second)
		}
	}
	return f
}

// portBelowEphemeral returns a free port on 127.0.0.1 below Linux's
// ephemeral range (32768 and up by default), for an instance that is
// restarted on the same port: between the old process's exit and the new
// one's bind, a port in that range can be taken as the local port of an
// outgoing connection (the balancer's health checks, the load), and the
// new process would fail to bind.
func portBelowEphemeral(t *testing.T) int {
	t.Helper()
	for try := 0; try < 100; try++ {
		port := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port between 20000 and 32000")
	return 0
}

// name is instance i's server name in the balancers' configuration.
func (f *rollingFixture) name(i int) string { return "app" + strconv.Itoa(i+1) }

// install puts release r at instance i's path, atomically, as a deploy
// would: a new file renamed over the old, so that a running process keeps
// its executable and the next start, or hot restart, runs r.
func (f *rollingFixture) install(i int, r string) {
	f.t.Helper()
	tmp := f.paths[i] + ".new"
	os.Remove(tmp)
	if err := os.Link(r, tmp); err != nil {
		b, err := os.ReadFile(r)
		require.NoError(f.t, err)
		require.NoError(f.t, os.WriteFile(tmp, b, 0o755))
	}
	require.NoError(f.t, os.Rename(tmp, f.paths[i]))
}

// start starts instance i from its path on its port and waits until it
// serves.
func (f *rollingFixture) start(i int) {
	f.t.Helper()
	s, err := proc.StartOn(f.ports[i], nil, f.paths[i], f.dirs[i], []string{"TS_SHUTDOWN_DELAY=" + rollingDelay.String()})
	require.NoError(f.t, err)
	f.mu.Lock()
	f.all = append(f.all, s)
	f.mu.Unlock()
	f.servers[i] = s
}

// replace is one step of a rolling deploy: it installs release r for
// instance i and sends the instance SIGTERM, which flips its readiness
// check to 503 and keeps it serving for ShutdownDelay; the balancers take
// it out while it still serves; it drains and exits 0; r starts on the
// same port; the balancers put it back. It returns the new PID.
func (f *rollingFixture) replace(i int, r string) int {
	t := f.t
	t.Helper()
	old := f.servers[i]
	oldPID := old.PID()
	f.install(i, r)
	require.NoError(t, syscall.Kill(oldPID, syscall.SIGTERM))
	for _, lb := range f.lbs {
		lb.waitStatus(t, f.name(i), "DOWN", rollingDelay)
	}
	assert.True(t, proc.Alive(oldPID), "%s: the old process had stopped serving before the balancers took it out", f.name(i))
	require.NoError(t, old.Cmd.Wait(), "%s: the old process's exit status", f.name(i))
	f.start(i)
	for _, lb := range f.lbs {
		lb.waitStatus(t, f.name(i), "UP", 15*time.Second)
	}
	return f.servers[i].PID()
}

// hotRestart is one step of the same deploy done by a hot restart
// (SIGUSR2) of instance i: the successor runs release r, installed at the
// instance's path. It returns the successor's PID once the old process
// has drained and exited.
func (f *rollingFixture) hotRestart(i int, r string) int {
	t := f.t
	t.Helper()
	f.install(i, r)
	old, pid, err := f.servers[i].Restart(15 * time.Second)
	require.NoError(t, err)
	require.NoError(t, proc.WaitGone(old, 15*time.Second), "%s: the old process still drains", f.name(i))
	return pid
}

// builds asks each balancer n times, on new connections, which release
// serves, and counts the answers by X-Build.
func (f *rollingFixture) builds(n int) map[string]int {
	f.t.Helper()
	m := map[string]int{}
	for _, lb := range f.lbs {
		for i := 0; i < n; i++ {
			build, err := xBuild(lb.addr)
			require.NoError(f.t, err, "haproxy (%s)", lb.name)
			m[build]++
		}
	}
	return m
}

// xBuild sends GET / to addr on a new connection and returns the
// response's X-Build header, or an error for a failure or a status other
// than 200.
func xBuild(addr string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		return "", err
	}
	head, _, _ := strings.Cut(string(b), "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	if !strings.HasPrefix(lines[0], "HTTP/1.1 200 ") {
		return "", fmt.Errorf("GET /: %s", lines[0])
	}
	for _, l := range lines[1:] {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, "X-Build") {
			return strings.TrimSpace(v), nil
		}
	}
	return "", errors.New("GET /: no X-Build header")
}

// rollout runs two deploys in a row under load through each balancer,
// from keep-alive, fresh-connection, slow and idle clients, none of which
// retries: from r1 to r2, then back to r1, with step replacing each
// instance in turn. It checks that no request failed, that the service
// never stalled, that every new process served the load, and that only
// the new release answers after each deploy; it returns the most servers
// any balancer had out of its rotation at once, and their changes.
func rollout(t *testing.T, step func(f *rollingFixture, i int, r string) int) (maxOut int, changes []string) {
	r1, r2 := rollingReleases(t)
	f := newRollingFixture(t, r1)
	var gens []*loadgen.Gen
	var watches []func() ([]string, int)
	for _, lb := range f.lbs {
		gens = append(gens, loadgen.Start(loadgen.Config{
			Addr: lb.addr, KeepAlive: 1, Fresh: 1, Slow: 1, SlowPath: "/sleep?ms=300",
			Idle: 2, IdleGap: graceful.DefaultDrainIdleTimeout, Check: checkBody,
			Duration: 60 * time.Second, MaxRequests: 200_000,
		}))
		watches = append(watches, lb.statusWatch())
	}
	for i, gen := range gens {
		require.True(t, gen.WaitDone(100, 15*time.Second), "no load through haproxy (%s)", f.lbs[i].name)
	}
	began := time.Now()
	var pids []string
	for _, r := range []string{r2, r1} {
		for i := range f.ports {
			pids = append(pids, strconv.Itoa(step(f, i, r)))
		}
		want := strings.TrimPrefix(filepath.Base(r), "testserver-")
		assert.Equal(t, map[string]int{want: 20 * len(f.lbs)}, f.builds(20), "releases serving after the deploy of %s", want)
	}
	took := time.Since(began)
	for i, gen := range gens {
		require.True(t, gen.WaitDone(100, 15*time.Second), "no load through haproxy (%s) after the deploys", f.lbs[i].name)
	}
	for i, gen := range gens {
		lb := f.lbs[i]
		res := gen.Stop()
		ch, out := watches[i]()
		maxOut = max(maxOut, out)
		changes = append(changes, lb.name+": "+strings.Join(ch, ", "))
		assert.Zero(t, res.Failed(), "haproxy (%s): failed requests by kind: %v; first: %v", lb.name, res.Failures(), res.FailureDetails(10))
		assert.Less(t, res.LongestGap(), time.Second, "haproxy (%s): the service stalled", lb.name)
		served := map[string]bool{}
		for _, p := range res.PIDs() {
			served[p] = true
		}
		for _, p := range pids {
			assert.True(t, served[p], "haproxy (%s): the new process %s served no request of the load", lb.name, p)
		}
		t.Logf("haproxy (%s): %d requests, %d failed %v, longest gap %s", lb.name, res.Requests(), res.Failed(), res.Failures(), res.LongestGap().Round(time.Millisecond))
	}
	t.Logf("two deploys of 3 instances in %s", took.Round(time.Millisecond))

	// Stop every instance at once: each exits, and leaves nothing behind.
	var wg sync.WaitGroup
	errs := make([]error, len(f.servers))
	for i, s := range f.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Stop(rollingDelay + 20*time.Second)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		assert.NoError(t, err, "%s", f.name(i))
	}
	for _, p := range f.paths {
		assert.Empty(t, proc.Running(p), "leftover processes")
	}
	assert.Empty(t, proc.Zombies(), "zombies")
	return maxOut, changes
}

// TestRollingDeployHAProxy: three instances behind HAProxy, which checks
// their ReadinessHandler, are replaced one at a time by a new release
// (SIGTERM with ShutdownDelay, start on the same port, wait until HAProxy
// has put the new one in), twice in a row. No request through HAProxy
// fails, with the guide's settings or with no retries at all; HAProxy
// took each old instance out while it still served (see replace), and
// never more than one at once.
func TestRollingDeployHAProxy(t *testing.T) {
	maxOut, changes := rollout(t, (*rollingFixture).replace)
	assert.Equal(t, 1, maxOut, "servers out of a balancer's rotation at once; changes: %v", changes)
	t.Logf("status changes: %v", changes)
}

// TestRollingHotRestartHAProxy: the same two deploys done by a hot restart
// (SIGUSR2) of each instance in turn. No request fails, and HAProxy never
// takes an instance out: its readiness check answers 200 throughout.
func TestRollingHotRestartHAProxy(t *testing.T) {
	maxOut, changes := rollout(t, (*rollingFixture).hotRestart)
	assert.Zero(t, maxOut, "a balancer took an instance out during a hot restart: %v", changes)
}
