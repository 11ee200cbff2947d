package fsm

import (
	"bytes"
	"context"
	"errors"
	"io"
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
		subs[i] = f.Subscribe()
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
	s := f.Subscribe()
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
// when its context ends; a closed subscription no longer counts.
func TestFeed_NextWaitsAndStops(t *testing.T) {
	f := New()
	s := f.Subscribe()
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
	if f.feed.subs != 0 {
		t.Fatalf("%d subscribers after Close, want 0", f.feed.subs)
	}
	applyLog(t, f, 8, SubmitTask{Task: newTask(), Time: t0})
	if f.feed.kept() != 0 {
		t.Fatal("the feed keeps changes with no subscriber")
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
	before := f.Subscribe()
	defer before.Close()
	first := newTask()
	applyLog(t, f, 1, SubmitTask{Task: first, Time: t0})
	if err := f.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	after := f.Subscribe()
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
