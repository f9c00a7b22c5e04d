//go:build linux

package graceful_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
// from keep-alive HTTP/1.1 and HTTP/2 clients sending POST.
func TestTLSHotRestart(t *testing.T) {
	_, server := binaries(t)
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	s := start(t, server, "TS_TLS_CERT="+certFile, "TS_TLS_KEY="+keyFile, "TS_DRAIN_IDLE=200ms")
	url := "https://" + s.Addr() + "/"
	var (
		mu       sync.Mutex
		ok, fail int
		failures []string
		protos   = map[string]bool{}
	)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		h2 := i%2 == 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: h2,
			}}
			for n := 0; n < 100000; n++ {
				select {
				case <-done:
					return
				default:
				}
				resp, err := c.Post(url, "text/plain", bytes.NewReader([]byte("ping")))
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				if err != nil || resp.StatusCode >= 500 {
					fail++
					if err != nil && len(failures) < 5 {
						failures = append(failures, err.Error())
					}
				} else {
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
	stop(t, s)
	assert.Zero(t, fail, "failed TLS requests: %v", failures)
	assert.Greater(t, ok, 100)
	assert.True(t, protos["HTTP/2.0"] && protos["HTTP/1.1"], "both protocols were exercised: %v", protos)
	t.Logf("%d TLS requests over %v, %d failed", ok, protos, fail)
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
