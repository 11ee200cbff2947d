package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/testkit"
)

// cubeUntil runs cube with args until ctx ends, its stdout and stderr apart.
func cubeUntil(ctx context.Context, args ...string) (stdout, stderr *testkit.SyncBuffer, done <-chan error) {
	stdout, stderr = &testkit.SyncBuffer{}, &testkit.SyncBuffer{}
	root := newRootCmd()
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(args)
	errc := make(chan error, 1)
	go func() { errc <- root.ExecuteContext(ctx) }()
	return stdout, stderr, errc
}

// eventsServer is a manager's GET /events: it checks the after= it gets,
// confirms it, writes the changes, then ends the stream (a manager
// shutting down) or holds it open until the client leaves.
func eventsServer(t *testing.T, wantAfter, start string, hold bool, changes ...api.Change) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := r.URL.Query().Get("after"); r.URL.Path != "/events" || got != wantAfter {
			t.Errorf("%s %s: after=%q, want %q", r.Method, r.URL, got, wantAfter)
			http.Error(w, `{"HTTPStatusCode":400,"Message":"unexpected"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set(api.HeaderEventsAfter, start)
		enc := json.NewEncoder(w)
		for _, c := range changes {
			_ = enc.Encode(c)
		}
		w.(http.Flusher).Flush()
		if hold {
			<-r.Context().Done()
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// When the manager's stream ends, cube events resumes on the next manager
// after the last change it printed, says so on stderr, and prints every
// change once.
func TestEvents_ResumesOnTheNextManager(t *testing.T) {
	ch := func(i uint64, seq int, name string) api.Change {
		return api.Change{Index: i, Seq: seq, Task: api.Task{Name: name, State: api.Running}}
	}
	m1 := eventsServer(t, "", "6.0", false, ch(7, 0, "a"), ch(7, 1, "b"))
	m2 := eventsServer(t, "7.1", "7.1", true, ch(8, 0, "c"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrs := strings.TrimPrefix(m1.URL, "http://") + "," + strings.TrimPrefix(m2.URL, "http://")
	stdout, stderr, done := cubeUntil(ctx, "events", "-o", "json", "-m", addrs)
	testkit.Eventually(t, 30*time.Second, func() error {
		if n := strings.Count(stdout.String(), "\n"); n < 3 {
			return errors.New("waiting for 3 lines")
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("cube events ended with %v after Ctrl-C", err)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var c api.Change
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		names = append(names, c.Position().String()+" "+c.Task.Name)
	}
	if got := strings.Join(names, ", "); got != "7.0 a, 7.1 b, 8.0 c" {
		t.Errorf("printed %s; want 7.0 a, 7.1 b, 8.0 c", got)
	}
	note := stderr.String()
	for _, want := range []string{"manager " + strings.TrimPrefix(m1.URL, "http://") + " stopped streaming", "resumed after 7.1 on " + strings.TrimPrefix(m2.URL, "http://")} {
		if !strings.Contains(note, want) {
			t.Errorf("stderr %q does not say %q", note, want)
		}
	}
}

// When no manager holds the changes since the last one printed, cube
// events says which are unknown and how to go on, and exits with status 3.
func TestEvents_GapExits3(t *testing.T) {
	gone := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		oldest := api.Position{Index: 4200, Seq: 0}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusGone)
		_ = json.NewEncoder(w).Encode(api.EventsGap{HTTPStatusCode: 410, Message: "gone", After: api.Position{Index: 57, Seq: 0}, Oldest: &oldest, Reason: "it keeps the last 4096 changes"})
	}))
	defer gone.Close()
	addr := strings.TrimPrefix(gone.URL, "http://")
	_, err := cube(t, addr, "events", "--after", "57.0")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 3 || !errors.Is(err, api.ErrEventsGap) {
		t.Fatalf("cube events across a gap: %v, want exit status 3 and ErrEventsGap", err)
	}
	for _, want := range []string{"after 57.0 up to and including 4200.0 are unknown", addr, "keeps the last 4096", "cube status", "cube events --after 4200.0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}

	// A malformed --after is refused before any manager is asked.
	if _, err := cube(t, addr, "events", "--after", "12.x"); err == nil || !strings.Contains(err.Error(), "--after") || !strings.Contains(err.Error(), "INDEX.SEQ") {
		t.Fatalf("cube events --after 12.x: %v", err)
	}
}

// A position the cluster has not reached (a typo) ends cube events at once
// with the manager's reason, naming the cluster's last index; it is not a
// gap (exit status 1, not 3). cube events asks for heartbeats.
func TestEvents_PositionBeyondTheCluster(t *testing.T) {
	var (
		mu    sync.Mutex
		query string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		query = r.URL.RawQuery
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(api.ErrResponse{HTTPStatusCode: 400, Message: "position 99999999 is beyond the cluster's last index 1234 (the end of the leader m1's log)"})
	}))
	defer srv.Close()
	_, err := cube(t, strings.TrimPrefix(srv.URL, "http://"), "events", "--after", "99999999")
	var ee *exitError
	if err == nil || errors.As(err, &ee) || !strings.Contains(err.Error(), "beyond the cluster's last index 1234") {
		t.Fatalf("cube events --after 99999999: %v, want the manager's reason, not a gap", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if query != "after=99999999&heartbeat=5s" {
		t.Errorf("query %q, want after=99999999&heartbeat=5s", query)
	}
}
