//go:build linux

package graceful_test

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gograceful/graceful"
)

// TestHTTP2DrainWhileConnectionsClose: the drain's GOAWAYs go out while
// HTTP/2 connections close and others first report, under the race
// detector: every stream in flight completes and the server ends.
func TestHTTP2DrainWhileConnectionsClose(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	l, err := graceful.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &graceful.Server{Server: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(300 * time.Millisecond)
		}
		io.WriteString(w, "ok")
	})}, NoSignals: true, ShutdownTimeout: 20 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(l, certFile, keyFile) }()
	serving(t, srv)
	const n = 40
	url := "https://" + l.Addr().String()
	var trs []*http.Transport
	for i := 0; i < n; i++ {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
		trs = append(trs, tr)
		fetch(t, &http.Client{Transport: tr}, url+"/")
	}
	// Half the connections have a stream in flight through the drain; the
	// other half close as it begins.
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i += 2 {
		wg.Add(1)
		go func(tr *http.Transport) {
			defer wg.Done()
			res, err := (&http.Client{Transport: tr, Timeout: 15 * time.Second}).Get(url + "/slow")
			if err != nil {
				errs <- err
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}(trs[i])
	}
	time.Sleep(50 * time.Millisecond)
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	for i := 1; i < n; i += 2 {
		trs[i].CloseIdleConnections()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a stream in flight failed: %v", err)
	}
	require.NoError(t, <-shut)
	<-done
	for _, tr := range trs {
		tr.CloseIdleConnections()
	}
}
