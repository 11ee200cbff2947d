package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// AddManager and RemoveManager of the fake record calls; only the leader acts.
func (f *fakeManager) AddManager(_ context.Context, id, addr string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.self {
		f.calls["AddManager"]++ // a follower's copy is called too; only the leader acts
		return ErrNotLeader
	}
	if inj, ok := f.enterLocked("AddManager"); ok {
		return inj.err
	}
	f.calls["AddManager:"+id+"="+addr]++
	return nil
}

func (f *fakeManager) RemoveManager(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.self {
		f.calls["RemoveManager"]++ // a follower's copy is called too; only the leader acts
		return ErrNotLeader
	}
	if inj, ok := f.enterLocked("RemoveManager"); ok {
		return inj.err
	}
	f.calls["RemoveManager:"+id]++
	return nil
}

// ServerStatus of the fake names the fake by its leader flag.
func (f *fakeManager) ServerStatus(context.Context) (ServerStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["ServerStatus"]++
	if f.self {
		return ServerStatus{ID: "leader", State: "leader", Term: 3}, nil
	}
	return ServerStatus{ID: "follower", State: "follower", Term: 3, LastContact: time.Millisecond}, nil
}

// GET /cluster/self is answered by the manager asked, never forwarded: it is
// about that manager's own progress.
func TestManagerHandler_ServerStatusNotForwarded(t *testing.T) {
	c := newTestCluster(t, 3, 0, ManagerHandlerOptions{})
	cl, err := NewClient(c.addrs[1:2], ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := cl.ServerStatus(context.Background())
	if err != nil || st.ID != "follower" || st.LastContact != time.Millisecond {
		t.Fatalf("status of a follower: %+v, %v", st, err)
	}
	if n := c.fakes[0].count("ServerStatus"); n != 0 {
		t.Fatalf("the leader answered %d status requests sent to a follower", n)
	}
}

// A refused membership change reaches the caller as 409 with the service's
// message, through a follower too.
func TestManagerHandler_UnsafeServerChangeIs409(t *testing.T) {
	c := newTestCluster(t, 3, 0, ManagerHandlerOptions{})
	c.fakes[0].injectErr("AddManager", fmt.Errorf("%w: m2 is a live voter at 127.0.0.1:7002; remove it first", ErrConflict), false)
	c.fakes[0].injectErr("RemoveManager", fmt.Errorf("%w: removing voter m2 would leave 1 reachable voter(s) of 2", ErrConflict), false)
	r := doHTTP(t, http.MethodPost, c.url(1, "/cluster/servers"), []byte(`{"ID":"m2","Addr":"10.9.9.9:7000"}`), nil)
	if er := r.errResponse(t); r.status != http.StatusConflict || !strings.Contains(er.Message, "m2 is a live voter") {
		t.Fatalf("unsafe add: %d %+v", r.status, er)
	}
	r = doHTTP(t, http.MethodDelete, c.url(2, "/cluster/servers/m2"), nil, nil)
	if er := r.errResponse(t); r.status != http.StatusConflict || !strings.Contains(er.Message, "reachable voter") {
		t.Fatalf("unsafe remove: %d %+v", r.status, er)
	}
}

func TestManagerHandler_ServersForwardedToLeader(t *testing.T) {
	c := newTestCluster(t, 3, 0, ManagerHandlerOptions{})
	r := doHTTP(t, http.MethodPost, c.url(1, "/cluster/servers"), []byte(`{"ID":"m4","Addr":"127.0.0.1:7000"}`), nil)
	if r.status != http.StatusNoContent || c.fakes[0].count("AddManager:m4=127.0.0.1:7000") != 1 {
		t.Fatalf("add via follower: %d %s; leader saw %d calls", r.status, r.body, c.fakes[0].count("AddManager:m4=127.0.0.1:7000"))
	}
	r = doHTTP(t, http.MethodDelete, c.url(2, "/cluster/servers/m4"), nil, nil)
	if r.status != http.StatusNoContent || c.fakes[0].count("RemoveManager:m4") != 1 {
		t.Fatalf("remove via follower: %d %s", r.status, r.body)
	}

	// The client does the same.
	cl, err := NewClient(c.addrs[1:], ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.AddManager(context.Background(), "m5", "127.0.0.1:7001"); err != nil || c.fakes[0].count("AddManager:m5=127.0.0.1:7001") != 1 {
		t.Fatalf("client add: %v", err)
	}
	if err := cl.RemoveManager(context.Background(), "m5"); err != nil || c.fakes[0].count("RemoveManager:m5") != 1 {
		t.Fatalf("client remove: %v", err)
	}

	for _, tc := range []struct{ body, want string }{
		{`{"ID":"","Addr":"127.0.0.1:1"}`, "ID is required"},
		{`{"ID":"m4","Addr":"nowhere"}`, "is not an IP:PORT"},
		{`{"ID":"m4","Addr":"127.0.0.1:1","X":1}`, "unknown field"},
		{`nope`, "body must be"},
	} {
		r := doHTTP(t, http.MethodPost, c.url(1, "/cluster/servers"), []byte(tc.body), nil)
		if er := r.errResponse(t); r.status != http.StatusBadRequest || !strings.Contains(er.Message, tc.want) {
			t.Fatalf("body %s: %d %q, want 400 containing %q", tc.body, r.status, er.Message, tc.want)
		}
	}
}

// Changes streams the changes of a fixed task at 1.0, 2.0 and 3.0 that
// come after after, then ends, as a manager does when it shuts down.
func (f *fakeManager) Changes(ctx context.Context, after *Position) (<-chan Change, Position, error) {
	f.mu.Lock()
	f.calls["Changes"]++
	f.mu.Unlock()
	var start Position // before the first
	if after != nil {
		start = *after
	}
	ch := make(chan Change, 3)
	for i := 1; i <= 3; i++ {
		c := Change{Index: uint64(i), Task: Task{Name: "t", State: State(i - 1), Env: []string{"SECRET=hunter2"}}}
		if after == nil || after.Less(c.Position()) {
			ch <- c
		}
	}
	close(ch)
	return ch, start, nil
}

// Logs returns a fixed text for any task.
func (f *fakeManager) Logs(_ context.Context, id uuid.UUID, opts LogOptions) (io.ReadCloser, error) {
	f.mu.Lock()
	f.calls["Logs"]++
	f.mu.Unlock()
	return io.NopCloser(strings.NewReader(fmt.Sprintf("logs of %s tail %d follow %v\n", id, opts.Tail, opts.Follow))), nil
}

func TestManagerHandler_EventsAndLogs(t *testing.T) {
	c := newTestCluster(t, 3, 0, ManagerHandlerOptions{})
	cl, err := NewClient(c.addrs[1:2], ClientOptions{RetryFor: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// The fake ends every stream: the client resumes after the last change
	// (getting none twice), and gives up once none stays open for RetryFor.
	var got []Change
	err = cl.Events(context.Background(), func(ch Change) error { got = append(got, ch); return nil })
	if len(got) != 3 || got[2].Index != 3 || got[2].Task.State != Running || !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "ended") {
		t.Fatalf("events: %+v, %v", got, err)
	}
	if n := c.fakes[1].count("Changes"); n < 2 {
		t.Fatalf("the client opened %d streams, want it to resume after the first ended", n)
	}
	id := uuid.New()
	out, err := cl.Logs(context.Background(), id, 5)
	if err != nil || string(out) != fmt.Sprintf("logs of %s tail 5 follow false\n", id) {
		t.Fatalf("logs: %q, %v", out, err)
	}
	r := doHTTP(t, http.MethodGet, c.url(0, "/tasks/nope/logs"), nil, nil)
	if r.status != http.StatusBadRequest {
		t.Fatalf("logs with a bad ID: %d", r.status)
	}
}

// DrainNode of the fake knows one worker, w1; only the leader acts.
func (f *fakeManager) DrainNode(_ context.Context, name string, drain bool) (Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["DrainNode"]++
	if !f.self {
		return Node{}, ErrNotLeader
	}
	if name != "w1" {
		return Node{}, fmt.Errorf("worker %q: %w", name, ErrNotFound)
	}
	f.calls[fmt.Sprintf("DrainNode:%s=%v", name, drain)]++
	return Node{Name: name, State: NodeAlive, Drain: drain}, nil
}

func TestManagerHandler_DrainForwardedToLeader(t *testing.T) {
	c := newTestCluster(t, 3, 0, ManagerHandlerOptions{})
	cl, err := NewClient(c.addrs[1:], ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := cl.DrainNode(context.Background(), "w1", true)
	if err != nil || !n.Drain || n.Name != "w1" || c.fakes[0].count("DrainNode:w1=true") != 1 {
		t.Fatalf("drain through a follower: %+v, %v", n, err)
	}
	n, err = cl.DrainNode(context.Background(), "w1", false)
	if err != nil || n.Drain || c.fakes[0].count("DrainNode:w1=false") != 1 {
		t.Fatalf("undrain: %+v, %v", n, err)
	}
	if _, err := cl.DrainNode(context.Background(), "w9", true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("drain of an unknown worker: %v, want ErrNotFound", err)
	}

	before := len(c.fakes[0].calls)
	for _, tc := range []struct{ body, want string }{
		{`{"Drain":true,"X":1}`, "unknown field"},
		{`{"Drain":"yes"}`, "body must be"},
		{`nope`, "body must be"},
		{`{"Drain":true}{"Drain":false}`, "one JSON object"},
	} {
		r := doHTTP(t, http.MethodPost, c.url(1, "/nodes/w1/drain"), []byte(tc.body), nil)
		if er := r.errResponse(t); r.status != http.StatusBadRequest || !strings.Contains(er.Message, tc.want) {
			t.Fatalf("body %s: %d %q, want 400 containing %q", tc.body, r.status, er.Message, tc.want)
		}
	}
	if after := len(c.fakes[0].calls); after != before {
		t.Fatalf("bad drain requests reached the leader: %d calls, before %d", after, before)
	}
}
