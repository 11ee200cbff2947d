package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

func TestReporter_RetriesAndKeepsTheLatest(t *testing.T) {
	var (
		mu        sync.Mutex
		delivered = map[uuid.UUID]api.State{}
		failures  = 3
	)
	send := func(ctx context.Context, task api.Task) error {
		mu.Lock()
		defer mu.Unlock()
		if failures > 0 {
			failures--
			return errors.New("no manager answers")
		}
		delivered[task.ID] = task.State
		return nil
	}
	r := NewReporter(send, nil)
	r.Start()
	defer r.Shutdown()

	a, b := uuid.New(), uuid.New()
	r.Enqueue(api.Task{ID: a, State: api.Scheduled})
	r.Enqueue(api.Task{ID: a, State: api.Running}) // replaces the queued Scheduled
	r.Enqueue(api.Task{ID: b, State: api.Failed})

	testkit.Eventually(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(delivered) != 2 || delivered[a] != api.Running || delivered[b] != api.Failed {
			return fmt.Errorf("delivered %v, want %s Running and %s Failed", delivered, a, b)
		}
		return nil
	})
}

func TestReporter_ShutdownWhileFailing(t *testing.T) {
	r := NewReporter(func(context.Context, api.Task) error { return errors.New("down") }, nil)
	r.Start()
	r.Enqueue(api.Task{ID: uuid.New()})
	done := make(chan struct{})
	go func() { r.Shutdown(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return while deliveries fail")
	}
}

// TestReporter_Batches: records coalesced while the reporter was busy go
// in batches of at most maxReportBatch; a batch the managers do not take
// (an older version) or refuse as bad input goes one record at a time, and
// batches are not tried again for a while after the former.
func TestReporter_Batches(t *testing.T) {
	for _, tc := range []struct {
		name       string
		refuse     error // every batch gets it
		wantSingle bool
		wantOff    bool
	}{
		{name: "taken"},
		{name: "older managers", refuse: fmt.Errorf("report: %w", api.ErrBatchUnsupported), wantSingle: true, wantOff: true},
		{name: "bad input", refuse: &api.ValidationError{Msg: "report 3 of the batch: no Worker"}, wantSingle: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				mu        sync.Mutex
				delivered = map[uuid.UUID]bool{}
				batches   []int
				singles   int
			)
			hold := make(chan struct{})
			first := true
			send := func(ctx context.Context, task api.Task) error {
				mu.Lock()
				wait := first
				first = false
				mu.Unlock()
				if wait {
					<-hold // the first record is delivered alone while the rest pile up
				}
				mu.Lock()
				defer mu.Unlock()
				singles++
				delivered[task.ID] = true
				return nil
			}
			r := NewReporter(send, nil)
			r.SendBatchesWith(func(ctx context.Context, ts []api.Task) error {
				mu.Lock()
				defer mu.Unlock()
				batches = append(batches, len(ts))
				if tc.refuse != nil {
					return tc.refuse
				}
				for _, task := range ts {
					delivered[task.ID] = true
				}
				return nil
			})
			r.Start()
			defer r.Shutdown()
			r.Enqueue(api.Task{ID: uuid.New(), State: api.Running})
			testkit.Eventually(t, 10*time.Second, func() error {
				mu.Lock()
				defer mu.Unlock()
				if first {
					return errors.New("the first record is not being sent yet")
				}
				return nil
			})
			const n = 300
			for range n {
				r.Enqueue(api.Task{ID: uuid.New(), State: api.Running})
			}
			close(hold)
			testkit.Eventually(t, 10*time.Second, func() error {
				mu.Lock()
				defer mu.Unlock()
				if len(delivered) != n+1 {
					return fmt.Errorf("%d of %d records delivered", len(delivered), n+1)
				}
				return nil
			})
			mu.Lock()
			defer mu.Unlock()
			total := 0
			for _, b := range batches {
				if b > maxReportBatch {
					t.Fatalf("a batch of %d records, more than %d", b, maxReportBatch)
				}
				total += b
			}
			switch {
			case !tc.wantSingle && (singles != 1 || total != n):
				t.Fatalf("%d records sent alone and %d in batches %v; want the first alone and %d in batches", singles, total, batches, n)
			case tc.wantSingle && singles != n+1:
				t.Fatalf("%d records sent alone; want all %d after the batch was refused", singles, n+1)
			case tc.wantOff && len(batches) != 1:
				t.Fatalf("batches tried %v after the managers said they take none; want one try", batches)
			case tc.name == "bad input" && len(batches) != (n+maxReportBatch-1)/maxReportBatch:
				t.Fatalf("batches tried %v; want each chunk tried, then sent one by one", batches)
			}
		})
	}
}
