package worker

import (
	"context"
	"errors"
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
	// sendBatch, if set (SendBatchesWith), delivers many records in one
	// request; batchOff is until when it is not tried again after the
	// managers said they do not take batches (an older version).
	sendBatch func(context.Context, []api.Task) error
	batchOff  time.Time
	log       hclog.Logger

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

// maxReportBatch is the most records one batch carries (the managers take
// up to api.MaxReportBatch).
const maxReportBatch = 128

// batchRetry is how long the reporter sends one record at a time after
// the managers refused a batch as unknown (a rolling upgrade under way)
// before it tries a batch again.
const batchRetry = time.Minute

// SendBatchesWith makes the reporter deliver what it has coalesced in
// batches through send (for example api.Client.ReportTasks): one request
// and one log entry for up to maxReportBatch records, instead of one
// each. Records go one by one while the managers refuse batches
// (api.ErrBatchUnsupported), and those of a batch refused as bad input
// (4xx) go one by one, so that one bad record cannot hold back the
// others. Call it before Start.
func (r *Reporter) SendBatchesWith(send func(context.Context, []api.Task) error) {
	r.sendBatch = send
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
		for _, t := range r.deliver(batch) {
			if r.ctx.Err() != nil {
				return
			}
			failed = true
			r.mu.Lock()
			if _, newer := r.pending[t.ID]; !newer {
				r.pending[t.ID] = t
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

// deliver sends the records of batch, in batches when it can, and returns
// those that could not be delivered (to retry).
func (r *Reporter) deliver(batch map[uuid.UUID]api.Task) (failed []api.Task) {
	ts := make([]api.Task, 0, len(batch))
	for _, t := range batch {
		ts = append(ts, t)
	}
	var single []api.Task
	for len(ts) > 0 {
		n := min(len(ts), maxReportBatch)
		chunk := ts[:n]
		ts = ts[n:]
		if r.sendBatch == nil || n == 1 || time.Now().Before(r.batchOff) {
			single = append(single, chunk...)
			continue
		}
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		err := r.sendBatch(ctx, chunk)
		cancel()
		switch s := api.StatusOf(err); {
		case err == nil:
		case r.ctx.Err() != nil:
			return append(failed, chunk...)
		case errors.Is(err, api.ErrBatchUnsupported):
			r.batchOff = time.Now().Add(batchRetry)
			r.log.Info("the managers do not take batches of reports; sending them one by one", "retry_batches_after", batchRetry, "error", err)
			single = append(single, chunk...)
		case s >= 400 && s < 500:
			single = append(single, chunk...) // each gets its own answer
		default:
			r.log.Warn("report tasks to managers; will retry", "reports", n, "error", err)
			failed = append(failed, chunk...)
		}
	}
	for _, t := range single {
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		err := r.send(ctx, t)
		cancel()
		if err == nil {
			continue
		}
		if r.ctx.Err() != nil {
			return append(failed, t)
		}
		r.log.Warn("report task to managers; will retry", "task_id", t.ID, "state", t.State, "error", err)
		failed = append(failed, t)
	}
	return failed
}
