package worker

import (
	"context"
	"sync"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
)

// Reporter pushes the worker's task records to the managers as soon as they
// change, so the leader learns of a dead container in milliseconds rather than
// at its next poll. Records are coalesced per task (only the latest matters)
// and retried with back-off while no manager answers; Enqueue never blocks the
// worker.
type Reporter struct {
	send func(context.Context, api.Task) error
	log  hclog.Logger

	mu      sync.Mutex
	pending map[uuid.UUID]api.Task
	wake    chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewReporter returns a reporter that delivers records with send (for
// example api.Client.ReportTask). Call Start, and Shutdown to stop.
func NewReporter(send func(context.Context, api.Task) error, logger hclog.Logger) *Reporter {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	r := &Reporter{
		send:    send,
		log:     logger.Named("reporter"),
		pending: make(map[uuid.UUID]api.Task),
		wake:    make(chan struct{}, 1),
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r
}

// Enqueue queues a record for delivery; a newer record of the same task
// replaces a queued older one. It never blocks (use it as Config.OnChange).
func (r *Reporter) Enqueue(t api.Task) {
	r.mu.Lock()
	r.pending[t.ID] = t
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Start runs the delivery loop.
func (r *Reporter) Start() {
	r.wg.Add(1)
	go func() { defer r.wg.Done(); r.run() }()
}

// Shutdown stops the delivery loop and waits for it; undelivered records are
// dropped (the leader's poll picks the state up).
func (r *Reporter) Shutdown() {
	r.cancel()
	r.wg.Wait()
}

func (r *Reporter) run() {
	const minBackoff, maxBackoff = 100 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.wake:
		}
		r.mu.Lock()
		batch := r.pending
		r.pending = make(map[uuid.UUID]api.Task)
		r.mu.Unlock()

		failed := false
		for id, t := range batch {
			ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
			err := r.send(ctx, t)
			cancel()
			if err == nil {
				continue
			}
			if r.ctx.Err() != nil {
				return
			}
			failed = true
			r.log.Warn("report task to managers; will retry", "task_id", id, "state", t.State, "error", err)
			r.mu.Lock()
			if _, newer := r.pending[id]; !newer {
				r.pending[id] = t
			}
			r.mu.Unlock()
		}
		if !failed {
			backoff = minBackoff
			continue
		}
		t := time.NewTimer(backoff)
		select {
		case <-r.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}
