package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cube-orch/cube/test/testkit"
)

// A WorkerClient has at most workerCallsInFlight calls in flight to its
// workers; the others wait for a slot and then all complete, and a call
// whose context ends while it waits gives up with the context's error.
func TestWorkerClient_BoundsCallsInFlight(t *testing.T) {
	var now, peak atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := now.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		now.Add(-1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("[]"))
	}))
	defer srv.Close()
	wc := NewWorkerClient(30 * time.Second)

	const calls = workerCallsInFlight * 3
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := wc.Tasks(ctx, srv.URL)
			errs <- err
		}()
	}
	testkit.WaitFor(t, 10*time.Second, "the first calls to reach the worker", func() bool { return now.Load() == workerCallsInFlight })
	time.Sleep(200 * time.Millisecond) // the others had the time to get past the bound if it let them

	// One more, with a short deadline, waits behind the full bound and gives up.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err := wc.Tasks(ctx, srv.URL)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrNotSent) {
		t.Errorf("a call waiting for a slot past its deadline: %v, want ErrNotSent and context.DeadlineExceeded", err)
	}
	if p := peak.Load(); p != workerCallsInFlight {
		t.Fatalf("%d calls in flight at once, want %d", p, workerCallsInFlight)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a call that waited for its slot: %v", err)
		}
	}
	if p := peak.Load(); p != workerCallsInFlight {
		t.Fatalf("%d calls in flight at once, want at most %d", p, workerCallsInFlight)
	}
}
