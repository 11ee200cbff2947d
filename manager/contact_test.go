package manager

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/fsm"
	"github.com/google/uuid"
)

// next reads the next line of a stream, failing after a generous deadline;
// ok is false once the stream is closed.
func next(t *testing.T, ch <-chan api.Change) (api.Change, bool) {
	t.Helper()
	select {
	case c, ok := <-ch:
		return c, ok
	case <-time.After(30 * time.Second):
		t.Fatal("no line on the stream within 30 s")
		return api.Change{}, false
	}
}

// commit commits a task through the harness's raft (as leader).
func (h *harness) commit(name string) uuid.UUID {
	h.t.Helper()
	id := h.id(name)
	if _, err := h.m.apply(h.ctx, fsm.SubmitTask{Task: api.Task{ID: id, Image: "x"}, Time: time.Now()}); err != nil {
		h.t.Fatal(err)
	}
	return id
}

// lead makes the harness's raft the leader again, without telling the
// manager (no control loop to start).
func (r *memRaft) lead() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.leader, r.other, r.contact = true, "", 0
}

// TestChanges_OutOfTouchEndsStreams: a manager out of touch with a leader
// for longer than EventsLeaderTimeout ends its streams, after the changes
// they had yet to read, with a last line saying why, and refuses new ones
// (503) until contact is back. Before, a follower cut off from the others
// kept its readers waiting forever.
func TestChanges_OutOfTouchEndsStreams(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.EventsLeaderTimeout = 200 * time.Millisecond })
	t.Cleanup(h.m.Shutdown)
	h.m.startContactWatch()
	ch, _, err := h.m.Changes(h.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := h.commit("a"), h.commit("b")

	// Out of touch for longer than the bound, with two changes unread.
	h.raft.follow("m2", time.Second)
	for _, want := range []uuid.UUID{a, b} {
		if c, ok := next(t, ch); !ok || c.Error != "" || c.Task.ID != want {
			t.Fatalf("got %+v (open %v), want the change of %s first: a reader resumes after the last change it read", c, ok, h.nameOf(want))
		}
	}
	c, ok := next(t, ch)
	if !ok || !strings.Contains(c.Error, "has not heard from a raft leader for 1s (more than 200ms)") || !strings.Contains(c.Error, "another manager") {
		t.Fatalf("last line %+v (open %v), want one saying the manager is out of touch with a leader, and where to resume", c, ok)
	}
	if _, ok := next(t, ch); ok {
		t.Fatal("the stream goes on after its last line")
	}
	_, _, err = h.m.Changes(h.ctx, nil)
	if !errors.Is(err, api.ErrUnavailable) || api.StatusOf(err) != 503 || !strings.Contains(err.Error(), "has not heard from a raft leader") {
		t.Fatalf("a new stream while out of touch: %v, want 503 saying why", err)
	}

	// In touch again (within the bound): streams are served.
	h.raft.follow("m2", 100*time.Millisecond)
	ch, _, err = h.m.Changes(h.ctx, nil)
	if err != nil {
		t.Fatalf("a new stream in touch again: %v", err)
	}
	h.raft.lead()
	d := h.commit("d")
	if c, ok := next(t, ch); !ok || c.Task.ID != d {
		t.Fatalf("got %+v (open %v), want the change of d", c, ok)
	}
	if n := h.m.streams.Load(); n != 1 {
		t.Errorf("%d streams counted, want 1: an ended or refused stream must free its place", n)
	}
}

// TestChanges_PositionBeyondTheCluster: a position in an entry past the end
// of the cluster's log (a typo) is refused with 400 naming the cluster's
// last index, by the leader or by a follower that asks it; a follower
// behind a position the leader has (a reader coming from a manager ahead)
// waits and streams; a follower that cannot ask a leader refuses with 503,
// and the client tries another manager. Before, the stream waited forever.
func TestChanges_PositionBeyondTheCluster(t *testing.T) {
	h := newHarness(t, nil)
	t.Cleanup(h.m.Shutdown)
	h.commit("a")
	last := h.f.AppliedIndex()
	h.gossip.members = []cluster.Member{{Name: "m2", State: cluster.StateAlive, Meta: cluster.Meta{Role: cluster.RoleManager, API: "m2:api", RaftID: "m2"}}}
	var asked []string
	leader := func(lastIndex uint64, state string, term uint64, err error) cluster.StatusFunc {
		return func(_ context.Context, addr string) (cluster.ServerStatus, error) {
			asked = append(asked, addr)
			return cluster.ServerStatus{ID: "m2", State: state, Term: term, LastIndex: lastIndex}, err
		}
	}
	for _, tc := range []struct {
		name   string
		follow string // the leader's raft ID when this manager follows; "" leads
		status cluster.StatusFunc
		after  uint64
		want   int // 0: the stream opens
		says   string
	}{
		{name: "leader, at its last index", after: last},
		{name: "leader, past its log", after: last + 1, want: 400, says: fmt.Sprintf("position %d is beyond the cluster's last index %d (the end of the leader m1's log)", last+1, last)},
		{name: "leader, a typo", after: 99999999, want: 400, says: fmt.Sprintf("beyond the cluster's last index %d", last)},
		{name: "follower, in its own log", follow: "m2", after: last},
		{name: "follower behind the leader", follow: "m2", status: leader(last+5, "leader", 1, nil), after: last + 3},
		{name: "follower, past the leader's log", follow: "m2", status: leader(last+5, "leader", 1, nil), after: 99999999, want: 400, says: fmt.Sprintf("position 99999999 is beyond the cluster's last index %d (the end of the leader m2's log)", last+5)},
		{name: "follower, no leader known", follow: "", status: leader(last+5, "leader", 1, nil), after: last + 3, want: 503, says: "knows no leader to ask"},
		{name: "follower, the leader does not answer", follow: "m2", status: leader(0, "", 0, errors.New("connection refused")), after: last + 3, want: 503, says: "did not answer: connection refused"},
		{name: "follower, a deposed leader answers", follow: "m2", status: leader(last+5, "follower", 1, nil), after: last + 3, want: 503, says: "no longer leads"},
		{name: "follower, a leader of an older term", follow: "m2", status: leader(last+5, "leader", 0, nil), after: last + 3, want: 503, says: "no longer leads"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.follow == "" && tc.status == nil {
				h.raft.lead()
			} else {
				h.raft.follow(tc.follow, 0)
			}
			h.m.leaderStatus, asked = tc.status, nil
			ctx, cancel := context.WithCancel(h.ctx)
			defer cancel()
			after := api.Position{Index: tc.after, Seq: api.SeqAll}
			_, start, err := h.m.Changes(ctx, &after)
			switch {
			case tc.want == 0 && (err != nil || start != after):
				t.Fatalf("after %s (last index %d): start %s, %v; want the stream to open", after, last, start, err)
			case tc.want != 0 && (api.StatusOf(err) != tc.want || !strings.Contains(err.Error(), tc.says)):
				t.Fatalf("after %s (last index %d): %v (%d); want %d saying %q", after, last, err, api.StatusOf(err), tc.want, tc.says)
			}
			if tc.status != nil && tc.follow != "" && tc.after > last && (len(asked) != 1 || asked[0] != "m2:api") {
				t.Errorf("asked %v, want the leader's API (m2:api) once", asked)
			}
		})
	}

	// The follower behind streams the leader's changes once it has them,
	// skipping those the reader had.
	h.raft.follow("m2", 0)
	h.m.leaderStatus = leader(last+2, "leader", 1, nil)
	after := api.Position{Index: last + 1, Seq: api.SeqAll}
	ch, _, err := h.m.Changes(h.ctx, &after)
	if err != nil {
		t.Fatal(err)
	}
	h.raft.lead()
	h.commit("had")
	c := h.commit("new")
	if got, ok := next(t, ch); !ok || got.Task.ID != c || got.Index != last+2 {
		t.Fatalf("got %+v (open %v), want the change at %d: the first after %s", got, ok, last+2, after)
	}
	// The streams of the cases above end when their contexts are
	// cancelled, each on its own goroutine: wait for them.
	deadline := time.Now().Add(10 * time.Second)
	for h.m.streams.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := h.m.streams.Load(); n != 1 {
		t.Errorf("%d streams counted, want 1: a refused or ended stream must free its place", n)
	}
}

// TestConfig_EventsLeaderTimeout: the bound must be positive, and the
// message names the field.
func TestConfig_EventsLeaderTimeout(t *testing.T) {
	cfg := FastConfig()
	cfg.ID, cfg.API = "m1", "m1:api"
	cfg.EventsLeaderTimeout = 0
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "EventsLeaderTimeout (0s) must be positive") {
		t.Fatalf("EventsLeaderTimeout 0: %v, want an error naming the field", err)
	}
}
