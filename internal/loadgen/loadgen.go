// Package loadgen drives HTTP/1.1 load at a server on loopback and counts
// every failure. Its client speaks HTTP over a plain connection and never
// retries, so a request lost to a connection race is counted, not hidden the
// way net/http's transport hides it for idempotent requests.
//
// Besides clients that send back to back, it has idle clients: they pause
// between requests for random gaps around the server's DrainIdleTimeout and
// then reuse their connection without first checking whether the server
// closed it, so that a drain's handling of idle connections is exercised
// under load. A request sent after a short gap (under 3/4 of the timeout)
// must be answered; one sent after a long gap (1¼ to 2 times the timeout)
// may find its connection closed, which is counted apart (IdleClosed), not
// as a failure.
package loadgen

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
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
	Status  = "status" // an unexpected status code
	Body    = "body"   // a response the Check function refused
	Other   = "other"
)

// Config says what load to drive. Every client stops at Duration or after
// MaxRequests, whichever comes first.
type Config struct {
	Network string      // "tcp" (default) or "unix"
	Addr    string      // host:port, or a socket path
	TLS     *tls.Config // if set, HTTP/1.1 over TLS

	KeepAlive int // clients sending POST with a body on persistent connections
	Fresh     int // clients opening a new connection per request
	Slow      int // keep-alive clients sending GET SlowPath
	SlowPath  string

	// Idle clients send GET / on a persistent connection, pausing before
	// each request on a reused connection for a random gap in [0, ¾IdleGap)
	// or [1¼IdleGap, 2IdleGap). IdleGap should be the server's
	// DrainIdleTimeout; it is required when Idle is set.
	Idle    int
	IdleGap time.Duration

	// Check, if set, checks the body of every response with status 200;
	// an error it returns makes the request a failure of kind Body. pid is
	// the response's X-Pid header.
	Check func(path, pid string, body []byte) error

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
	Fresh   bool // sent by a client that opens a connection per request
	Idle    bool // sent by an idle client
	Client  int  // which client sent it, counted from 1 in Start
	Reused  bool // sent on a connection an earlier request used
	// Gap is how long the connection had been idle when the request was
	// sent on it, for a reused connection.
	Gap time.Duration
	// Closed: the response said "Connection: close".
	Closed bool
	// IdleClosed: the request was sent after a long gap on a connection
	// that the server had closed, and nothing of a response came back. A
	// client that never checks its idle connections loses such requests
	// with any server; they are not failures.
	IdleClosed bool
	Fail       string // "" or a failure kind
	Detail     string
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
	clients := 0
	run := func(method, path string, body []byte, keep, slow bool, idle int) {
		clients++
		id := clients
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			c := &Client{Network: cfg.Network, Addr: cfg.Addr, Timeout: cfg.Timeout, TLS: cfg.TLS, check: cfg.Check}
			defer c.Close()
			var rng *rand.Rand
			if idle > 0 {
				rng = rand.New(rand.NewPCG(uint64(idle), 0x6c6f6164))
			}
			var local []Sample
			for i := 0; i < cfg.MaxRequests && ctx.Err() == nil; i++ {
				if rng != nil && c.conn != nil {
					// Around the drain's idle timeout, but never
					// within a quarter of it: a request there could
					// meet the close either way.
					gap := time.Duration(rng.Float64() * 1.5 * float64(cfg.IdleGap))
					if gap >= cfg.IdleGap*3/4 {
						gap += cfg.IdleGap / 2
					}
					if !sleep(ctx, gap) {
						break
					}
				}
				s := c.Do(method, path, body, keep)
				g.done.Add(1)
				s.Slow, s.Fresh, s.Idle, s.Client = slow, !keep, idle > 0, id
				if s.Idle && s.Reused && s.Gap >= cfg.IdleGap*5/4 && c.lastRead == 0 && (s.Fail == EOF || s.Fail == Reset) {
					s.IdleClosed, s.Fail = true, ""
				}
				local = append(local, s)
			}
			g.mu.Lock()
			g.res = append(g.res, local...)
			g.mu.Unlock()
		}()
	}
	if cfg.Idle > 0 && cfg.IdleGap <= 0 {
		panic("loadgen: Idle clients need IdleGap")
	}
	for i := 0; i < cfg.KeepAlive; i++ {
		run("POST", "/", []byte("ping"), true, false, 0)
	}
	for i := 0; i < cfg.Fresh; i++ {
		run("GET", "/", nil, false, false, 0)
	}
	for i := 0; i < cfg.Slow; i++ {
		run("GET", cfg.SlowPath, nil, true, true, 0)
	}
	for i := 0; i < cfg.Idle; i++ {
		run("GET", "/", nil, true, false, i+1)
	}
	return g
}

// sleep waits for d or until ctx is done, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
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

// Client is a minimal HTTP/1.1 client that never retries, and never checks
// whether an idle connection is still open before it reuses it.
type Client struct {
	Network, Addr string
	Timeout       time.Duration
	TLS           *tls.Config // if set, HTTP/1.1 over TLS

	check    func(path, pid string, body []byte) error
	conn     net.Conn
	br       *bufio.Reader
	used     bool      // a request has been sent on conn
	idleFrom time.Time // when conn's last response ended
	lastRead int64     // bytes of the last request's response read
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
// Any status but 200 is a failure.
func (c *Client) Do(method, path string, body []byte, keep bool) Sample {
	s := Sample{Start: time.Now()}
	if c.conn != nil && c.used {
		s.Reused, s.Gap = true, s.Start.Sub(c.idleFrom)
	}
	r, err := c.do(method, path, body, keep)
	s.Latency = time.Since(s.Start)
	s.PID, s.Closed = r.pid, r.close
	switch {
	case err != nil:
		c.Close()
		s.Fail, s.Detail = Classify(err), err.Error()
	case r.status != http.StatusOK:
		s.Fail, s.Detail = Status, fmt.Sprintf("status %d: %.200q", r.status, r.body)
	case c.check != nil:
		if err := c.check(path, r.pid, r.body); err != nil {
			s.Fail, s.Detail = Body, err.Error()
		}
	}
	if s.Fail != "" && s.Reused {
		s.Detail += fmt.Sprintf(" (on a connection reused after %s idle)", s.Gap.Round(time.Millisecond))
	}
	return s
}

type response struct {
	pid    string
	status int
	close  bool
	body   []byte
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n *int64
}

func (cr countingReader) Read(p []byte) (int, error) {
	n, err := cr.r.Read(p)
	*cr.n += int64(n)
	return n, err
}

func (c *Client) do(method, path string, body []byte, keep bool) (response, error) {
	c.lastRead = 0
	if c.conn == nil {
		conn, err := net.DialTimeout(c.Network, c.Addr, c.Timeout)
		if err != nil {
			return response{}, err
		}
		if c.TLS != nil {
			conn = tls.Client(conn, c.TLS)
		}
		c.conn, c.used = conn, false
		c.br = bufio.NewReader(countingReader{conn, &c.lastRead})
	}
	c.used = true
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
		return response{}, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return response{}, err
	}
	r := response{pid: resp.Header.Get("X-Pid"), status: resp.StatusCode, close: resp.Close}
	r.body, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return r, err
	}
	if resp.Close || !keep {
		c.Close()
	}
	c.idleFrom = time.Now()
	return r, nil
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

// Served counts the requests that were answered as expected.
func (r *Result) Served() int {
	n := 0
	for _, s := range r.Samples {
		if s.Fail == "" && !s.IdleClosed {
			n++
		}
	}
	return n
}

// Count counts the samples for which keep returns true.
func (r *Result) Count(keep func(Sample) bool) int {
	n := 0
	for _, s := range r.Samples {
		if keep(s) {
			n++
		}
	}
	return n
}

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
		if s.Fail == "" && !s.IdleClosed && !s.Slow && (keep == nil || keep(s)) {
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
		if s.Fail == "" && !s.IdleClosed && s.PID != "" && !seen[s.PID] {
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
		if end := s.Start.Add(s.Latency); s.Fail == "" && !s.IdleClosed && end.Before(r.Stopped) {
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
