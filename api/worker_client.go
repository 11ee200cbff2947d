package api

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/google/uuid"
)

// WorkerClient is the manager's client of the worker API. Each call makes one
// attempt at the worker named by addr ("host:port" or "http://host:port"):
// the leader's control loop decides what to retry, and when. Error answers
// map to the sentinels as for Client (see StatusError); a 409 whose message
// names a stale generation wraps ErrStaleGeneration as well as ErrConflict.
// It is safe for concurrent use.
type WorkerClient struct {
	hc      *http.Client
	scheme  string // of addresses given without one: https with TLS
	timeout time.Duration
	// inflight holds a slot per request/response call in flight (not the
	// log streams of Logs), workerCallsInFlight in all.
	inflight chan struct{}
}

// workerCallsInFlight bounds the calls a WorkerClient has in flight at
// once, to all workers together; more wait for a slot (within their
// context). A new leader's first pass over 100,000 tasks started one call
// per task needing a worker: 6,000–14,000 goroutines runnable at once on
// two cores, and raft's heartbeats waited behind them past the 100 ms
// lease of the fast profile, election after election (bench/scale/SCALE.md).
const workerCallsInFlight = 64

// NewWorkerClient returns a worker client whose requests each take at most
// timeout (DefaultRequestTimeout when timeout ≤ 0).
func NewWorkerClient(timeout time.Duration) *WorkerClient {
	return NewWorkerClientFrom(timeout, "")
}

// NewWorkerClientFrom is NewWorkerClient with requests leaving from the local
// address sourceIP ("" lets the kernel choose).
func NewWorkerClientFrom(timeout time.Duration, sourceIP string) *WorkerClient {
	return NewWorkerClientTLS(timeout, sourceIP, nil)
}

// workerIdleConnsPerHost is how many idle connections a WorkerClient keeps
// to each worker between bursts.
const workerIdleConnsPerHost = 8

// workerDialsPerHost bounds the connections a WorkerClient over TLS dials
// to one worker at a time.
const workerDialsPerHost = 4

// A worker's HTTP/2 connection with no frame for workerPingAfter is
// pinged, and closed if the ping is not answered within workerPingTimeout.
const (
	workerPingAfter   = 10 * time.Second
	workerPingTimeout = 5 * time.Second
)

// NewWorkerClientTLS is NewWorkerClientFrom speaking TLS with cfg: the
// manager's certificate, and a worker's verified (see
// security.Bundle.ClientConfig). Addresses without a scheme are then
// dialed over https. A nil cfg is plain HTTP, as NewWorkerClientFrom.
func NewWorkerClientTLS(timeout time.Duration, sourceIP string, cfg *tls.Config) *WorkerClient {
	if timeout <= 0 {
		timeout = DefaultRequestTimeout
	}
	t := NewTLSTransport(sourceIP, cfg)
	// A leader calls every worker, many calls at once (a dispatch per
	// task), and the workers' API speaks HTTP/1.1. The transport's total
	// of 100 idle connections (Go's default) then closed, past 100
	// workers, connections to some worker after every burst, and each
	// call paid a new TLS handshake: 43 % of a leader's CPU with 200
	// workers (bench/scale/SCALE.md). No total cap on idle connections, and
	// workerIdleConnsPerHost kept per worker, so that what stays idle is
	// bounded by the number of workers (a few thousand descriptors for
	// hundreds of workers). The number of connections in use is not
	// capped: a relayed `cube logs -f` holds one for as long as it
	// follows, and a cap would let a few of them hold off the dispatches,
	// stops and polls of their worker.
	//
	// With TLS, workers speak HTTP/2 as well (worker/agent.go), and then
	// every call to a worker shares one connection: one handshake per
	// worker, not one per call in flight, and a followed log stream is one
	// stream among others. A worker machine that dies silently is noticed
	// by a ping after workerPingAfter without a frame (and any call's
	// unacknowledged data by the dialer's DeadPeerTimeout), so calls do
	// not keep going to a dead connection.
	t.MaxIdleConns = 0
	t.MaxIdleConnsPerHost = workerIdleConnsPerHost
	t.HTTP2 = &http.HTTP2Config{SendPingTimeout: workerPingAfter, PingTimeout: workerPingTimeout}
	if cfg != nil {
		// Calls made at once to a worker not yet connected each dialed a
		// connection of their own before the first handshake had told HTTP/2
		// was there (42 connections for 64 calls, all but one then closed):
		// a new leader's first pass is such a herd. At most
		// workerDialsPerHost dials at a time (for HTTP/2 the setting bounds
		// dials, not calls); a worker that speaks only HTTP/1.1 (an older
		// version, during an upgrade) gets that many calls at a time.
		t.MaxConnsPerHost = workerDialsPerHost
	}
	c := &WorkerClient{
		hc:       &http.Client{Transport: t},
		scheme:   "http",
		timeout:  timeout,
		inflight: make(chan struct{}, workerCallsInFlight),
	}
	if cfg != nil {
		c.scheme = "https"
	}
	return c
}

// Submit asks the worker at addr to run ev.Task at ev.Task.Generation and
// returns the worker's record and whether it started anything (false for a
// duplicate send). A zero ev.ID or Timestamp is filled in.
func (c *WorkerClient) Submit(ctx context.Context, addr string, ev TaskEvent) (Task, bool, error) {
	if ev.ID == uuid.Nil {
		ev.ID = uuid.New()
	}
	if ev.Timestamp.IsZero() {
		ev.Timestamp = time.Now().UTC()
	}
	// A worker needs neither, and one of an earlier version refuses a
	// body with fields it does not know (DecodeTaskEvent): never sent.
	ev.Task.Healthy, ev.Task.History = false, nil
	var t Task
	status, err := c.do(ctx, addr, http.MethodPost, "/tasks", EncodeJSON(ev), &t)
	if err != nil {
		return Task{}, false, fmt.Errorf("submit task %s to worker %s: %w", ev.Task.ID, addr, err)
	}
	return t, status == http.StatusCreated, nil
}

// Stop asks the worker at addr to stop and remove the task's container;
// ErrNotFound if the worker holds no such task.
func (c *WorkerClient) Stop(ctx context.Context, addr string, id uuid.UUID) error {
	return c.stop(ctx, addr, "/tasks/"+id.String(), id)
}

// StopUpTo is Stop fenced by generation: the worker stops the task only if
// its record is at generation gen or older, and answers ErrStaleGeneration
// if it holds a newer placement. Managers stop with it, so that a deposed
// leader acting on a stale view can never stop a newer placement.
func (c *WorkerClient) StopUpTo(ctx context.Context, addr string, id uuid.UUID, gen uint64) error {
	return c.stop(ctx, addr, fmt.Sprintf("/tasks/%s?generation=%d", id, gen), id)
}

func (c *WorkerClient) stop(ctx context.Context, addr, path string, id uuid.UUID) error {
	if _, err := c.do(ctx, addr, http.MethodDelete, path, nil, nil); err != nil {
		return fmt.Errorf("stop task %s on worker %s: %w", id, addr, err)
	}
	return nil
}

// Tasks lists every task record the worker at addr holds.
func (c *WorkerClient) Tasks(ctx context.Context, addr string) ([]Task, error) {
	var tasks []Task
	if _, err := c.do(ctx, addr, http.MethodGet, "/tasks", nil, &tasks); err != nil {
		return nil, fmt.Errorf("list tasks of worker %s: %w", addr, err)
	}
	return tasks, nil
}

// Task returns one record of the worker at addr; ErrNotFound if it holds none.
func (c *WorkerClient) Task(ctx context.Context, addr string, id uuid.UUID) (Task, error) {
	var t Task
	if _, err := c.do(ctx, addr, http.MethodGet, "/tasks/"+id.String(), nil, &t); err != nil {
		return Task{}, fmt.Errorf("get task %s from worker %s: %w", id, addr, err)
	}
	return t, nil
}

// Stats returns the figures of the worker at addr.
func (c *WorkerClient) Stats(ctx context.Context, addr string) (Stats, error) {
	var s Stats
	if _, err := c.do(ctx, addr, http.MethodGet, "/stats", nil, &s); err != nil {
		return Stats{}, fmt.Errorf("stats of worker %s: %w", addr, err)
	}
	return s, nil
}

// Logs streams the output of the task's current container on the worker at
// addr, its last opts.Tail lines when set. The caller must Close the reader.
// The client's timeout bounds the whole exchange, the caller's reading of
// the stream included, unless opts.Follow: a followed stream lasts as long
// as the container runs, so the timeout bounds only the wait for the
// answer, and ctx (or Close) the rest. A worker machine that dies mid-way
// breaks the stream through the transport's dead-peer bounds.
func (c *WorkerClient) Logs(ctx context.Context, addr string, id uuid.UUID, opts LogOptions) (io.ReadCloser, error) {
	base, err := normalizeAddr(withScheme(c.scheme, addr))
	if err != nil {
		return nil, fmt.Errorf("logs of task %s: %w", id, err)
	}
	u := base + "/tasks/" + id.String() + "/logs" + opts.query()
	// The context outlives this call: it is cancelled when the caller closes
	// the stream (or on error here), never before the body has been read.
	var cancel context.CancelFunc
	var opened func() bool
	if opts.Follow {
		// A timer, not a deadline: a deadline on ctx would also cut the
		// stream off later.
		ctx, cancel = context.WithCancel(ctx)
		timer := time.AfterFunc(c.timeout, cancel)
		opened = timer.Stop
	} else {
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		opened = func() bool { return true }
	}
	resp, err := send(ctx, c.hc, http.MethodGet, u, nil)
	if !opened() {
		// The timer fired: no answer in time (or one just as it fired,
		// whose body is cut off).
		if err == nil {
			resp.Body.Close()
		}
		err = fmt.Errorf("no answer within %s: %w", c.timeout, context.DeadlineExceeded)
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("logs of task %s on worker %s: %w", id, addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("logs of task %s on worker %s: %w", id, addr, responseError(resp.StatusCode, b))
	}
	return &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}, nil
}

// do sends one request to the worker and decodes a 2xx body into out.
func (c *WorkerClient) do(ctx context.Context, addr, method, path string, body []byte, out any) (int, error) {
	base, err := normalizeAddr(withScheme(c.scheme, addr))
	if err != nil {
		return 0, err
	}
	select {
	case c.inflight <- struct{}{}:
		defer func() { <-c.inflight }()
	case <-ctx.Done():
		return 0, fmt.Errorf("%s %s: %w: waiting for one of %d calls to workers in flight: %w", method, base+path, ErrNotSent, workerCallsInFlight, ctx.Err())
	}
	ans, err := roundTrip(ctx, c.hc, c.timeout, method, base+path, body)
	if err != nil {
		return 0, err
	}
	if ans.status < 200 || ans.status > 299 {
		return ans.status, responseError(ans.status, ans.body)
	}
	return ans.status, ans.decode(out)
}

// cancelOnClose releases a request's context once its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

// Close closes the body, then cancels the request's context.
func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
