// Package loadgen drives HTTP/1.1 load at a server on loopback and counts
// every failure. Its client speaks HTTP over a plain connection and never
// retries, so a request lost to a connection race is counted, not hidden the
// way net/http's transport hides it for idempotent requests.
package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Failure kinds.
const (
	Refused = "refused"
	Reset   = "reset"
	EOF     = "eof"
	Timeout = "timeout"
	Status  = "5xx"
	Other   = "other"
)

// Config says what load to drive. Every client stops at Duration or after
// MaxRequests, whichever comes first.
type Config struct {
	Network string // "tcp" (default) or "unix"
	Addr    string // host:port, or a socket path

	KeepAlive int // clients sending POST with a body on persistent connections
	Fresh     int // clients opening a new connection per request
	Slow      int // keep-alive clients sending GET SlowPath
	SlowPath  string

	Timeout     time.Duration // per request; default 5 s
	Duration    time.Duration // default 30 s
	MaxRequests int           // per client; default 1,000,000
}

// Sample is one request.
type Sample struct {
	Start   time.Time
	Latency time.Duration
	PID     string // X-Pid of the response
	Slow    bool
	Fresh   bool   // sent on a new connection
	Fail    string // "" or a failure kind
	Detail  string
}

// Gen is load under way.
type Gen struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	res    []Sample
	done   atomic.Int64
}

// Done returns how many requests have completed so far, failed or not, so
// that a test can wait for the load to be flowing.
func (g *Gen) Done() int { return int(g.done.Load()) }

// WaitDone waits until n more requests than now have completed, or the
// timeout passes, and reports whether they did.
func (g *Gen) WaitDone(n int, timeout time.Duration) bool {
	want := g.Done() + n
	deadline := time.Now().Add(timeout)
	for g.Done() < want {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// Start starts the clients.
func Start(cfg Config) *Gen {
	if cfg.Network == "" {
		cfg.Network = "tcp"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Duration == 0 {
		cfg.Duration = 30 * time.Second
	}
	if cfg.MaxRequests == 0 {
		cfg.MaxRequests = 1_000_000
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Duration)
	g := &Gen{cancel: cancel}
	run := func(method, path string, body []byte, keep, slow bool) {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			c := &Client{Network: cfg.Network, Addr: cfg.Addr, Timeout: cfg.Timeout}
			defer c.Close()
			var local []Sample
			for i := 0; i < cfg.MaxRequests && ctx.Err() == nil; i++ {
				s := c.Do(method, path, body, keep)
				g.done.Add(1)
				s.Slow, s.Fresh = slow, !keep
				local = append(local, s)
			}
			g.mu.Lock()
			g.res = append(g.res, local...)
			g.mu.Unlock()
		}()
	}
	for i := 0; i < cfg.KeepAlive; i++ {
		run("POST", "/", []byte("ping"), true, false)
	}
	for i := 0; i < cfg.Fresh; i++ {
		run("GET", "/", nil, false, false)
	}
	for i := 0; i < cfg.Slow; i++ {
		run("GET", cfg.SlowPath, nil, true, true)
	}
	return g
}

// Stop stops the clients, waits for their last requests and returns every
// sample.
func (g *Gen) Stop() *Result {
	stopped := time.Now()
	g.cancel()
	g.wg.Wait()
	sort.Slice(g.res, func(i, j int) bool { return g.res[i].Start.Before(g.res[j].Start) })
	return &Result{Samples: g.res, Stopped: stopped}
}

// Wait waits until the clients stop by themselves, at Duration or
// MaxRequests, and returns every sample.
func (g *Gen) Wait() *Result {
	g.wg.Wait()
	stopped := time.Now()
	g.cancel()
	sort.Slice(g.res, func(i, j int) bool { return g.res[i].Start.Before(g.res[j].Start) })
	return &Result{Samples: g.res, Stopped: stopped}
}

// Client is a minimal HTTP/1.1 client that never retries.
type Client struct {
	Network, Addr string
	Timeout       time.Duration

	conn net.Conn
	br   *bufio.Reader
}

// Close closes the client's connection.
func (c *Client) Close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// Do sends one request and reads its response. keep asks for the
// connection to be kept; the server's "Connection: close" is honoured.
func (c *Client) Do(method, path string, body []byte, keep bool) Sample {
	s := Sample{Start: time.Now()}
	pid, status, err := c.do(method, path, body, keep)
	s.Latency = time.Since(s.Start)
	s.PID = pid
	if err != nil {
		c.Close()
		s.Fail, s.Detail = Classify(err), err.Error()
	} else if status >= 500 {
		s.Fail, s.Detail = Status, fmt.Sprintf("status %d", status)
	}
	return s
}

func (c *Client) do(method, path string, body []byte, keep bool) (string, int, error) {
	if c.conn == nil {
		conn, err := net.DialTimeout(c.Network, c.Addr, c.Timeout)
		if err != nil {
			return "", 0, err
		}
		c.conn, c.br = conn, bufio.NewReader(conn)
	}
	c.conn.SetDeadline(time.Now().Add(c.Timeout))
	var req strings.Builder
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: loadgen\r\n", method, path)
	if body != nil {
		fmt.Fprintf(&req, "Content-Length: %d\r\n", len(body))
	}
	if !keep {
		req.WriteString("Connection: close\r\n")
	}
	req.WriteString("\r\n")
	req.Write(body)
	if _, err := io.WriteString(c.conn, req.String()); err != nil {
		return "", 0, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return "", 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", 0, err
	}
	if resp.Close || !keep {
		c.Close()
	}
	return resp.Header.Get("X-Pid"), resp.StatusCode, nil
}

// Classify names the kind of a request's error.
func Classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, os.ErrNotExist):
		return Refused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return Reset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return EOF
	case errors.As(err, &ne) && ne.Timeout():
		return Timeout
	}
	return Other
}

// Result is every sample of a run, in order of start.
type Result struct {
	Samples []Sample
	Stopped time.Time // when Stop was called
}

// Requests counts the samples.
func (r *Result) Requests() int { return len(r.Samples) }

// Failures counts the failed samples by kind.
func (r *Result) Failures() map[string]int {
	m := map[string]int{}
	for _, s := range r.Samples {
		if s.Fail != "" {
			m[s.Fail]++
		}
	}
	return m
}

// Failed counts the failed samples.
func (r *Result) Failed() int {
	n := 0
	for _, s := range r.Samples {
		if s.Fail != "" {
			n++
		}
	}
	return n
}

// FailureDetails describes up to n failures.
func (r *Result) FailureDetails(n int) []string {
	var out []string
	for _, s := range r.Samples {
		if s.Fail != "" && len(out) < n {
			out = append(out, fmt.Sprintf("%s %s after %s (slow %v): %s", s.Start.Format("15:04:05.000000"), s.Fail, s.Latency.Round(time.Microsecond), s.Slow, s.Detail))
		}
	}
	return out
}

// Window is a span of time, such as a restart.
type Window struct{ From, To time.Time }

// In reports whether a request overlapped w.
func (w Window) In(s Sample) bool {
	return s.Start.Before(w.To) && s.Start.Add(s.Latency).After(w.From)
}

// Latencies returns the latencies of the successful non-slow samples for
// which keep returns true, sorted.
func (r *Result) Latencies(keep func(Sample) bool) []time.Duration {
	var l []time.Duration
	for _, s := range r.Samples {
		if s.Fail == "" && !s.Slow && (keep == nil || keep(s)) {
			l = append(l, s.Latency)
		}
	}
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	return l
}

// Quantile returns the q-quantile of sorted latencies, 0 for none.
func Quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return sorted[i]
}

// PIDs returns the distinct X-Pid values of successful responses, in order
// of first appearance.
func (r *Result) PIDs() []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range r.Samples {
		if s.Fail == "" && s.PID != "" && !seen[s.PID] {
			seen[s.PID] = true
			out = append(out, s.PID)
		}
	}
	return out
}

// LongestGap returns the longest time, between the first request and the
// call to Stop, during which no request completed successfully.
func (r *Result) LongestGap() time.Duration {
	if len(r.Samples) == 0 {
		return 0
	}
	ends := []time.Time{r.Samples[0].Start, r.Stopped}
	for _, s := range r.Samples {
		if end := s.Start.Add(s.Latency); s.Fail == "" && end.Before(r.Stopped) {
			ends = append(ends, end)
		}
	}
	sort.Slice(ends, func(i, j int) bool { return ends[i].Before(ends[j]) })
	var gap time.Duration
	for i := 1; i < len(ends); i++ {
		if d := ends[i].Sub(ends[i-1]); d > gap {
			gap = d
		}
	}
	return gap
}
