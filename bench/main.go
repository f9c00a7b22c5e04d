//go:build linux

// Command bench measures graceful against plain net/http on this machine,
// in one run: throughput with no restarts, and what N hot restarts under
// load cost. All load is on loopback, bounded in time.
//
//	cd bench && go run . -out results
//
// writes results/hotrestart.md and results/hotrestart.json. With -short it
// is a smoke test: a few restarts, exit status 1 if any request failed.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gograceful/graceful/internal/loadgen"
	"github.com/gograceful/graceful/internal/proc"
)

type config struct {
	Restarts    int           `json:"restarts"`
	Rounds      int           `json:"rounds"`
	RoundTime   time.Duration `json:"round_time_ns"`
	Concurrency int           `json:"concurrency"`
	SlowMS      int           `json:"slow_ms"`
	KeepAlive   int           `json:"restart_keepalive_clients"`
	Fresh       int           `json:"restart_new_connection_clients"`
	SlowClients int           `json:"restart_slow_clients"`

	ThroughputOnly bool   `json:"-"`
	Only           string `json:"-"`
}

type throughput struct {
	Clients  string    `json:"clients"`
	Tool     string    `json:"tool"`
	Plain    []float64 `json:"plain_rps"`
	Graceful []float64 `json:"graceful_rps"`
	Ratio    float64   `json:"ratio"` // median of the per-round ratios
	RatioMin float64   `json:"ratio_min"`
	RatioMax float64   `json:"ratio_max"`
	// Server CPU time per request, all rounds together, and plain's over
	// graceful's: the throughput ratio at equal CPU, which time stolen
	// from the machine does not blur.
	PlainCPU    float64 `json:"plain_cpu_us_per_request"`
	GracefulCPU float64 `json:"graceful_cpu_us_per_request"`
	CPURatio    float64 `json:"cpu_ratio"`
	PlainP99    float64 `json:"plain_p99_ms"`
	GracefulP99 float64 `json:"graceful_p99_ms"`
}

type restarts struct {
	Name           string         `json:"name"`
	Ours           bool           `json:"graceful"`
	Workers        int            `json:"workers"`
	Signal         string         `json:"signal"`
	Count          int            `json:"restarts"`
	Requests       int            `json:"requests"`
	Failed         int            `json:"failed"`
	Failures       map[string]int `json:"failures"`
	FirstNewMedian float64        `json:"signal_to_first_new_response_median_ms"`
	FirstNewMax    float64        `json:"signal_to_first_new_response_max_ms"`
	OverallP50     float64        `json:"p50_ms"`
	OverallP99     float64        `json:"p99_ms"`
	OverallMax     float64        `json:"max_ms"`
	SteadyP50      float64        `json:"steady_p50_ms"`
	SteadyP99      float64        `json:"steady_p99_ms"`
	RestartP99     float64        `json:"restart_window_p99_ms"`
	RestartMax     float64        `json:"restart_window_max_ms"`
	SlowExtraMax   float64        `json:"slow_request_extra_max_ms"`
	LongestGap     float64        `json:"longest_gap_ms"`
	DrainMedian    float64        `json:"restart_done_median_ms"`
	PerWorker      float64        `json:"per_worker_replaced_median_ms,omitempty"`
	// NewDials counts the connections the keep-alive clients (POST and
	// slow) opened after their first, per client and per restart: 1 when
	// every restart closes every keep-alive connection, 0 when none does.
	NewDials  float64 `json:"keepalive_new_dials_per_client_per_restart"`
	FDFirst   int     `json:"fds_first_process_idle"`
	FDLast    int     `json:"fds_last_process_idle"`
	Leftovers int     `json:"leftover_processes"`
}

type report struct {
	Date       string             `json:"date"`
	Machine    string             `json:"machine"`
	Config     config             `json:"config"`
	Throughput []throughput       `json:"throughput"`
	Unpinned   unpinned           `json:"unpinned_throughput"`
	MemoryMB   map[string]float64 `json:"resident_memory_mb"`
	Restarts   []restarts         `json:"restarts"`
	GRPC       []grpcRestarts     `json:"grpc_restarts,omitempty"` // grpc.go
}

func main() {
	var cfg config
	short := flag.Bool("short", false, "smoke test: few restarts, short rounds, fail on any failed request")
	out := flag.String("out", "", "directory to write hotrestart.md and hotrestart.json to")
	flag.IntVar(&cfg.Restarts, "restarts", 20, "hot restarts under load")
	flag.IntVar(&cfg.Rounds, "rounds", 10, "throughput rounds per target, alternating")
	flag.DurationVar(&cfg.RoundTime, "round", 2*time.Second, "length of a throughput round")
	flag.IntVar(&cfg.Concurrency, "c", 8, "clients for the throughput rounds")
	flag.IntVar(&cfg.SlowMS, "slow", 200, "length of the slow requests in flight across restarts, ms")
	flag.IntVar(&cfg.KeepAlive, "ka", 4, "keep-alive POST clients (never retrying) during restarts")
	flag.IntVar(&cfg.Fresh, "fresh", 2, "new-connection clients during restarts")
	flag.IntVar(&cfg.SlowClients, "slowc", 2, "clients of slow requests during restarts")
	tpOnly := flag.Bool("throughput", false, "run only the pinned throughput rounds")
	flag.StringVar(&cfg.Only, "only", "", "run only the restart rows whose name contains this (or one of its |-separated parts), and no throughput rounds")
	flag.Parse()
	cfg.ThroughputOnly = *tpOnly
	if *short {
		cfg.Restarts, cfg.Rounds, cfg.RoundTime = 5, 2, time.Second
	}
	if err := run(cfg, *out, *short); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(cfg config, out string, short bool) error {
	if err := proc.BecomeSubreaper(); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "graceful-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bins := map[string]string{}
	for _, name := range []string{"plain", "graceful", "gracehttp", "tableflip", "grpc-tableflip", "grpc-graceful"} {
		bins[name] = filepath.Join(dir, name)
		if err := proc.Build(".", "./targets/"+name, bins[name]); err != nil {
			return err
		}
	}
	rep := report{Date: time.Now().UTC().Format(time.RFC3339), Machine: machine(), Config: cfg, MemoryMB: map[string]float64{}}

	for _, clients := range []string{"keep-alive", "new connection"} {
		if cfg.Only != "" {
			break
		}
		tp, err := measureThroughput(cfg, bins, dir, clients)
		if err != nil {
			return err
		}
		rep.Throughput = append(rep.Throughput, tp)
	}
	if cfg.ThroughputOnly {
		fmt.Print(markdown(rep))
		return nil
	}
	if cfg.Only == "" {
		if rep.Unpinned, err = measureCluster(cfg, bins, dir, rep.MemoryMB); err != nil {
			return err
		}
	}
	g := bins["graceful"]
	info := []string{"GRACEFUL_LOG=info"}
	targets := []target{
		{name: "plain net/http, stop and start", bin: bins["plain"], signal: "SIGTERM", restart: naiveRestart(dir)},
		{name: "facebookgo/grace gracehttp", bin: bins["gracehttp"], signal: "SIGUSR2", restart: hotRestart(true)},
		{name: "cloudflare/tableflip", bin: bins["tableflip"], signal: "SIGUSR2", restart: hotRestart(true)},
		{name: "graceful, single", bin: g, env: info, signal: "SIGUSR2", ours: true, restart: hotRestart(true)},
		{name: "graceful, single, NoHandOff", bin: g, env: append(info, "NO_HANDOFF=1"), signal: "SIGUSR2", ours: true, restart: hotRestart(true)},
		{name: "graceful, Workers 1, phased", bin: g, env: append(info, "WORKERS=1"), workers: 1, signal: "SIGUSR1", ours: true, restart: phasedRestart(1)},
		{name: "graceful, Workers 2, phased", bin: g, env: append(info, "WORKERS=2"), workers: 2, signal: "SIGUSR1", ours: true, restart: phasedRestart(2)},
		{name: "graceful, Workers 2, phased, NoHandOff", bin: g, env: append(info, "WORKERS=2", "NO_HANDOFF=1"), workers: 2, signal: "SIGUSR1", ours: true, restart: phasedRestart(2)},
		{name: "graceful, Workers 4, phased", bin: g, env: append(info, "WORKERS=4"), workers: 4, signal: "SIGUSR1", ours: true, restart: phasedRestart(4)},
		{name: "graceful, Workers 1, hot", bin: g, env: append(info, "WORKERS=1"), workers: 1, signal: "SIGUSR2", ours: true, restart: hotRestart(false)},
		{name: "graceful, Workers 2, hot", bin: g, env: append(info, "WORKERS=2"), workers: 2, signal: "SIGUSR2", ours: true, restart: hotRestart(false)},
		{name: "graceful, Workers 4, hot", bin: g, env: append(info, "WORKERS=4"), workers: 4, signal: "SIGUSR2", ours: true, restart: hotRestart(false)},
	}
	targets = append(targets, pumaTargets()...)
	for _, t := range targets {
		if short && !t.ours || !matches(t.name, cfg.Only) {
			continue
		}
		r, err := measureRestarts(cfg, t, dir)
		if err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		r.Ours = t.ours
		rep.Restarts = append(rep.Restarts, r)
		fmt.Fprintf(os.Stderr, "bench: %s: %d requests, %d failed\n", t.name, r.Requests, r.Failed)
	}
	if rep.GRPC, err = runGRPC(cfg, bins, dir, short); err != nil { // the gRPC rows: grpc.go
		return err
	}

	md := markdown(rep)
	fmt.Print(md)
	if out != "" {
		if err := os.MkdirAll(out, 0o755); err != nil {
			return err
		}
		js, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(filepath.Join(out, "hotrestart.json"), append(js, '\n'), 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, "hotrestart.md"), []byte(md), 0o644); err != nil {
			return err
		}
	}
	if short {
		for _, r := range rep.Restarts {
			if r.Ours && (r.Failed > 0 || r.Leftovers > 0) {
				return fmt.Errorf("%s: %d failed requests, %d leftover processes", r.Name, r.Failed, r.Leftovers)
			}
		}
		for _, r := range rep.GRPC {
			if r.Ours && (r.Failed > 0 || r.Leftovers > 0) {
				return fmt.Errorf("%s: %d failed RPCs, %d leftover processes", r.Name, r.Failed, r.Leftovers)
			}
		}
	}
	return nil
}

// measureThroughput alternates rounds of the same closed-loop load on the
// plain and the graceful target, with wrk where it is installed (it costs
// the machine less than a Go client), else with loadgen.
func measureThroughput(cfg config, bins map[string]string, dir, clients string) (throughput, error) {
	tp := throughput{Clients: clients, Tool: "loadgen"}
	wrk, _ := exec.LookPath("wrk")
	if wrk != "" {
		tp.Tool = "wrk"
	}
	// With taskset and two or more CPUs, the server gets CPU 0 alone and
	// the load the other, so the server's own cost is what is measured.
	var serverWrap, loadWrap []string
	var env []string
	if ts, err := exec.LookPath("taskset"); err == nil && runtime.NumCPU() >= 2 {
		serverWrap, loadWrap = []string{ts, "-c", "0"}, []string{ts, "-c", "1-" + strconv.Itoa(runtime.NumCPU()-1)}
		env = []string{"GOMAXPROCS=1"}
		tp.Tool += ", server pinned to CPU 0 with GOMAXPROCS=1, load on the others"
	}
	p99 := map[string][]float64{}
	cpu, reqs := map[string]time.Duration{}, map[string]float64{}
	var ratios []float64
	for i := 0; i < cfg.Rounds; i++ {
		for _, name := range []string{"plain", "graceful"} {
			s, err := proc.StartWrapped(serverWrap, bins[name], dir, env)
			if err != nil {
				return tp, err
			}
			var rps, q99 float64
			cpu0, _ := proc.CPUTime(s.PID())
			if wrk != "" {
				rps, q99, err = runWrk(append(loadWrap, wrk), s.Addr(), cfg, clients == "keep-alive")
			} else {
				rps, q99 = runLoadgen(s.Addr(), cfg, clients == "keep-alive")
			}
			cpu1, _ := proc.CPUTime(s.PID())
			cpu[name] += cpu1 - cpu0
			reqs[name] += rps * cfg.RoundTime.Seconds()
			syscall.Kill(s.PID(), syscall.SIGKILL)
			proc.WaitGone(s.PID(), 10*time.Second)
			if err != nil {
				return tp, err
			}
			if name == "plain" {
				tp.Plain = append(tp.Plain, rps)
			} else {
				tp.Graceful = append(tp.Graceful, rps)
				ratios = append(ratios, rps/tp.Plain[len(tp.Plain)-1])
			}
			p99[name] = append(p99[name], q99)
		}
	}
	sort.Float64s(ratios)
	tp.Ratio, tp.RatioMin, tp.RatioMax = ratios[len(ratios)/2], ratios[0], ratios[len(ratios)-1]
	if len(ratios)%2 == 0 {
		tp.Ratio = (ratios[len(ratios)/2-1] + ratios[len(ratios)/2]) / 2
	}
	tp.PlainP99, tp.GracefulP99 = median(p99["plain"]), median(p99["graceful"])
	if reqs["plain"] > 0 && reqs["graceful"] > 0 {
		tp.PlainCPU = float64(cpu["plain"].Microseconds()) / reqs["plain"]
		tp.GracefulCPU = float64(cpu["graceful"].Microseconds()) / reqs["graceful"]
		if tp.GracefulCPU > 0 {
			tp.CPURatio = tp.PlainCPU / tp.GracefulCPU
		}
	}
	return tp, nil
}

func runLoadgen(addr string, cfg config, keepAlive bool) (rps, p99 float64) {
	lc := loadgen.Config{Addr: addr, Duration: cfg.RoundTime}
	if keepAlive {
		lc.KeepAlive = cfg.Concurrency
	} else {
		lc.Fresh = cfg.Concurrency
	}
	begin := time.Now()
	res := loadgen.Start(lc).Wait()
	return float64(res.Requests()-res.Failed()) / time.Since(begin).Seconds(), ms(loadgen.Quantile(res.Latencies(nil), 0.99))
}

// runWrk runs wrk with two threads and returns its requests per second and
// 99th percentile latency in ms.
func runWrk(wrk []string, addr string, cfg config, keepAlive bool) (rps, p99 float64, err error) {
	args := append(wrk[1:], "-t2", fmt.Sprintf("-c%d", cfg.Concurrency), fmt.Sprintf("-d%ds", int(cfg.RoundTime.Seconds())), "--latency")
	if !keepAlive {
		args = append(args, "-H", "Connection: close")
	}
	out, err := exec.Command(wrk[0], append(args, "http://"+addr+"/")...).CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			rps, _ = strconv.ParseFloat(f[1], 64)
		case len(f) == 2 && f[0] == "99%":
			p99 = parseWrkDuration(f[1])
		case len(f) >= 4 && f[0] == "Socket" && f[1] == "errors:":
			return 0, 0, fmt.Errorf("wrk saw errors: %s", l)
		}
	}
	if rps == 0 {
		return 0, 0, fmt.Errorf("no rate in wrk output:\n%s", out)
	}
	return rps, p99, nil
}

// parseWrkDuration turns wrk's "1.23ms", "456.00us" or "1.20s" into ms.
func parseWrkDuration(s string) float64 {
	for _, u := range []struct {
		suffix string
		ms     float64
	}{{"us", 0.001}, {"ms", 1}, {"s", 1000}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f * u.ms
		}
	}
	return 0
}

func median(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	y := append([]float64{}, x...)
	sort.Float64s(y)
	return y[len(y)/2]
}

// unpinned is throughput with nothing pinned: what each mode costs or
// gains on this machine as a whole, with the load generator on the same
// CPUs.
type unpinned struct {
	Tool  string               `json:"tool"`
	RPS   map[string]float64   `json:"rps"`            // median per mode
	P99   map[string]float64   `json:"p99_ms"`         // median per mode
	Ratio map[string][]float64 `json:"ratio_to_plain"` // median, min, max of per-round ratios
}

var unpinnedModes = []string{"plain net/http", "graceful, single", "graceful, Workers 2"}

// measureCluster measures plain net/http, graceful single and graceful
// Workers 2 in alternating rounds, none pinned, with keep-alive clients.
func measureCluster(cfg config, bins map[string]string, dir string, mem map[string]float64) (unpinned, error) {
	u := unpinned{Tool: "loadgen", RPS: map[string]float64{}, P99: map[string]float64{}, Ratio: map[string][]float64{}}
	wrk, _ := exec.LookPath("wrk")
	if wrk != "" {
		u.Tool = "wrk"
	}
	rps, p99, ratios := map[string][]float64{}, map[string][]float64{}, map[string][]float64{}
	for i := 0; i < cfg.Rounds; i++ {
		for _, mode := range unpinnedModes {
			bin, env := bins["graceful"], []string(nil)
			switch mode {
			case "plain net/http":
				bin = bins["plain"]
			case "graceful, Workers 2":
				env = []string{"WORKERS=2"}
			}
			s, err := proc.Start(bin, dir, env)
			if err != nil {
				return u, err
			}
			if env != nil {
				if err := waitWorkers(s, 2); err != nil {
					s.Kill()
					return u, err
				}
			}
			var r, q float64
			if wrk != "" {
				r, q, err = runWrk([]string{wrk}, s.Addr(), cfg, true)
			} else {
				r, q = runLoadgen(s.Addr(), cfg, true)
			}
			if i == 0 {
				// Resident memory after a round of load.
				rss, _ := proc.RSS(s.PID())
				switch mode {
				case "graceful, Workers 2":
					mem["graceful, master of Workers 2"] = mb(rss)
					for _, pid := range proc.Running(bin) {
						if pid != s.PID() {
							rss, _ := proc.RSS(pid)
							mem["graceful, worker of Workers 2"] = mb(rss)
						}
					}
				default:
					mem[mode] = mb(rss)
				}
			}
			s.Kill()
			if err != nil {
				return u, err
			}
			rps[mode] = append(rps[mode], r)
			p99[mode] = append(p99[mode], q)
			if mode != "plain net/http" {
				ratios[mode] = append(ratios[mode], r/rps["plain net/http"][i])
			}
		}
	}
	for _, mode := range unpinnedModes {
		u.RPS[mode], u.P99[mode] = median(rps[mode]), median(p99[mode])
		if r := ratios[mode]; len(r) > 0 {
			sort.Float64s(r)
			u.Ratio[mode] = []float64{median(r), r[0], r[len(r)-1]}
		}
	}
	return u, nil
}

// waitWorkers waits until a cluster has n workers serving: n distinct PIDs
// answer fresh requests.
func waitWorkers(s *proc.Server, n int) error {
	deadline := time.Now().Add(20 * time.Second)
	seen := map[string]bool{}
	c := &loadgen.Client{Network: "tcp", Addr: s.Addr(), Timeout: 5 * time.Second}
	for len(seen) < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d workers serving after 20 s", len(seen), n)
		}
		if sm := c.Do("GET", "/", nil, false); sm.Fail == "" {
			seen[sm.PID] = true
		}
	}
	return nil
}

// target is a server program and how to restart it.
type target struct {
	name    string
	bin     string
	exe     string // what /proc shows for its processes, when not bin
	env     []string
	workers int
	signal  string
	ours    bool // a graceful row: -short fails if it loses a request
	// restart restarts s and waits until the restart is done. It returns
	// the server as it is afterwards (a naive restart starts a new one)
	// and, where one process replaces another, a test for responses from
	// the new one.
	restart func(s *proc.Server) (*proc.Server, func(loadgen.Sample) bool, time.Duration, error)
}

// hotRestart is SIGUSR2 for servers whose successor writes the pidfile:
// done when the old process has exited.
func hotRestart(newPIDAnswers bool) func(*proc.Server) (*proc.Server, func(loadgen.Sample) bool, time.Duration, error) {
	return func(s *proc.Server) (*proc.Server, func(loadgen.Sample) bool, time.Duration, error) {
		old, pid, err := s.Restart(30 * time.Second)
		if err != nil {
			return s, nil, 0, err
		}
		if err := proc.WaitGone(old, 60*time.Second); err != nil {
			return s, nil, 0, err
		}
		if !newPIDAnswers {
			return s, nil, 0, nil
		}
		p := strconv.Itoa(pid)
		return s, func(sm loadgen.Sample) bool { return sm.PID == p }, 0, nil
	}
}

// phasedRestart is SIGUSR1 to a graceful master: done when the master
// reports the phase complete.
func phasedRestart(workers int) func(*proc.Server) (*proc.Server, func(loadgen.Sample) bool, time.Duration, error) {
	phase := 0
	return func(s *proc.Server) (*proc.Server, func(loadgen.Sample) bool, time.Duration, error) {
		phase++
		if err := syscall.Kill(s.PID(), syscall.SIGUSR1); err != nil {
			return s, nil, 0, err
		}
		d, err := waitPhase(s, phase)
		return s, nil, d / time.Duration(workers), err
	}
}

// naiveRestart stops the server with SIGTERM and starts a new one on the
// same port: what a deploy without a restart library does.
func naiveRestart(dir string) func(*proc.Server) (*proc.Server, func(loadgen.Sample) bool, time.Duration, error) {
	return func(s *proc.Server) (*proc.Server, func(loadgen.Sample) bool, time.Duration, error) {
		old := s.PID()
		syscall.Kill(old, syscall.SIGTERM)
		if err := proc.WaitGone(old, 30*time.Second); err != nil {
			return s, nil, 0, err
		}
		ns, err := proc.StartOn(s.Port, nil, s.Bin, dir, nil)
		if err != nil {
			return s, nil, 0, err
		}
		p := strconv.Itoa(ns.PID())
		return ns, func(sm loadgen.Sample) bool { return sm.PID == p }, 0, nil
	}
}

// logRestart sends sig and waits until the server's output holds delta
// more of what count counts: for Puma, whose PID a hot restart keeps.
func logRestart(sig syscall.Signal, count func(string) int, delta, workers int) func(*proc.Server) (*proc.Server, func(loadgen.Sample) bool, time.Duration, error) {
	return func(s *proc.Server) (*proc.Server, func(loadgen.Sample) bool, time.Duration, error) {
		before := count(s.Output.String())
		at := time.Now()
		if err := syscall.Kill(s.PID(), sig); err != nil {
			return s, nil, 0, err
		}
		for deadline := time.Now().Add(60 * time.Second); count(s.Output.String()) < before+delta; time.Sleep(2 * time.Millisecond) {
			if time.Now().After(deadline) {
				return s, nil, 0, fmt.Errorf("restart not done after 60 s")
			}
		}
		var per time.Duration
		if workers > 0 && sig == syscall.SIGUSR1 {
			per = time.Since(at) / time.Duration(workers)
		}
		return s, nil, per, nil
	}
}

func counter(marker string) func(string) int {
	return func(out string) int { return strings.Count(out, marker) }
}

// pumaTargets are the Puma rows, where Debian's puma is installed.
func pumaTargets() []target {
	if _, err := exec.LookPath("puma"); err != nil {
		return nil
	}
	ruby, err := exec.LookPath("ruby")
	if err == nil {
		ruby, err = filepath.EvalSymlinks(ruby)
	}
	if err != nil {
		return nil
	}
	run, err := filepath.Abs("targets/puma/run.sh")
	if err != nil {
		return nil
	}
	v, _ := exec.Command("puma", "--version").Output()
	name := "Puma " + strings.TrimPrefix(strings.TrimSpace(string(v)), "puma version ")
	booted := counter("booted in")
	return []target{
		{name: name + ", single", bin: run, exe: ruby, signal: "SIGUSR2", restart: logRestart(syscall.SIGUSR2, counter("Use Ctrl-C to stop"), 1, 0)},
		{name: name + ", 2 workers, phased", bin: run, exe: ruby, env: []string{"WORKERS=2"}, workers: 2, signal: "SIGUSR1", restart: logRestart(syscall.SIGUSR1, booted, 2, 2)},
		{name: name + ", 2 workers, hot", bin: run, exe: ruby, env: []string{"WORKERS=2"}, workers: 2, signal: "SIGUSR2", restart: logRestart(syscall.SIGUSR2, booted, 2, 2)},
	}
}

// measureRestarts restarts t under load, cfg.Restarts times, and measures
// what the restarts cost the clients.
func measureRestarts(cfg config, t target, dir string) (restarts, error) {
	r := restarts{Name: t.name, Count: cfg.Restarts, Workers: t.workers, Signal: t.signal}
	s, err := proc.Start(t.bin, dir, t.env)
	if err != nil {
		return r, err
	}
	defer func() { s.Kill() }()
	if t.workers > 0 {
		if err := waitWorkers(s, t.workers); err != nil {
			return r, err
		}
	}
	r.FDFirst, _ = proc.FDCount(s.PID())
	gen := loadgen.Start(loadgen.Config{
		Addr: s.Addr(), KeepAlive: cfg.KeepAlive, Fresh: cfg.Fresh, Slow: cfg.SlowClients,
		SlowPath: fmt.Sprintf("/sleep?ms=%d", cfg.SlowMS),
		Duration: 5*time.Minute + time.Duration(cfg.Restarts)*time.Second,
	})
	steadyFrom := time.Now()
	time.Sleep(time.Second) // steady-state measuring period
	steadyTo := time.Now()

	type restart struct {
		signal, done time.Time
		firstNew     func(loadgen.Sample) bool
	}
	var rs []restart
	var took, perWorker []time.Duration
	for i := 0; i < cfg.Restarts; i++ {
		at := time.Now()
		ns, firstNew, per, err := t.restart(s)
		s = ns
		if err != nil {
			gen.Stop()
			return r, fmt.Errorf("restart %d: %w\n%s", i+1, err, s.Output)
		}
		if per > 0 {
			perWorker = append(perWorker, per)
		}
		x := restart{signal: at, done: time.Now(), firstNew: firstNew}
		took = append(took, x.done.Sub(at))
		rs = append(rs, x)
		time.Sleep(200 * time.Millisecond) // spacing between restarts, part of the load's shape
	}
	res := gen.Stop()
	// Descriptors of the serving process once the clients have hung up.
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if r.FDLast, _ = proc.FDCount(s.PID()); r.FDLast <= r.FDFirst {
			break
		}
	}
	if err := s.Stop(30 * time.Second); err != nil {
		return r, err
	}
	exe := t.exe
	if exe == "" {
		exe = t.bin
	}
	r.Leftovers = len(proc.Running(exe))

	r.Requests, r.Failed, r.Failures = res.Requests(), res.Failed(), res.Failures()
	for _, d := range res.FailureDetails(5) {
		fmt.Fprintf(os.Stderr, "bench: %s: failed: %s\n", t.name, d)
	}
	var firstNew []time.Duration
	for _, x := range rs {
		if x.firstNew == nil {
			continue
		}
		for _, sm := range res.Samples {
			if sm.Fail == "" && x.firstNew(sm) {
				firstNew = append(firstNew, sm.Start.Add(sm.Latency).Sub(x.signal))
				break
			}
		}
	}
	sortD(firstNew)
	r.FirstNewMedian, r.FirstNewMax = ms(loadgen.Quantile(firstNew, 0.5)), ms(last(firstNew))
	all := res.Latencies(nil)
	r.OverallP50, r.OverallP99, r.OverallMax = ms(loadgen.Quantile(all, 0.5)), ms(loadgen.Quantile(all, 0.99)), ms(last(all))
	steady := res.Latencies(func(sm loadgen.Sample) bool { return sm.Start.After(steadyFrom) && sm.Start.Before(steadyTo) })
	r.SteadyP50, r.SteadyP99 = ms(loadgen.Quantile(steady, 0.5)), ms(loadgen.Quantile(steady, 0.99))
	inWindow := func(sm loadgen.Sample) bool {
		for _, x := range rs {
			if (loadgen.Window{From: x.signal, To: x.done}).In(sm) {
				return true
			}
		}
		return false
	}
	during := res.Latencies(inWindow)
	spikes(t.name, res, rs2windows(rs, func(x restart) (time.Time, time.Time) { return x.signal, x.done }))
	r.RestartP99, r.RestartMax = ms(loadgen.Quantile(during, 0.99)), ms(last(during))
	for _, sm := range res.Samples {
		if sm.Slow && sm.Fail == "" && inWindow(sm) {
			r.SlowExtraMax = max(r.SlowExtraMax, ms(sm.Latency)-float64(cfg.SlowMS))
		}
	}
	r.LongestGap = ms(res.LongestGap())
	if ka := cfg.KeepAlive + cfg.SlowClients; ka > 0 && cfg.Restarts > 0 {
		dials := res.Count(func(sm loadgen.Sample) bool { return !sm.Fresh && !sm.Reused })
		r.NewDials = float64(max(dials-ka, 0)) / float64(ka*cfg.Restarts)
	}
	sortD(took)
	r.DrainMedian = ms(loadgen.Quantile(took, 0.5))
	sortD(perWorker)
	r.PerWorker = ms(loadgen.Quantile(perWorker, 0.5))
	return r, nil
}

// matches reports whether name contains one of the |-separated parts of
// only.
func matches(name, only string) bool {
	for _, part := range strings.Split(only, "|") {
		if strings.Contains(name, part) {
			return true
		}
	}
	return false
}

// rs2windows lists the restarts' windows.
func rs2windows[T any](rs []T, span func(T) (time.Time, time.Time)) []loadgen.Window {
	var ws []loadgen.Window
	for _, x := range rs {
		from, to := span(x)
		ws = append(ws, loadgen.Window{From: from, To: to})
	}
	return ws
}

// spikes prints on stderr the slowest requests in the restarts' windows:
// which client sent them, and when, from the signal, so that the latency
// spike at a restart can be traced (the new process's start, a hand-off,
// a new connection).
func spikes(name string, res *loadgen.Result, ws []loadgen.Window) {
	type hit struct {
		s  loadgen.Sample
		at time.Duration
	}
	var hits []hit
	for _, sm := range res.Samples {
		for _, w := range ws {
			if sm.Fail == "" && !sm.Slow && w.In(sm) {
				hits = append(hits, hit{sm, sm.Start.Sub(w.From)})
				break
			}
		}
	}
	sort.Slice(hits, func(i, j int) bool { return hits[i].s.Latency > hits[j].s.Latency })
	for _, h := range hits[:min(len(hits), 3)] {
		kind := "keep-alive"
		if h.s.Fresh {
			kind = "new connection"
		}
		fmt.Fprintf(os.Stderr, "bench: %s: slow in a restart: %s, %s, sent %s after the signal, reused %v, pid %s\n",
			name, h.s.Latency.Round(10*time.Microsecond), kind, h.at.Round(100*time.Microsecond), h.s.Reused, h.s.PID)
	}
}

// waitPhase waits for the master's log to say phase n completed, and
// returns how long the master says it took.
func waitPhase(s *proc.Server, n int) (time.Duration, error) {
	want := fmt.Sprintf("gen=%d took=", n)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		out := s.Output.String()
		for _, line := range strings.Split(out, "\n") {
			if i := strings.Index(line, want); i >= 0 && strings.Contains(line, "phased restart complete") {
				if f := strings.Fields(line[i+len(want):]); len(f) > 0 {
					return time.ParseDuration(f[0])
				}
			}
		}
		if strings.Contains(out, "phased restart stopped") {
			return 0, fmt.Errorf("phase %d failed:\n%s", n, out)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return 0, fmt.Errorf("phase %d not complete after 60 s", n)
}

func markdown(rep report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# graceful hot-restart benchmark\n\n%s, %s. Command: `cd bench && go run . %s`.\n\n", rep.Date, rep.Machine, strings.Join(os.Args[1:], " "))
	fmt.Fprintf(&b, "## Throughput, no restarts (%d clients, %d × %s rounds each, alternating)\n\n", rep.Config.Concurrency, rep.Config.Rounds, rep.Config.RoundTime)
	if len(rep.Throughput) > 0 {
		fmt.Fprintf(&b, "Load from %s.\n\n", rep.Throughput[0].Tool)
	}
	fmt.Fprintln(&b, "| clients | plain net/http req/s | graceful req/s | graceful / plain, median of rounds (min–max) | server CPU per request, plain / graceful | plain / graceful CPU (throughput at equal CPU) | plain p99 | graceful p99 |")
	fmt.Fprintln(&b, "|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, t := range rep.Throughput {
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | **%.3f** (%.3f–%.3f) | %.1f / %.1f µs | **%.3f** | %.2f ms | %.2f ms |\n", t.Clients, median(t.Plain), median(t.Graceful), t.Ratio, t.RatioMin, t.RatioMax, t.PlainCPU, t.GracefulCPU, t.CPURatio, t.PlainP99, t.GracefulP99)
	}
	u := rep.Unpinned
	fmt.Fprintf(&b, "\n## Throughput with nothing pinned, no restarts (%s, keep-alive, %d clients)\n\n", u.Tool, rep.Config.Concurrency)
	fmt.Fprintln(&b, "| server | req/s | against plain net/http, median (min–max) | p99 |")
	fmt.Fprintln(&b, "|---|---:|---:|---:|")
	for _, mode := range unpinnedModes {
		ratio := "1"
		if r := u.Ratio[mode]; len(r) == 3 {
			ratio = fmt.Sprintf("**%.3f** (%.3f–%.3f)", r[0], r[1], r[2])
		}
		fmt.Fprintf(&b, "| %s | %.0f | %s | %.2f ms |\n", mode, u.RPS[mode], ratio, u.P99[mode])
	}
	if len(rep.MemoryMB) > 0 {
		fmt.Fprintf(&b, "\nResident memory after the first round of load:")
		var names []string
		for n := range rep.MemoryMB {
			names = append(names, n)
		}
		sort.Strings(names)
		for i, n := range names {
			sep := ";"
			if i == len(names)-1 {
				sep = "."
			}
			fmt.Fprintf(&b, " %s %.1f MB%s", n, rep.MemoryMB[n], sep)
		}
		fmt.Fprintln(&b)
	}
	fmt.Fprintf(&b, "\n## Restarts under load\n\n")
	fmt.Fprintf(&b, "Each row: %d restarts, 200 ms apart, under %d keep-alive POST clients that never retry, %d new-connection clients and %d clients of %d ms requests. Latencies in ms.\n\n", rep.Config.Restarts, rep.Config.KeepAlive, rep.Config.Fresh, rep.Config.SlowClients, rep.Config.SlowMS)
	fmt.Fprintln(&b, "| server | signal | requests | failed | signal → new PID answers, median / max | restart done, median | per worker replaced | all p50 / p99 / max | steady p99 | during restarts p99 / max | max − steady p99 | slow requests' added latency, max | longest gap | new dials per keep-alive client per restart | fds before / after | leftovers |")
	fmt.Fprintln(&b, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rep.Restarts {
		firstNew, per := "–", "–"
		if r.FirstNewMax > 0 {
			firstNew = fmt.Sprintf("%.1f / %.1f", r.FirstNewMedian, r.FirstNewMax)
		}
		if r.PerWorker > 0 {
			per = fmt.Sprintf("%.0f", r.PerWorker)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | **%d** %s | %s | %.0f | %s | %.2f / %.2f / %.0f | %.2f | %.2f / %.2f | %.2f | %.2f | %.2f | %.2f | %d / %d | %d |\n",
			r.Name, r.Signal, r.Requests, r.Failed, kinds(r.Failures), firstNew, r.DrainMedian, per,
			r.OverallP50, r.OverallP99, r.OverallMax, r.SteadyP99, r.RestartP99, r.RestartMax, r.RestartMax-r.SteadyP99, r.SlowExtraMax, r.LongestGap, r.NewDials, r.FDFirst, r.FDLast, r.Leftovers)
	}
	fmt.Fprintln(&b, "\n\"new dials\" counts the connections the keep-alive clients (POST and slow) opened after their first one, per client and per restart: 1 when each restart ends each keep-alive connection, 0 when connection hand-off passes them all, open, to the new processes.")
	fmt.Fprintln(&b, "\n\"restart done\" is, for a hot restart, the time until the old process (master and workers) has exited; for a phased restart, until the master reports the phase complete (every worker replaced, the last old one told to drain).")
	if len(rep.GRPC) > 0 {
		b.WriteString(grpcMarkdown(rep.GRPC, rep.Config.Restarts))
	}
	return b.String()
}

func kinds(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(parts)
	return "(" + strings.Join(parts, ", ") + ")"
}

func machine() string {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				model = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d CPUs, %s %s/%s", model, runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func mb(b int64) float64 { return float64(b*10/(1<<20)) / 10 }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func sortD(d []time.Duration) { sort.Slice(d, func(i, j int) bool { return d[i] < d[j] }) }

func last(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[len(d)-1]
}
