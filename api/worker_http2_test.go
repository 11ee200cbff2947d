package api

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A herd of calls to a worker not yet connected (a new leader's first
// pass) dials at most workerDialsPerHost connections, not one per call, and
// every call goes over HTTP/2. The server's handshakes are slowed, so that
// all the calls are waiting while the first connection is made.
func TestWorkerClient_HerdOfCallsDialsAFew(t *testing.T) {
	var handshakes atomic.Int32
	var mu sync.Mutex
	protos := map[int]int{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		protos[r.ProtoMajor]++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("[]"))
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		handshakes.Add(1)
		time.Sleep(200 * time.Millisecond)
		return nil, nil
	}}
	srv.StartTLS()
	defer srv.Close()
	cfg := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	cfg.NextProtos = nil // what a node's ClientConfig holds; the client asks for h2 itself
	wc := NewWorkerClientTLS(10*time.Second, "", cfg)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const calls = 64
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := wc.Tasks(ctx, srv.Listener.Addr().String()); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := handshakes.Load(); n > workerDialsPerHost {
		t.Errorf("%d calls at once made %d TLS handshakes, want at most %d", calls, n, workerDialsPerHost)
	}
	if protos[2] != calls {
		t.Errorf("calls by HTTP version: %v, want all %d over HTTP/2", protos, calls)
	}
}
