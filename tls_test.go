//go:build linux

package graceful_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gograceful/graceful/internal/loadgen"
	"github.com/gograceful/graceful/internal/proc"
)

// selfSigned writes a certificate for 127.0.0.1 and its key into dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "graceful test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestTLSHotRestart: ListenAndServeTLS survives hot restarts under load
// from HTTP/1.1 clients over TLS that never resend (keep-alive, a
// connection per request, and idle ones) and from HTTP/2 clients sending
// POST with a body that cannot be read twice, so that net/http cannot
// resend a request it wrote and lost.
func TestTLSHotRestart(t *testing.T) {
	_, server := binaries(t)
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	s := start(t, server, "TS_TLS_CERT="+certFile, "TS_TLS_KEY="+keyFile, "TS_DRAIN_IDLE=200ms")
	url := "https://" + s.Addr() + "/"
	h1 := loadgen.Start(loadgen.Config{
		Addr: s.Addr(), TLS: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"},
		KeepAlive: 2, Fresh: 1, Idle: 2, IdleGap: 200 * time.Millisecond, Check: checkBody,
		Duration: 60 * time.Second,
	})
	var (
		mu          sync.Mutex
		ok, fail    int
		unprocessed int // requests the server's GOAWAY said it did not process
		resent      int // requests net/http sent on more than one connection
		failures    []string
		protos      = map[string]bool{}
		done        = make(chan struct{})
		wg          sync.WaitGroup
		h2Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	)
	defer h2Transport.CloseIdleConnections()
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 5 * time.Second, Transport: h2Transport}
			for n := 0; n < 100000; n++ {
				select {
				case <-done:
					return
				default:
				}
				conns := 0
				ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { conns++ }})
				// Not a *bytes.Reader: GetBody stays nil.
				req, err := http.NewRequestWithContext(ctx, "POST", url, io.NopCloser(strings.NewReader("ping")))
				require.NoError(t, err)
				req.ContentLength = 4
				resp, err := c.Do(req)
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
					if err == nil {
						err = checkBody("/", resp.Header.Get("X-Pid"), body)
					}
				}
				mu.Lock()
				if conns > 1 {
					resent++
				}
				switch {
				case err != nil && (strings.Contains(err.Error(), "cannot retry err [http2: Transport received Server's graceful shutdown GOAWAY] after Request.Body was written") ||
					strings.Contains(err.Error(), "net/http: cannot rewind body after connection loss")):
					// In flight when the server sent GOAWAY, which
					// says it was not processed, or on a connection
					// net/http found gone once the GOAWAY came
					// (net/http only retries what it knows was not
					// processed); either way it cannot resend a body
					// it has already read.
					unprocessed++
				case err != nil:
					fail++
					if len(failures) < 5 {
						failures = append(failures, err.Error())
					}
				default:
					ok++
					protos[resp.Proto] = true
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < 5; i++ {
		old, _, err := s.Restart(15 * time.Second)
		require.NoError(t, err)
		require.NoError(t, proc.WaitGone(old, 15*time.Second))
	}
	close(done)
	wg.Wait()
	res := h1.Stop()
	stop(t, s)
	assertServed(t, res, 200)
	assert.GreaterOrEqual(t, drainAnnounced(res), 5, "HTTP/1.1 responses during the drains said Connection: close")
	assert.Zero(t, fail, "failed HTTP/2 requests: %v", failures)
	// Go's HTTP/2 server answers "Connection: close" with a GOAWAY naming
	// the last stream it has seen; a request already on its way is
	// refused, unprocessed. With a body net/http cannot read again, that
	// is a lost request: at most one per client per restart.
	assert.LessOrEqual(t, unprocessed, 5*2, "HTTP/2 requests refused unprocessed by a GOAWAY")
	assert.GreaterOrEqual(t, ok, 120, "HTTP/2 requests served: fewer than half of a normal run")
	assert.Equal(t, map[string]bool{"HTTP/2.0": true}, protos, "the net/http clients spoke HTTP/2")
	t.Logf("HTTP/2: %d requests, %d failed, %d refused unprocessed by a GOAWAY, %d sent on a second connection by net/http (it may: the server's GOAWAY said they were not processed)", ok, fail, unprocessed, resent)
}

// TestPackageListenAndServe: log.Fatal(graceful.ListenAndServe(...)) prints
// nothing and exits 0 after a hand-over and after a SIGTERM drain.
func TestPackageListenAndServe(t *testing.T) {
	_, server := binaries(t)
	s := start(t, server, "TS_PKGFUNC=1")
	first := s.PID()
	old, pid, err := s.Restart(15 * time.Second)
	require.NoError(t, err)
	require.Equal(t, first, old)
	// Its exit status (not Cmd.Wait, which would also wait for the
	// successor: it holds the same output pipe).
	var ws syscall.WaitStatus
	_, err = syscall.Wait4(first, &ws, 0, nil)
	require.NoError(t, err)
	assert.True(t, ws.Exited() && ws.ExitStatus() == 0, "the replaced process exited with %v", ws)
	waitServedBy(t, s, pid)
	require.NoError(t, syscall.Kill(pid, syscall.SIGTERM))
	require.NoError(t, proc.WaitGone(pid, 15*time.Second))
	assert.NotContains(t, s.Output.String(), "<nil>")
	assert.NotContains(t, s.Output.String(), "Server closed")
	assert.NotContains(t, s.Output.String(), "exit status")
	assert.Empty(t, proc.Running(s.Bin))
	assert.Empty(t, proc.Zombies())
}
