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
