//go:build unix

package graceful

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The hand-off between two runners in one process: the channel between them
// stands in for the process layer.

// hoServed counts, across the runners of a test, how often each request id
// was served.
type hoServed struct {
	mu sync.Mutex
	n  map[string]int
}

func (s *hoServed) add(id string) {
	s.mu.Lock()
	if s.n == nil {
		s.n = map[string]int{}
	}
	s.n[id]++
	s.mu.Unlock()
}

// hoRunner starts a runner named name serving one cleartext server on a
// loopback listener; key, if set, is the listener's key (the successor's
// server serves the predecessor's address). Its handler answers
// "name id", where id is the request's query parameter; /slow waits for
// release (if set) or 2ms.
func hoRunner(t testing.TB, name string, key lnKey, count *hoServed, release chan struct{}, mod func(*http.Server)) *runner {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	if key == (lnKey{}) {
		key = lnKey{"tcp", l.Addr().String()}
	}
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       30 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			id := req.URL.Query().Get("id")
			if req.URL.Path == "/slow" {
				if release != nil {
					<-release
				} else {
					time.Sleep(2 * time.Millisecond)
				}
			}
			if count != nil {
				count.add(id)
			}
			fmt.Fprintf(w, "%s %s", name, id)
		}),
	}
	if mod != nil {
		mod(srv)
	}
	r := &runner{s: &Server{Server: srv}, log: discardLogger(), track: newTracker(), drainCh: make(chan struct{})}
	r.served = []*served{{srv: srv, l: l, key: key, useTLS: srv.TLSConfig != nil}}
	r.serve()
	t.Cleanup(func() {
		l.Close()
		srv.Close()
		r.track.closeAll()
	})
	return r
}

// forward adopts into to what from hands off (or, if to fails, back into
// from, as the process layer does), and returns the channel to hand off on.
func forward(t testing.TB, from, to *runner, adopted chan<- struct{}) chan handedConn {
	ch := make(chan handedConn)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for h := range ch {
			if to == nil || to.adopt(h) != nil {
				if err := from.adopt(h); err != nil {
					t.Errorf("taking back a connection: %v", err)
					h.file.Close()
				}
			}
			if adopted != nil {
				adopted <- struct{}{}
			}
		}
	}()
	t.Cleanup(func() {
		from.track.stopHandOff()
		close(ch)
		<-done
	})
	return ch
}

// hoClient is a raw keep-alive HTTP/1.1 client that never retries.
type hoClient struct {
	c  net.Conn
	br *bufio.Reader
}

func dialHO(t testing.TB, r *runner) *hoClient {
	c, err := net.Dial("tcp", r.served[0].l.Addr().String())
	require.NoError(t, err)
	c.SetDeadline(time.Now().Add(60 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &hoClient{c: c, br: bufio.NewReader(c)}
}

func reqText(path, id string) string {
	return "GET " + path + "?id=" + id + " HTTP/1.1\r\nHost: test\r\n\r\n"
}

func (h *hoClient) send(s string) error {
	_, err := io.WriteString(h.c, s)
	return err
}

// recv reads one response and returns its body and whether it said
// "Connection: close".
func (h *hoClient) recv() (body string, closing bool, err error) {
	resp, err := http.ReadResponse(h.br, nil)
	if err != nil {
		return "", false, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(b), resp.Close, err
}

func (h *hoClient) get(t testing.TB, path, id string) (body string, closing bool) {
	require.NoError(t, h.send(reqText(path, id)))
	body, conn, err := h.recv()
	require.NoError(t, err)
	return body, conn
}

func waitFor(t testing.TB, what string, cond func() bool) {
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestHandoffIdle: an idle keep-alive connection is handed to the other
// server: the client's next request, on the same connection (same local
// port), is answered by the successor, and the old side no longer holds it.
func TestHandoffIdle(t *testing.T) {
	require.NoError(t, handoffSupported())
	a := hoRunner(t, "A", lnKey{}, nil, nil, nil)
	b := hoRunner(t, "B", a.served[0].key, nil, nil, nil)
	adopted := make(chan struct{}, 1)
	ch := forward(t, a, b, adopted)

	cl := dialHO(t, a)
	port := cl.c.LocalAddr().String()
	body, _ := cl.get(t, "/", "1")
	assert.Equal(t, "A 1", body)
	a.draining.Store(true) // as the drain does
	a.track.handOff(ch)
	<-adopted
	body, closing := cl.get(t, "/", "2")
	assert.Equal(t, "B 2", body)
	assert.False(t, closing, "Connection: close")
	assert.Equal(t, port, cl.c.LocalAddr().String())
	assert.EqualValues(t, 1, a.track.handedN.Load())
	assert.EqualValues(t, 1, b.track.adoptedN.Load())
	waitFor(t, "the old side to close its copy", func() bool { return a.track.count() == 0 })
	body, _ = cl.get(t, "/", "3")
	assert.Equal(t, "B 3", body)
}

// TestHandoffNewConn: a connection that has sent nothing yet is handed
// too, and one handed in idle keeps the idle timeout, not
// ReadHeaderTimeout, until its first byte.
func TestHandoffNewConn(t *testing.T) {
	require.NoError(t, handoffSupported())
	short := func(s *http.Server) { s.ReadHeaderTimeout = 100 * time.Millisecond }
	a := hoRunner(t, "A", lnKey{}, nil, nil, short)
	b := hoRunner(t, "B", a.served[0].key, nil, nil, short)
	adopted := make(chan struct{}, 1)
	a.track.handOff(forward(t, a, b, adopted))
	cl := dialHO(t, a)
	<-adopted
	time.Sleep(300 * time.Millisecond) // past ReadHeaderTimeout, within IdleTimeout
	body, _ := cl.get(t, "/", "1")
	assert.Equal(t, "B 1", body)
}

// TestHandoffBusy: a connection serving a request when the hand-off begins
// is handed right after its response, which does not say
// "Connection: close".
func TestHandoffBusy(t *testing.T) {
	require.NoError(t, handoffSupported())
	release := make(chan struct{})
	a := hoRunner(t, "A", lnKey{}, nil, release, nil)
	b := hoRunner(t, "B", a.served[0].key, nil, nil, nil)
	adopted := make(chan struct{}, 1)
	ch := forward(t, a, b, adopted)

	cl := dialHO(t, a)
	require.NoError(t, cl.send(reqText("/slow", "1")))
	waitFor(t, "the request to be served", func() bool { return a.inflight.Load() == 1 })
	a.draining.Store(true)
	a.track.handOff(ch)
	select {
	case <-adopted:
		t.Fatal("handed off while serving a request")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	body, closing, err := cl.recv()
	require.NoError(t, err)
	assert.Equal(t, "A 1", body)
	assert.False(t, closing, "Connection: close")
	<-adopted
	body, _ = cl.get(t, "/", "2")
	assert.Equal(t, "B 2", body)
}

// TestHandoffReceiverFails: when the successor cannot adopt a connection,
// the old process takes it back and drains it as today: the client's next
// request is served, with "Connection: close", and nothing is lost.
func TestHandoffReceiverFails(t *testing.T) {
	require.NoError(t, handoffSupported())
	a := hoRunner(t, "A", lnKey{}, nil, nil, nil)
	b := hoRunner(t, "B", lnKey{"tcp", "elsewhere:1"}, nil, nil, nil) // serves another address
	adopted := make(chan struct{}, 1)
	ch := forward(t, a, b, adopted)

	cl := dialHO(t, a)
	body, _ := cl.get(t, "/", "1")
	assert.Equal(t, "A 1", body)
	a.draining.Store(true)
	a.track.handOff(ch)
	<-adopted
	body, closing := cl.get(t, "/", "2")
	assert.Equal(t, "A 2", body)
	assert.True(t, closing, "Connection: close")
	assert.EqualValues(t, 1, a.track.handedN.Load(), "taken back, not handed again")
	assert.EqualValues(t, 0, b.track.adoptedN.Load())
	_, _, err := cl.recv()
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "closed after the response")

	// Stopped while a take waits on the channel: the connection stays.
	c := hoRunner(t, "C", lnKey{}, nil, nil, nil)
	cl = dialHO(t, c)
	body, _ = cl.get(t, "/", "3")
	assert.Equal(t, "C 3", body)
	stuck := make(chan handedConn) // nobody receives
	c.track.handOff(stuck)
	waitFor(t, "the take to wait", func() bool { return c.track.count() == 1 && c.takeWaiting() })
	c.track.stopHandOff()
	body, _ = cl.get(t, "/", "4")
	assert.Equal(t, "C 4", body)
}

// takeWaiting reports whether r's only connection has been asked for.
func (r *runner) takeWaiting() bool {
	r.track.mu.Lock()
	defer r.track.mu.Unlock()
	for c := range r.track.conns {
		return c.state.Load()&takeBit != 0
	}
	return false
}

// TestHandoffRace: clients keep sending while their connections go back
// and forth between two servers as fast as they can be handed, with
// requests split at every byte of their start (so that 1-3 bytes sit in
// net/http's buffer at a take), the next request's first bytes sent while
// a response is being written (net/http's background read takes one), and
// pipelined requests, whole or with the last cut anywhere. Every response is the right one, in order, and every
// request is served exactly once.
func TestHandoffRace(t *testing.T) {
	require.NoError(t, handoffSupported())
	served := &hoServed{}
	a := hoRunner(t, "A", lnKey{}, served, nil, nil)
	b := hoRunner(t, "B", a.served[0].key, served, nil, nil)
	t.Cleanup(func() { takeHook = nil }) // after forward's cleanups
	toB, toA := forward(t, a, b, nil), forward(t, b, a, nil)
	var held [maxHeld + 1]atomic.Int64
	var withPre atomic.Int64
	takeHook = func(k, pre int) {
		held[k].Add(1)
		if pre > 0 {
			withPre.Add(1)
		}
	}

	const clients = 12
	perClient := 400
	if testing.Short() {
		perClient = 100
	}
	var wg sync.WaitGroup
	var failed atomic.Bool
	var sent atomic.Int64
	for ci := range clients {
		cl := dialHO(t, a)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(ci), 7))
			check := func(want string) bool {
				body, _, err := cl.recv()
				if err != nil || !strings.HasSuffix(body, " "+want) {
					t.Errorf("client %d: want a response to %s, got %q, %v", ci, want, body, err)
					failed.Store(true)
					return false
				}
				return true
			}
			for i := 0; i < perClient && !failed.Load(); i++ {
				id := func(j int) string { return strconv.Itoa(ci) + "-" + strconv.Itoa(i) + "-" + strconv.Itoa(j) }
				var err error
				switch rng.IntN(5) {
				case 0: // whole
					err = cl.send(reqText("/", id(0)))
					sent.Add(1)
					if err == nil && !check(id(0)) {
						return
					}
				case 1: // split after k bytes
					r, k := reqText("/", id(0)), 1+rng.IntN(3)
					if err = cl.send(r[:k]); err == nil {
						time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
						err = cl.send(r[k:])
					}
					sent.Add(1)
					if err == nil && !check(id(0)) {
						return
					}
				case 2: // the next request's first bytes during a response
					r0, r1, k := reqText("/slow", id(0)), reqText("/", id(1)), 1+rng.IntN(3)
					if err = cl.send(r0); err == nil {
						time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
						err = cl.send(r1[:k])
					}
					sent.Add(2)
					if err == nil && !check(id(0)) {
						return
					}
					if err == nil {
						err = cl.send(r1[k:])
					}
					if err == nil && !check(id(1)) {
						return
					}
				case 4: // pipelined, the second cut anywhere
					r0, r1 := reqText("/", id(0)), reqText("/", id(1))
					k := 1 + rng.IntN(len(r1)-1)
					if err = cl.send(r0 + r1[:k]); err == nil {
						time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond)
						err = cl.send(r1[k:])
					}
					sent.Add(2)
					for j := 0; j < 2 && err == nil; j++ {
						if !check(id(j)) {
							return
						}
					}
				case 3: // pipelined
					n := 2 + rng.IntN(2)
					var s string
					for j := range n {
						s += reqText("/", id(j))
					}
					err = cl.send(s)
					sent.Add(int64(n))
					for j := 0; j < n && err == nil; j++ {
						if !check(id(j)) {
							return
						}
					}
				}
				if err != nil {
					t.Errorf("client %d: %v", ci, err)
					failed.Store(true)
					return
				}
			}
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	rounds := 0
	for running := true; running; rounds++ {
		select {
		case <-finished:
			running = false
		default:
		}
		from, to, out := a, b, toB
		if rounds%2 == 1 {
			from, to, out = b, a, toA
		}
		to.track.stopHandOff()
		from.track.handOff(out)
		time.Sleep(time.Duration(rand.IntN(1500)) * time.Microsecond)
	}
	a.track.stopHandOff()
	b.track.stopHandOff()
	handed := a.track.handedN.Load() + b.track.handedN.Load()
	t.Logf("%d requests, %d rounds, %d connections handed; bytes net/http held at a take: 0: %d, 1: %d, 2: %d, 3: %d; %d with bytes to read first",
		sent.Load(), rounds, handed, held[0].Load(), held[1].Load(), held[2].Load(), held[3].Load(), withPre.Load())
	served.mu.Lock()
	defer served.mu.Unlock()
	assert.EqualValues(t, sent.Load(), len(served.n), "requests served")
	for id, n := range served.n {
		if n != 1 {
			t.Errorf("request %s served %d times", id, n)
		}
	}
	assert.Greater(t, handed, int64(clients*10), "connections handed")
	assert.Positive(t, held[1].Load()+held[2].Load()+held[3].Load(), "takes with bytes in net/http's buffer")
}

// TestHandoffDupFails: a connection whose socket cannot be duplicated (a
// descriptor limit) stays with net/http: its next request is served.
func TestHandoffDupFails(t *testing.T) {
	require.NoError(t, handoffSupported())
	a := hoRunner(t, "A", lnKey{}, nil, nil, nil)
	a.track.dup = func(net.Conn) (*os.File, error) { return nil, syscall.EMFILE }
	ch := forward(t, a, nil, nil)
	cl := dialHO(t, a)
	body, _ := cl.get(t, "/", "1")
	assert.Equal(t, "A 1", body)
	a.track.handOff(ch)
	waitFor(t, "the take to be tried", func() bool {
		a.track.mu.Lock()
		defer a.track.mu.Unlock()
		for c := range a.track.conns {
			return c.state.Load()&spoilBit != 0
		}
		return false
	})
	body, _ = cl.get(t, "/", "2")
	assert.Equal(t, "A 2", body)
	assert.EqualValues(t, 0, a.track.handedN.Load())
}

// TestHandoffNotTLSNorHTTP2: connections over TLS (HTTP/1.1 and HTTP/2)
// and unencrypted HTTP/2 are not handed off; they go on being served, and
// an HTTP/1.1 response during the drain says "Connection: close" as today.
func TestHandoffNotTLSNorHTTP2(t *testing.T) {
	require.NoError(t, handoffSupported())
	ts := httptest.NewUnstartedServer(nil)
	ts.EnableHTTP2 = true
	ts.StartTLS()
	certs, h2Client := ts.TLS.Certificates, ts.Client()
	ts.Close()
	h1Config := h2Client.Transport.(*http.Transport).TLSClientConfig.Clone()
	h1Config.NextProtos = []string{"http/1.1"}
	h1TLS := &http.Client{Transport: &http.Transport{
		TLSClientConfig: h1Config,
		TLSNextProto:    map[string]func(string, *tls.Conn) http.RoundTripper{},
	}}
	var h2cProtos http.Protocols
	h2cProtos.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: &h2cProtos}}

	withTLS := func(s *http.Server) { s.TLSConfig = &tls.Config{Certificates: certs} }
	withH2C := func(s *http.Server) {
		s.Protocols = &http.Protocols{}
		s.Protocols.SetHTTP1(true)
		s.Protocols.SetUnencryptedHTTP2(true)
	}
	a := hoRunner(t, "A", lnKey{}, nil, nil, withTLS)
	c := hoRunner(t, "C", lnKey{}, nil, nil, withH2C)
	got := make(chan handedConn, 10)
	for _, cl := range []struct {
		name   string
		r      *runner
		client *http.Client
		scheme string
		proto  int
	}{
		{"TLS HTTP/1.1", a, h1TLS, "https", 1},
		{"TLS HTTP/2", a, h2Client, "https", 2},
		{"h2c", c, h2c, "http", 2},
	} {
		t.Run(cl.name, func(t *testing.T) {
			url := cl.scheme + "://" + cl.r.served[0].l.Addr().String() + "/?id="
			var reused []bool
			trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = append(reused, i.Reused) }}
			do := func(id string) *http.Response {
				req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", url+id, nil)
				require.NoError(t, err)
				resp, err := cl.client.Do(req)
				require.NoError(t, err)
				io.ReadAll(resp.Body)
				resp.Body.Close()
				assert.Equal(t, cl.proto, resp.ProtoMajor)
				return resp
			}
			do("1")
			cl.r.draining.Store(true)
			cl.r.track.handOff(got)
			resp := do("2")
			if cl.proto == 1 {
				assert.True(t, resp.Close, "Connection: close")
			}
			assert.Equal(t, []bool{false, true}, reused, "the same connection")
			assert.Zero(t, cl.r.track.handedN.Load())
			cl.r.track.stopHandOff()
			cl.r.draining.Store(false)
		})
	}
	assert.Empty(t, got)
}

// TestHandoffManyIdle: 10,000 idle keep-alive connections are taken from
// net/http and adopted by the other server in well under a second; the
// figures are logged. A sample of them is then served by the successor.
// The clients live in a child process (this test binary), so that the
// descriptors of both ends do not count against one limit.
func TestHandoffManyIdle(t *testing.T) {
	if addr := os.Getenv("GRACEFUL_HO_CLIENTS"); addr != "" {
		manyIdleClients(addr)
		return
	}
	if testing.Short() {
		t.Skip("10,000 connections")
	}
	require.NoError(t, handoffSupported())
	if err := raiseNoFile(manyConns + 1000); err != nil {
		t.Skip(err)
	}
	a := hoRunner(t, "A", lnKey{}, nil, nil, nil)
	b := hoRunner(t, "B", a.served[0].key, nil, nil, nil)
	adopted := make(chan struct{}, manyConns)
	ch := forward(t, a, b, adopted)

	cmd := exec.Command(os.Args[0], "-test.run=^TestHandoffManyIdle$")
	cmd.Env = append(os.Environ(), "GRACEFUL_HO_CLIENTS="+a.served[0].l.Addr().String())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	lines := bufio.NewScanner(stdout)
	require.True(t, lines.Scan(), "the clients' readiness")
	require.Equal(t, "ready", lines.Text())
	waitFor(t, "the connections to be idle", func() bool {
		a.track.mu.Lock()
		defer a.track.mu.Unlock()
		for c := range a.track.conns {
			if w := c.state.Load(); http.ConnState(w&stateMask) != http.StateIdle || w&armBit == 0 {
				return false
			}
		}
		return len(a.track.conns) == manyConns
	})

	start := time.Now()
	a.track.handOff(ch)
	poked := time.Since(start)
	for range manyConns {
		<-adopted
	}
	all := time.Since(start)
	t.Logf("%d idle connections: asked for in %v, taken and adopted in %v", manyConns, poked.Round(time.Millisecond), all.Round(time.Millisecond))
	assert.EqualValues(t, manyConns, a.track.handedN.Load())
	assert.EqualValues(t, manyConns, b.track.adoptedN.Load())
	limit := time.Second
	if raceOn {
		limit = 10 * time.Second // the race detector slows it several times
	}
	assert.Less(t, all, limit)

	io.WriteString(stdin, "check\n")
	n := 0
	for lines.Scan() && lines.Text() != "done" {
		assert.True(t, strings.HasPrefix(lines.Text(), "B "), lines.Text())
		n++
	}
	assert.Equal(t, (manyConns+96)/97, n, "responses from the successor")
}

const manyConns = 10000

func raiseNoFile(need uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur >= need {
		return nil
	}
	if lim.Max < need {
		return fmt.Errorf("needs %d descriptors; the hard RLIMIT_NOFILE is %d", need, lim.Max)
	}
	lim.Cur = need
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}

// manyIdleClients is TestHandoffManyIdle's child: it opens manyConns
// keep-alive connections to addr, makes one request on each, says
// "ready", and once told, makes one more request on every 97th and prints
// the bodies.
func manyIdleClients(addr string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "clients:", err)
		os.Exit(1)
	}
	if err := raiseNoFile(manyConns + 500); err != nil {
		fail(err)
	}
	clients := make([]*hoClient, manyConns)
	var wg sync.WaitGroup
	errs := make(chan error, manyConns)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < manyConns; i += 8 {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					errs <- err
					return
				}
				c.SetDeadline(time.Now().Add(2 * time.Minute))
				cl := &hoClient{c: c, br: bufio.NewReader(c)}
				clients[i] = cl
				if err := cl.send(reqText("/", strconv.Itoa(i))); err != nil {
					errs <- err
					return
				}
				if body, _, err := cl.recv(); err != nil || body != "A "+strconv.Itoa(i) {
					errs <- fmt.Errorf("%q, %v", body, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		fail(err)
	default:
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() {
		os.Exit(0)
	}
	for i := 0; i < manyConns; i += 97 {
		if err := clients[i].send(reqText("/", strconv.Itoa(i))); err != nil {
			fail(err)
		}
		body, _, err := clients[i].recv()
		if err != nil {
			fail(err)
		}
		fmt.Println(body)
	}
	fmt.Println("done")
	os.Exit(0)
}

// BenchmarkRequestBookkeepingHandable is BenchmarkRequestBookkeeping on a
// connection that could be handed off, with the read deadlines net/http
// sets around a keep-alive request (idle, header, whole request, and the
// background read's), while no hand-off is under way.
func BenchmarkRequestBookkeepingHandable(b *testing.B) {
	r := &runner{track: newTracker()}
	al := newAdoptListener(lnKey{"tcp", "bench"}, &http.Server{}, &net.TCPAddr{})
	c := r.track.addVia(nopConn{}, al.via)
	wrapped := r.wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	w, req := httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil)
	buf := make([]byte, 64)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		c.SetReadDeadline(time.Time{})
		c.Read(buf)
		c.SetReadDeadline(time.Time{})
		r.track.connState(c, http.StateActive)
		c.Read(buf)
		c.SetReadDeadline(time.Time{})
		c.SetReadDeadline(time.Time{})
		wrapped.ServeHTTP(w, req)
		r.track.connState(c, http.StateIdle)
	}
}
