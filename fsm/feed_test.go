package fsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// TestFeed_EveryChangeOnceInOrder: subscribers that keep up receive every
// task change Apply makes, once, in log order, while Apply runs on.
func TestFeed_EveryChangeOnceInOrder(t *testing.T) {
	f := New()
	f.feed = newFeed(8) // small, so that readers race the writer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const readers, tasks = 3, 200
	got := make([][]uint64, readers)
	read := make([]atomic.Int64, readers)
	var wg sync.WaitGroup
	subs := make([]*Subscription, readers)
	for i := range subs {
		subs[i] = subscribe(t, f)
	}
	for i, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.Close()
			for len(got[i]) < tasks {
				c, err := s.Next(ctx)
				if err != nil {
					t.Errorf("reader %d after %d changes: %v", i, len(got[i]), err)
					return
				}
				got[i] = append(got[i], c.Index)
				read[i].Add(1)
			}
		}()
	}
	// Each submission is one change at its own index; the writer waits
	// for the slowest reader only to stay within the ring, as a client
	// that keeps up would.
	slowest := func() int64 {
		m := read[0].Load()
		for i := range read {
			m = min(m, read[i].Load())
		}
		return m
	}
	for i := range tasks {
		for int64(i)-slowest() >= 8 && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		applyLog(t, f, uint64(i+1), SubmitTask{Task: newTask(), Time: t0})
	}
	wg.Wait()
	for i, idx := range got {
		if len(idx) != tasks {
			t.Fatalf("reader %d got %d changes, want %d", i, len(idx), tasks)
		}
		for j, n := range idx {
			if n != uint64(j+1) {
				t.Fatalf("reader %d: change %d has index %d, want %d (in order, once)", i, j, n, j+1)
			}
		}
	}
}

// kept is the number of changes the feed holds; for tests.
func (fd *feed) kept() int {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	return len(fd.ring)
}

// TestFeed_SlowSubscriberDropped: Apply never waits for a subscriber that
// does not read; once it is further behind than the ring keeps, Next says
// so (ErrFellBehind) instead of skipping changes silently.
func TestFeed_SlowSubscriberDropped(t *testing.T) {
	f := New()
	f.feed = newFeed(4)
	s := subscribe(t, f)
	defer s.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 10 {
			applyLog(t, f, uint64(i+1), SubmitTask{Task: newTask(), Time: t0})
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Apply blocked on a subscriber that does not read")
	}
	_, err := s.Next(context.Background())
	if !errors.Is(err, ErrFellBehind) {
		t.Fatalf("Next after falling 10 changes behind a ring of 4: %v, want ErrFellBehind", err)
	}
}

// TestFeed_NextWaitsAndStops: Next waits for the next change and returns
// when its context ends; a closed subscription reads no more. The feed
// keeps changes with no subscriber: a client resuming finds them.
func TestFeed_NextWaitsAndStops(t *testing.T) {
	f := New()
	s := subscribe(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := s.Next(ctx)
		errc <- err
	}()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Next after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Next did not return when its context ended")
	}

	id := uuid.New()
	go func() {
		time.Sleep(10 * time.Millisecond)
		applyLog(t, f, 7, SubmitTask{Task: api.Task{ID: id, Image: "x"}, Time: t0})
	}()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	c, err := s.Next(ctx2)
	if err != nil || c.Index != 7 || c.Task.ID != id {
		t.Fatalf("Next = %+v, %v; want the change at index 7", c, err)
	}
	s.Close()
	s.Close() // idempotent
	if _, err := s.Next(ctx2); err == nil {
		t.Fatal("Next on a closed subscription succeeded")
	}
	applyLog(t, f, 8, SubmitTask{Task: newTask(), Time: t0})
	if n := f.feed.kept(); n != 2 {
		t.Fatalf("the feed keeps %d changes with no subscriber, want 2", n)
	}
}

// TestFeed_RestoreEndsStreams: a subscriber reads the changes applied before
// a Restore replaced the state, then is told the state was replaced
// (ErrStateReplaced), never a change of the new state as if it followed
// the old. A subscription taken after the restore reads on normally.
func TestFeed_RestoreEndsStreams(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src := New()
	applyLog(t, src, 1, SubmitTask{Task: newTask(), Time: t0})
	snap := state(t, src)

	f := New()
	before := subscribe(t, f)
	defer before.Close()
	first := newTask()
	applyLog(t, f, 1, SubmitTask{Task: first, Time: t0})
	f.RestoringSnapshot(1) // as raft's snapshot store does (cluster)
	if err := f.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	after := subscribe(t, f)
	defer after.Close()
	second := newTask()
	applyLog(t, f, 2, SubmitTask{Task: second, Time: t0})

	if c, err := before.Next(ctx); err != nil || c.Task.ID != first.ID {
		t.Fatalf("before the restore: %+v, %v; want the first submission", c, err)
	}
	if c, err := before.Next(ctx); !errors.Is(err, ErrStateReplaced) {
		t.Fatalf("after the restore the old stream got %+v, %v; want ErrStateReplaced", c, err)
	}
	if c, err := after.Next(ctx); err != nil || c.Task.ID != second.ID {
		t.Fatalf("a stream taken after the restore: %+v, %v; want the second submission", c, err)
	}
}

// subscribe is Subscribe for a test: it fails the test on an error.
func subscribe(t *testing.T, f *FSM) *Subscription {
	t.Helper()
	s, _, err := f.Subscribe()
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	return s
}

// pos parses a position for a test.
func pos(t *testing.T, s string) api.Position {
	t.Helper()
	p, err := api.ParsePosition(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// drain reads the changes a subscription has ready (until none comes for
// a moment) and returns their positions.
func drain(t *testing.T, s *Subscription) []string {
	t.Helper()
	var got []string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		c, err := s.Next(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return got
		}
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		got = append(got, c.Position().String())
	}
}

// feedLog applies a log whose entries make no, one or several changes:
// index 1 a worker (no task change), 2 and 3 submissions, 4 a service, 5
// to 7 its three tasks, 8 deleting it (three changes, 8.0 to 8.2, in ID
// order), 9 a submission.
func feedLog(t *testing.T, fs ...*FSM) {
	t.Helper()
	tasks := make([]api.Task, 3)
	for i := range tasks {
		tasks[i] = api.Task{ID: uuid.New(), Name: fmt.Sprintf("web.%d", i+1), Image: "cube-echo:1", Service: "web", ServiceVersion: 1}
	}
	a, b, c := newTask(), newTask(), newTask()
	log := []any{worker("w1"), SubmitTask{Task: a, Time: t0}, SubmitTask{Task: b, Time: t0},
		PutService{Service: webService(3, "cube-echo:1"), Time: t0},
		SubmitTask{Task: tasks[0], Time: t0}, SubmitTask{Task: tasks[1], Time: t0}, SubmitTask{Task: tasks[2], Time: t0},
		DeleteService{Name: "web", Time: t0}, SubmitTask{Task: c, Time: t0}}
	for _, f := range fs {
		for i, cmd := range log {
			if res := applyLog(t, f, uint64(i+1), cmd); res.Err != nil {
				t.Fatalf("entry %d: %v", i+1, res.Err)
			}
		}
	}
}

// TestFeed_SubscribeAfter: a subscription from a position gets exactly
// the changes after it, from the feed's memory then as they apply, whether
// the position names one change (INDEX.SEQ) or a whole entry (INDEX).
func TestFeed_SubscribeAfter(t *testing.T) {
	f := New()
	feedLog(t, f)
	all := []string{"2.0", "3.0", "5.0", "6.0", "7.0", "8.0", "8.1", "8.2", "9.0"}
	for _, tc := range []struct {
		after string
		want  []string
	}{
		{"0", all},
		{"0.0", all},
		{"1", all[0:]},
		{"2.0", all[1:]},
		{"2", all[1:]},
		{"4", all[2:]},
		{"8.0", all[6:]},
		{"8.1", all[7:]},
		{"8", all[8:]},
		{"9.0", nil},
		{"9", nil},
		{"100.0", nil}, // ahead of this FSM: waits
	} {
		s, err := f.SubscribeAfter(pos(t, tc.after))
		if err != nil {
			t.Fatalf("after %s: %v", tc.after, err)
		}
		if got := drain(t, s); !slices.Equal(got, tc.want) {
			t.Errorf("after %s: got %v, want %v", tc.after, got, tc.want)
		}
		s.Close()
	}

	// A plain subscription starts after the newest change, and says so:
	// resuming from there elsewhere loses nothing and repeats nothing.
	s, start, err := f.Subscribe()
	if err != nil || start.String() != "9.0" {
		t.Fatalf("Subscribe: start %s, %v; want 9.0", start, err)
	}
	defer s.Close()
	applyLog(t, f, 10, SubmitTask{Task: newTask(), Time: t0})
	if got := drain(t, s); !slices.Equal(got, []string{"10.0"}) {
		t.Fatalf("plain subscription: %v, want [10.0]", got)
	}
}

// TestFeed_SamePositionsEverywhere: two FSMs fed the same log publish the
// same changes at the same positions, so a position read on one manager
// names the same change on another.
func TestFeed_SamePositionsEverywhere(t *testing.T) {
	a, b := New(), New()
	sa, err := a.SubscribeAfter(api.Position{})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.SubscribeAfter(api.Position{})
	if err != nil {
		t.Fatal(err)
	}
	defer sa.Close()
	defer sb.Close()
	// One log for both: the same tasks, the same IDs.
	var entries [][]byte
	tasks := []api.Task{newTask(), newTask(), newTask(), newTask()}
	cmds := []any{PutService{Service: webService(3, "cube-echo:1"), Time: t0}}
	for i, task := range tasks[:3] {
		task.Service, task.ServiceVersion, task.Name = "web", 1, fmt.Sprintf("web.%d", i)
		cmds = append(cmds, SubmitTask{Task: task, Time: t0})
	}
	cmds = append(cmds, DeleteService{Name: "web", Time: t0}, SubmitTask{Task: tasks[3], Time: t0})
	for _, cmd := range cmds {
		data, err := Encode(cmd)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, data)
	}
	replay(a, entries)
	replay(b, entries)
	read := func(s *Subscription) []string {
		var out []string
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for range 7 {
			c, err := s.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, c.Position().String()+" "+c.Task.ID.String()+" "+c.Task.DesiredState.String())
		}
		return out
	}
	if ga, gb := read(sa), read(sb); !slices.Equal(ga, gb) {
		t.Fatalf("the same log published differently:\n%v\n%v", ga, gb)
	}
}

// TestFeed_NoLongerHeld: the feed keeps the last changes only; a position
// before the oldest it keeps is refused with a *api.GapError naming the
// oldest position it can resume after, never served with a hole.
func TestFeed_NoLongerHeld(t *testing.T) {
	f := New()
	f.feed = newFeed(4)
	for i := range 10 {
		applyLog(t, f, uint64(i+1), SubmitTask{Task: newTask(), Time: t0})
	}
	// Changes 1.0 to 10.0; the ring holds 7.0 to 10.0.
	s, err := f.SubscribeAfter(pos(t, "6.0"))
	if err != nil {
		t.Fatalf("after 6.0, the last change evicted: %v", err)
	}
	if got := drain(t, s); !slices.Equal(got, []string{"7.0", "8.0", "9.0", "10.0"}) {
		t.Fatalf("after 6.0: %v", got)
	}
	s.Close()
	for _, after := range []string{"5.0", "5", "0"} {
		_, err := f.SubscribeAfter(pos(t, after))
		var gap *api.GapError
		if !errors.As(err, &gap) || !errors.Is(err, api.ErrEventsGap) || gap.Oldest == nil || gap.Oldest.String() != "6.0" ||
			gap.After.String() != after || !strings.Contains(gap.Reason, "keeps the last 4 changes") {
			t.Fatalf("after %s: %v (%+v), want a GapError with Oldest 6.0", after, err, gap)
		}
	}
}

// TestFeed_ResumeAcrossRestore: after a snapshot is restored (raft noted
// its index, as at a restart or an install from the leader) the feed
// vouches only for the changes after the snapshot's index: a position
// before it is a gap, one at or after it resumes.
func TestFeed_ResumeAcrossRestore(t *testing.T) {
	src := New()
	for i := range 5 {
		applyLog(t, src, uint64(i+1), SubmitTask{Task: newTask(), Time: t0})
	}
	snap := state(t, src)

	f := New()
	for i := range 3 {
		applyLog(t, f, uint64(i+1), SubmitTask{Task: newTask(), Time: t0})
	}
	f.RestoringSnapshot(2) // a backup read meanwhile: the highest counts
	f.RestoringSnapshot(5)
	if err := f.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if _, start, err := f.Subscribe(); err != nil || start.String() != "5" {
		t.Fatalf("Subscribe right after the restore: start %s, %v; want 5", start, err)
	}
	applyLog(t, f, 6, SubmitTask{Task: newTask(), Time: t0})
	applyLog(t, f, 7, SubmitTask{Task: newTask(), Time: t0})
	for _, tc := range []struct {
		after string
		want  []string // nil: a gap
	}{
		{"3.0", nil},
		{"4.0", nil},
		{"5.0", nil}, // 5.1 might exist, folded into the snapshot
		{"5", []string{"6.0", "7.0"}},
		{"6.0", []string{"7.0"}},
	} {
		s, err := f.SubscribeAfter(pos(t, tc.after))
		if tc.want == nil {
			var gap *api.GapError
			if !errors.As(err, &gap) || gap.Oldest.String() != "5" || !strings.Contains(gap.Reason, "snapshot of the state at index 5") {
				t.Errorf("after %s: %v, want a gap up to 5", tc.after, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("after %s: %v", tc.after, err)
		}
		if got := drain(t, s); !slices.Equal(got, tc.want) {
			t.Errorf("after %s: got %v, want %v", tc.after, got, tc.want)
		}
		s.Close()
	}
}

// TestFeed_RestoreAtUnknownIndex: restored without its index noted, the
// feed cannot say which changes it holds: subscriptions are refused as
// unavailable (503, try another manager) until the next entry applies,
// which tells it that nothing before that entry is held.
func TestFeed_RestoreAtUnknownIndex(t *testing.T) {
	f := New()
	applyLog(t, f, 1, SubmitTask{Task: newTask(), Time: t0})
	if err := f.Restore(io.NopCloser(bytes.NewReader(state(t, New())))); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.Subscribe(); !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("Subscribe: %v, want ErrUnavailable", err)
	}
	if _, err := f.SubscribeAfter(pos(t, "1.0")); !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("SubscribeAfter: %v, want ErrUnavailable", err)
	}
	applyLog(t, f, 9, worker("w1")) // changes no task
	if _, err := f.SubscribeAfter(pos(t, "7.0")); !errors.Is(err, api.ErrEventsGap) {
		t.Fatalf("after 7.0: %v, want a gap", err)
	}
	s, err := f.SubscribeAfter(pos(t, "8"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	applyLog(t, f, 10, SubmitTask{Task: newTask(), Time: t0})
	if got := drain(t, s); !slices.Equal(got, []string{"10.0"}) {
		t.Fatalf("after 8: %v", got)
	}
}

// TestFeed_LaggingManager: a position ahead of this FSM (its manager lags
// the one the client read it from) is served once the FSM catches up,
// without what the client had, even when the catching up evicts those
// changes unread.
func TestFeed_LaggingManager(t *testing.T) {
	f := New()
	f.feed = newFeed(4)
	s, err := f.SubscribeAfter(pos(t, "20.0"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 23 {
		applyLog(t, f, uint64(i+1), SubmitTask{Task: newTask(), Time: t0})
	}
	if got := drain(t, s); !slices.Equal(got, []string{"21.0", "22.0", "23.0"}) {
		t.Fatalf("after 20.0 on a manager that was at 0: %v", got)
	}
	// One it lacks evicted unread is still a loss.
	g := New()
	g.feed = newFeed(4)
	s2, err := g.SubscribeAfter(pos(t, "20.0"))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for i := range 30 {
		applyLog(t, g, uint64(i+1), SubmitTask{Task: newTask(), Time: t0})
	}
	if _, err := s2.Next(context.Background()); !errors.Is(err, ErrFellBehind) {
		t.Fatalf("Next after 21.0 was evicted unread: %v, want ErrFellBehind", err)
	}
}
