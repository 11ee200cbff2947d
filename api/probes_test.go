package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// TestProbes_LiveAndReady: /health/live answers 200 while the handler
// serves; /health/ready follows the ReadyFunc, 200 ready or 503 with its
// reason, as JSON, on the manager's and the worker's handler alike; and
// /metrics exists only when a handler for it is given.
func TestProbes_LiveAndReady(t *testing.T) {
	var notReady atomic.Pointer[error]
	ready := func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); !ok {
			t.Errorf("the readiness check got no deadline")
		}
		if p := notReady.Load(); p != nil {
			return *p
		}
		return nil
	}
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "cube_tasks 3\n") })
	for _, tc := range []struct {
		name    string
		handler func(metrics http.Handler) http.Handler
	}{
		{"manager", func(m http.Handler) http.Handler {
			return NewManagerHandler(newFakeManager(), ManagerHandlerOptions{Ready: ready, Metrics: m})
		}},
		{"worker", func(m http.Handler) http.Handler {
			return NewWorkerHandlerWith(&fakeWorker{}, WorkerHandlerOptions{Ready: ready, Metrics: m})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler(metrics))
			t.Cleanup(srv.Close)
			probe := func(path string, status int, want Probe) {
				t.Helper()
				r := doHTTP(t, "GET", srv.URL+path, nil, nil)
				var got Probe
				if err := json.Unmarshal(r.body, &got); err != nil || r.status != status || got != want {
					t.Fatalf("GET %s: %d %s (%v); want %d %+v", path, r.status, r.body, err, status, want)
				}
				if ct := r.header.Get("Content-Type"); ct != "application/json" {
					t.Fatalf("GET %s: Content-Type %q", path, ct)
				}
			}
			probe("/health/live", 200, Probe{Status: ProbeOK})
			probe("/health/ready", 200, Probe{Status: ProbeReady})
			err := errors.New("no raft leader known")
			notReady.Store(&err)
			probe("/health/ready", 503, Probe{Status: ProbeNotReady, Reason: "no raft leader known"})
			probe("/health/live", 200, Probe{Status: ProbeOK})
			notReady.Store(nil)
			probe("/health/ready", 200, Probe{Status: ProbeReady})

			if r := doHTTP(t, "GET", srv.URL+"/metrics", nil, nil); r.status != 200 || string(r.body) != "cube_tasks 3\n" {
				t.Fatalf("GET /metrics: %d %s", r.status, r.body)
			}
			if r := doHTTP(t, "POST", srv.URL+"/health/ready", nil, nil); r.status != http.StatusNotFound {
				t.Fatalf("POST /health/ready: %d %s; want 404 (the API's fallback)", r.status, r.body)
			}

			bare := httptest.NewServer(tc.handler(nil))
			t.Cleanup(bare.Close)
			if r := doHTTP(t, "GET", bare.URL+"/metrics", nil, nil); r.status != 404 {
				t.Fatalf("GET /metrics without a metrics handler: %d %s; want 404", r.status, r.body)
			}
			if r := doHTTP(t, "GET", bare.URL+"/health/ready", nil, nil); r.status != 200 {
				t.Fatalf("GET /health/ready without a ReadyFunc: %d %s; want 200", r.status, r.body)
			}
		})
	}
}
