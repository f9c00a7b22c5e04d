//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gograceful/graceful/internal/loadgen"
	"github.com/gograceful/graceful/internal/proc"
)

// The gRPC rows: the same gRPC load against tableflip's documented pattern
// and against graceful, restarted cfg.Restarts times.

// grpcClients is how many clients run the gRPC load, each on a
// connection of its own; grpcFresh of them open a new connection for
// every RPC, as short-lived clients do. grpcStream is how many messages
// each Count stream has (20 ms apart, so a stream lasts some 100 ms and
// many are in flight at every restart).
const (
	grpcClients = 16
	grpcFresh   = 4
	grpcStream  = 5
)

type grpcRestarts struct {
	Name        string         `json:"name"`
	Ours        bool           `json:"graceful"`
	Signal      string         `json:"signal"`
	Count       int            `json:"restarts"`
	RPCs        int            `json:"rpcs"`
	Failed      int            `json:"failed"`
	Failures    map[string]int `json:"failures"`
	SteadyRate  float64        `json:"steady_rpc_per_s"`
	RestartRate float64        `json:"restarts_rpc_per_s"`
	P50         float64        `json:"p50_ms"`
	P99         float64        `json:"p99_ms"`
	Max         float64        `json:"max_ms"`
	DoneMedian  float64        `json:"restart_done_median_ms"`
	Leftovers   int            `json:"leftover_processes"`
}

// grpcTargets are the gRPC rows.
func grpcTargets(bins map[string]string) []target {
	g := bins["grpc-graceful"]
	return []target{
		{name: "gRPC: cloudflare/tableflip, Fds.Listen + GracefulStop", bin: bins["grpc-tableflip"], signal: "SIGUSR2", restart: hotRestart(false)},
		{name: "gRPC: graceful, single", bin: g, signal: "SIGUSR2", ours: true, restart: hotRestart(false)},
		{name: "gRPC: graceful, Workers 2, phased", bin: g, env: []string{"WORKERS=2"}, workers: 2, signal: "SIGUSR1", ours: true, restart: phasedRestart(2)},
	}
}

// rpc is one RPC of the gRPC load.
type rpc struct {
	start   time.Time
	latency time.Duration
	fail    string // the status code, or what else went wrong; empty if it succeeded
}

// grpcLoad runs clients that never retry (retries disabled, no
// wait-for-ready), each alternating a unary health Check and a Count
// stream, until stopped.
type grpcLoad struct {
	stopc chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	rpcs  []rpc
}

func startGRPCLoad(addr string) (*grpcLoad, error) {
	l := &grpcLoad{stopc: make(chan struct{})}
	dial := func() (*grpc.ClientConn, error) {
		return grpc.NewClient("passthrough:///"+addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDisableRetry())
	}
	for c := range grpcClients {
		cc, err := dial()
		if err != nil {
			l.stop()
			return nil, err
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer func() { cc.Close() }()
			for i := 0; ; i++ {
				select {
				case <-l.stopc:
					return
				default:
				}
				if c < grpcFresh && i > 0 {
					cc.Close()
					if cc, err = dial(); err != nil {
						panic(err) // NewClient fails only for a malformed target or options
					}
				}
				hc := healthpb.NewHealthClient(cc)
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				r := rpc{start: time.Now()}
				var err error
				if i%2 == 0 {
					var resp *healthpb.HealthCheckResponse
					if resp, err = hc.Check(ctx, &healthpb.HealthCheckRequest{}); err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
						err = fmt.Errorf("health %v", resp.GetStatus())
					}
				} else {
					err = countStream(ctx, cc)
				}
				cancel()
				r.latency = time.Since(r.start)
				if err != nil {
					if s, ok := status.FromError(err); ok {
						r.fail = s.Code().String()
					} else {
						r.fail = err.Error()
					}
				}
				l.mu.Lock()
				l.rpcs = append(l.rpcs, r)
				l.mu.Unlock()
			}
		}()
	}
	return l, nil
}

// countStream runs a Count stream to its end: every message, then OK.
func countStream(ctx context.Context, cc *grpc.ClientConn) error {
	cs, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/bench.Counter/Count")
	if err != nil {
		return err
	}
	if err := cs.SendMsg(wrapperspb.UInt32(grpcStream)); err != nil {
		return err
	}
	if err := cs.CloseSend(); err != nil {
		return err
	}
	for n := 0; ; n++ {
		var m wrapperspb.StringValue
		err := cs.RecvMsg(&m)
		if err == io.EOF {
			if n != grpcStream {
				return fmt.Errorf("stream of %d messages, not %d", n, grpcStream)
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (l *grpcLoad) stop() []rpc {
	close(l.stopc)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rpcs
}

// measureGRPCRestarts restarts t under the gRPC load, cfg.Restarts times,
// 200 ms apart, after a second of load without restarts.
func measureGRPCRestarts(cfg config, t target, dir string) (grpcRestarts, error) {
	r := grpcRestarts{Name: t.name, Signal: t.signal, Count: cfg.Restarts, Ours: t.ours}
	s, err := proc.Start(t.bin, dir, t.env)
	if err != nil {
		return r, err
	}
	defer func() { s.Kill() }()
	if t.workers > 0 {
		if err := waitGRPCWorkers(s, t.workers); err != nil {
			return r, err
		}
	}
	l, err := startGRPCLoad(s.Addr())
	if err != nil {
		return r, err
	}
	steadyFrom := time.Now()
	time.Sleep(time.Second)
	steadyTo := time.Now()
	var took []time.Duration
	for i := 0; i < cfg.Restarts; i++ {
		at := time.Now()
		ns, _, _, err := t.restart(s)
		s = ns
		if err != nil {
			l.stop()
			return r, fmt.Errorf("restart %d: %w\n%s", i+1, err, s.Output)
		}
		took = append(took, time.Since(at))
		time.Sleep(200 * time.Millisecond)
	}
	restartsTo := time.Now()
	rpcs := l.stop()
	if err := s.Stop(30 * time.Second); err != nil {
		return r, err
	}
	r.Leftovers = len(proc.Running(t.bin))

	r.Failures = map[string]int{}
	var lat []time.Duration
	steady, during := 0, 0
	for _, x := range rpcs {
		r.RPCs++
		if x.fail != "" {
			r.Failed++
			r.Failures[x.fail]++
			continue
		}
		lat = append(lat, x.latency)
		switch end := x.start.Add(x.latency); {
		case !x.start.Before(steadyFrom) && end.Before(steadyTo):
			steady++
		case !x.start.Before(steadyTo) && end.Before(restartsTo):
			during++
		}
	}
	r.SteadyRate = float64(steady) / steadyTo.Sub(steadyFrom).Seconds()
	r.RestartRate = float64(during) / restartsTo.Sub(steadyTo).Seconds()
	sortD(lat)
	r.P50, r.P99, r.Max = ms(loadgen.Quantile(lat, 0.5)), ms(loadgen.Quantile(lat, 0.99)), ms(last(lat))
	sortD(took)
	r.DoneMedian = ms(loadgen.Quantile(took, 0.5))
	return r, nil
}

// waitGRPCWorkers waits until n worker processes run beside the master.
func waitGRPCWorkers(s *proc.Server, n int) error {
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if len(proc.Running(s.Bin)) == n+1 && strings.Count(s.Output.String(), "worker ready") >= n {
			return nil
		}
	}
	return fmt.Errorf("%d workers not ready after 20 s", n)
}

// runGRPC measures the gRPC rows whose name contains only (all if empty).
func runGRPC(cfg config, bins map[string]string, dir string, short bool) ([]grpcRestarts, error) {
	var rows []grpcRestarts
	for _, t := range grpcTargets(bins) {
		if short && !t.ours || !strings.Contains(t.name, cfg.Only) {
			continue
		}
		r, err := measureGRPCRestarts(cfg, t, dir)
		if err != nil {
			return rows, fmt.Errorf("%s: %w", t.name, err)
		}
		rows = append(rows, r)
		fmt.Fprintf(os.Stderr, "bench: %s: %d RPCs, %d failed\n", t.name, r.RPCs, r.Failed)
	}
	return rows, nil
}

// grpcMarkdown is the gRPC section of the report.
func grpcMarkdown(rows []grpcRestarts, restarts int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n## gRPC: restarts under load\n\n")
	fmt.Fprintf(&b, "Each row: 1 s without restarts, then %d restarts, 200 ms apart, under %d grpc-go clients, each on its own connection (%d of them a new one for every RPC), with retries disabled and no wait-for-ready, alternating a unary health Check and a server-streaming Count of %d messages 20 ms apart. A failed RPC is one that did not end with status OK (and, for a stream, all its messages). Latencies in ms. `cd bench && go run . -only gRPC` runs these rows alone.\n\n", restarts, grpcClients, grpcFresh, grpcStream)
	fmt.Fprintln(&b, "| server | signal | RPCs | failed | RPC/s without restarts | RPC/s during restarts | p50 / p99 / max | restart done, median | leftovers |")
	fmt.Fprintln(&b, "|---|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %d | **%d** %s | %.0f | %.0f | %.2f / %.2f / %.0f | %.0f | %d |\n",
			r.Name, r.Signal, r.RPCs, r.Failed, kinds(r.Failures), r.SteadyRate, r.RestartRate, r.P50, r.P99, r.Max, r.DoneMedian, r.Leftovers)
	}
	return b.String()
}
