package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// stallingManager is a fakeManager whose replicated state can stall.
type stallingManager struct {
	*fakeManager
	mu  sync.Mutex
	err error
}

var _ Staller = (*stallingManager)(nil)

func (s *stallingManager) Stalled() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *stallingManager) set(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

// A stalled manager answers every route 503 with the reason, calls nothing
// of its service (no stale read, no forwarded write), and serves again once
// the stall ends; the probes are left to their own handlers.
func TestManagerHandler_Stalled(t *testing.T) {
	f := &stallingManager{fakeManager: newFakeManager()}
	f.setLeader("127.0.0.1:1", true)
	srv := httptest.NewServer(NewManagerHandler(f, ManagerHandlerOptions{}))
	t.Cleanup(srv.Close)
	stall := errors.New("state machine stalled at raft log index 9: command type 12 is unknown to this manager")
	f.set(stall)

	for _, tc := range []struct{ method, path, body string }{
		{http.MethodGet, "/tasks", ""},
		{http.MethodGet, "/tasks?consistent", ""},
		{http.MethodPost, "/tasks", `{"Task":{"Name":"a","Image":"cube-echo:latest"}}`},
		{http.MethodGet, "/nodes", ""},
		{http.MethodGet, "/cluster", ""},
		{http.MethodGet, "/cluster/self", ""},
		{http.MethodGet, "/tokens", ""},
		{http.MethodDelete, "/tokens/6f1c2a4e-8b3d-4f5a-9c7e-0d1b2c3d4e5f", ""},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e ErrResponse
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(e.Message, stall.Error()) || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%s %s on a stalled manager: %d %q (Retry-After %q), want 503 naming the stall", tc.method, tc.path, resp.StatusCode, e.Message, resp.Header.Get("Retry-After"))
		}
	}
	if n := f.total(); n != 0 {
		t.Fatalf("the stalled manager's service was called %d times", n)
	}
	// Probes and metrics are not answered by the stall (no such route here: 404).
	for _, path := range []string{"/health/live", "/health/ready", "/metrics"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			t.Fatalf("GET %s answered by the stall", path)
		}
	}

	f.set(nil)
	resp, err := http.Get(srv.URL + "/tasks")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /tasks after the stall ended: %d", resp.StatusCode)
	}
}
