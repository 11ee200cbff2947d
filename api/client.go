package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// Defaults of ClientOptions and NewWorkerClient.
const (
	// DefaultRequestTimeout bounds one HTTP request (one attempt).
	DefaultRequestTimeout = 10 * time.Second
	// DefaultRetryFor is how long a Client keeps retrying a call on
	// connection errors and 503s; it covers a leader election with margin.
	DefaultRetryFor = 15 * time.Second
)

// Retry back-off of the Client: the first wait is short because a failover on
// loopback takes well under a second; the cap keeps a waiting caller from
// sleeping long past the moment the cluster is back.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = time.Second
)

// maxResponseBytes bounds a response body the clients read into memory (a
// task list of a large cluster fits many times over).
const maxResponseBytes = 256 << 20

// ClientOptions tunes NewClient. The zero value is usable.
type ClientOptions struct {
	// Timeout bounds each HTTP request (one attempt, body included); 0 means
	// DefaultRequestTimeout.
	Timeout time.Duration
	// RetryFor is the total time one call keeps retrying on connection errors
	// and 503s (no leader, leadership moving); 0 means DefaultRetryFor. The
	// caller's context can end a call sooner.
	RetryFor time.Duration
	// SourceIP, if set, is the local address requests leave from (when HTTP
	// is nil).
	SourceIP string
	// HTTP is the client requests go through; nil means a private one.
	// Its redirect policy and transport are used as they are.
	HTTP *http.Client
	// Token, if set, is sent in HeaderToken with every request.
	Token string
	// TLS, if set, is the TLS config of a private client (when HTTP is
	// nil), and addresses without a scheme are taken as https.
	TLS *tls.Config
	// GiveUpUnreachable, if > 0, ends a call early with an
	// *UnreachableError when, this long into it, every manager has been
	// tried and none could even be connected to (connection refused, no
	// route, unknown host): nothing is listening, so waiting out RetryFor
	// would only delay the news. Any HTTP answer during the call (a 503
	// while a leader is elected included) turns this off for the call, so
	// leader changes are retried for RetryFor as before. A CLI sets it; a
	// long-lived agent, which should wait for its cluster, leaves it 0.
	GiveUpUnreachable time.Duration
}

// UnreachableError is the error of a call that could connect to none of
// the managers: each address with the error of its last attempt. It wraps
// ErrUnavailable and the errors.
type UnreachableError struct {
	Addrs []string
	Errs  []error
}

// Error names every address tried and why it could not be reached.
func (e *UnreachableError) Error() string {
	parts := make([]string, len(e.Addrs))
	for i, a := range e.Addrs {
		parts[i] = fmt.Sprintf("%s (%s)", strings.TrimPrefix(strings.TrimPrefix(a, "http://"), "https://"), dialReason(e.Errs[i]))
	}
	return "no manager reachable: tried " + strings.Join(parts, ", ")
}

// Unwrap returns ErrUnavailable and the errors of the attempts.
func (e *UnreachableError) Unwrap() []error { return append([]error{ErrUnavailable}, e.Errs...) }

// dialError returns the connect failure inside err, if err is one: the
// request never reached a server.
func dialError(err error) (*net.OpError, bool) {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return op, true
	}
	return nil, false
}

// dialReason is the short cause of a failed connect ("connect: connection
// refused"), or the whole error when it is not one.
func dialReason(err error) string {
	if op, ok := dialError(err); ok && op.Err != nil {
		return op.Err.Error()
	}
	return err.Error()
}

// Client is a Go client of the manager API that knows every manager and
// follows the leader: it sends each request to the last leader it learned of
// (from X-Cube-Leader), falls back to the other managers in turn, and retries
// connection errors and 503s with back-off. It is safe for concurrent use.
type Client struct {
	managers []string      // base URLs, "http://host:port"
	giveUp   time.Duration // ClientOptions.GiveUpUnreachable
	scheme   string        // of the first manager; applied to advertised leaders
	hc       *http.Client
	timeout  time.Duration
	retryFor time.Duration
	next     atomic.Uint64 // round-robin position among managers

	mu     sync.Mutex
	leader string // last advertised leader, as X-Cube-Leader spells it
	// down holds when each manager last failed at the transport level
	// (no connection, or no acknowledgement within DeadPeerTimeout);
	// the round-robin passes over it for unreachableFor.
	down map[string]time.Time
}

// unreachableFor is how long the round-robin passes over a manager it could
// not reach, while another one is left: after a machine loses power, every
// call would otherwise pay DialTimeout again each time its turn comes.
const unreachableFor = 5 * time.Second

// NewClient returns a client of the managers at the given addresses
// ("host:port" or "http://host:port"; blank entries are skipped). At least
// one address is required.
func NewClient(managers []string, opts ClientOptions) (*Client, error) {
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("ClientOptions.Timeout (%s) must be ≥ 0", opts.Timeout)
	}
	if opts.RetryFor < 0 {
		return nil, fmt.Errorf("ClientOptions.RetryFor (%s) must be ≥ 0", opts.RetryFor)
	}
	if opts.GiveUpUnreachable < 0 {
		return nil, fmt.Errorf("ClientOptions.GiveUpUnreachable (%s) must be ≥ 0", opts.GiveUpUnreachable)
	}
	c := &Client{hc: opts.HTTP, timeout: opts.Timeout, retryFor: opts.RetryFor, giveUp: opts.GiveUpUnreachable}
	for _, m := range managers {
		if strings.TrimSpace(m) == "" {
			continue
		}
		if opts.TLS != nil && !strings.Contains(m, "://") {
			m = "https://" + strings.TrimSpace(m)
		}
		u, err := normalizeAddr(m)
		if err != nil {
			return nil, err
		}
		c.managers = append(c.managers, u)
	}
	if len(c.managers) == 0 {
		return nil, errors.New("no manager address given; want at least one host:port")
	}
	c.scheme, _, _ = strings.Cut(c.managers[0], "://")
	if c.timeout == 0 {
		c.timeout = DefaultRequestTimeout
	}
	if c.retryFor == 0 {
		c.retryFor = DefaultRetryFor
	}
	if c.hc == nil {
		c.hc = &http.Client{Transport: NewTLSTransport(opts.SourceIP, opts.TLS)}
	}
	c.hc = withToken(c.hc, opts.Token)
	return c, nil
}

// Logs returns the output of a task's container, read through any manager.
func (c *Client) Logs(ctx context.Context, id uuid.UUID, tail int) ([]byte, error) {
	var out []byte
	path := fmt.Sprintf("/tasks/%s/logs?tail=%d", id, tail)
	_, err := c.call(ctx, http.MethodGet, path, nil, &rawBody{&out})
	return out, err
}

// AddManager asks the cluster to add a manager (raft ID and address); it
// enters as a non-voter and the leader promotes it once it has caught up.
func (c *Client) AddManager(ctx context.Context, id, raftAddr string) error {
	body, err := json.Marshal(ServerRequest{ID: id, Addr: raftAddr})
	if err != nil {
		return err
	}
	_, err = c.call(ctx, http.MethodPost, "/cluster/servers", body, nil)
	return err
}

// RemoveManager asks the cluster to remove a manager from the raft configuration.
func (c *Client) RemoveManager(ctx context.Context, id string) error {
	_, err := c.call(ctx, http.MethodDelete, "/cluster/servers/"+url.PathEscape(id), nil, nil)
	return err
}

// CreateToken asks the cluster for a new token and returns it with its
// Secret, which no later call shows again. Unlike the other writes it is not
// idempotent: should an attempt commit but its answer be lost (a 503 with
// an unknown outcome, then a retry), a second token is made and the first,
// whose secret nobody saw, stays listed until deleted.
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (Token, error) {
	var tok Token
	if _, err := c.call(ctx, http.MethodPost, "/tokens", EncodeJSON(req), &tok); err != nil {
		return Token{}, fmt.Errorf("create token %q: %w", req.Name, err)
	}
	return tok, nil
}

// Tokens lists the tokens, without secrets; consistent as for Tasks.
func (c *Client) Tokens(ctx context.Context, consistent bool) ([]Token, error) {
	var toks []Token
	if _, err := c.call(ctx, http.MethodGet, withConsistent("/tokens", consistent), nil, &toks); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return toks, nil
}

// DeleteToken deletes the token with that accessor. Deleting a token the
// cluster does not hold succeeds (nothing changes), so the call is safe to
// retry like every other.
func (c *Client) DeleteToken(ctx context.Context, accessor uuid.UUID) error {
	if _, err := c.call(ctx, http.MethodDelete, "/tokens/"+accessor.String(), nil, nil); err != nil {
		return fmt.Errorf("delete token %s: %w", accessor, err)
	}
	return nil
}

// Leader returns the leader address the client learned last ("" if none).
func (c *Client) Leader() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader
}

// SubmitTask submits ev.Task and returns the stored task and whether this
// call created it. A zero ev.Task.ID is replaced by a fresh UUID before the
// first attempt, so that every retry names the same task and a write whose
// answer was lost is not applied twice; a zero ev.ID and Timestamp are filled
// in too. When this call chose the ID, a 200 (the task already existed) can
// only mean that one of its own attempts was committed and its answer lost
// (a retry here, or the answering manager's retry of its forward to a new
// leader): nobody else knew the ID, so the call reports it created.
func (c *Client) SubmitTask(ctx context.Context, ev TaskEvent) (Task, bool, error) {
	ours := ev.Task.ID == uuid.Nil
	if ours {
		ev.Task.ID = uuid.New()
	}
	if ev.ID == uuid.Nil {
		ev.ID = uuid.New()
	}
	if ev.Timestamp.IsZero() {
		ev.Timestamp = time.Now().UTC()
	}
	var t Task
	status, err := c.call(ctx, http.MethodPost, "/tasks", EncodeJSON(ev), &t)
	if err != nil {
		return Task{}, false, fmt.Errorf("submit task %s: %w", ev.Task.ID, err)
	}
	return t, status == http.StatusCreated || (ours && status == http.StatusOK), nil
}

// StopTask asks the cluster to stop the task and returns it as it stood once
// the stop was committed. ErrConflict means the task had already ended; this
// includes a retry after an attempt whose answer was lost but which did apply
// the stop.
func (c *Client) StopTask(ctx context.Context, id uuid.UUID) (Task, error) {
	t := Task{ID: id}
	if _, err := c.call(ctx, http.MethodDelete, "/tasks/"+id.String(), nil, &t); err != nil {
		return Task{}, fmt.Errorf("stop task %s: %w", id, err)
	}
	return t, nil
}

// Tasks lists every task; consistent asks for a linearizable read from the
// leader instead of the answering manager's local state.
func (c *Client) Tasks(ctx context.Context, consistent bool) ([]Task, error) {
	var tasks []Task
	if _, err := c.call(ctx, http.MethodGet, withConsistent("/tasks", consistent), nil, &tasks); err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	return tasks, nil
}

// Task returns one task; ErrNotFound if the cluster holds none with that ID.
func (c *Client) Task(ctx context.Context, id uuid.UUID, consistent bool) (Task, error) {
	var t Task
	if _, err := c.call(ctx, http.MethodGet, withConsistent("/tasks/"+id.String(), consistent), nil, &t); err != nil {
		return Task{}, fmt.Errorf("get task %s: %w", id, err)
	}
	return t, nil
}

// Nodes lists the workers with liveness, capacity and allocations.
func (c *Client) Nodes(ctx context.Context, consistent bool) ([]Node, error) {
	var nodes []Node
	if _, err := c.call(ctx, http.MethodGet, withConsistent("/nodes", consistent), nil, &nodes); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return nodes, nil
}

// DrainNode sets (drain) or clears a worker's Drain flag: while it is set,
// nothing new is placed on the worker and its tasks move elsewhere.
func (c *Client) DrainNode(ctx context.Context, name string, drain bool) (Node, error) {
	body, err := json.Marshal(DrainRequest{Drain: drain})
	if err != nil {
		return Node{}, err
	}
	var n Node
	if _, err := c.call(ctx, http.MethodPost, "/nodes/"+url.PathEscape(name)+"/drain", body, &n); err != nil {
		return Node{}, fmt.Errorf("drain worker %s: %w", name, err)
	}
	return n, nil
}

// Cluster returns the raft servers and gossip members as the answering
// manager sees them.
func (c *Client) Cluster(ctx context.Context) (ClusterInfo, error) {
	var info ClusterInfo
	if _, err := c.call(ctx, http.MethodGet, "/cluster", nil, &info); err != nil {
		return ClusterInfo{}, fmt.Errorf("cluster info: %w", err)
	}
	return info, nil
}

// ReportTask reports one of a worker's task records to the managers. t must
// carry its ID and Worker. Reports are safe to repeat: the leader keeps the
// newest by generation.
func (c *Client) ReportTask(ctx context.Context, t Task) error {
	if _, err := c.call(ctx, http.MethodPost, "/reports", EncodeJSON(t), nil); err != nil {
		return fmt.Errorf("report task %s: %w", t.ID, err)
	}
	return nil
}

// ReportTasks reports a batch of a worker's task records (at most
// MaxReportBatch, one per task) in one request, which the leader commits in
// one log entry. A manager that does not serve batches yet (one version
// behind) answers 404 or 405: ErrBatchUnsupported, and the caller reports
// one at a time (ReportTask).
func (c *Client) ReportTasks(ctx context.Context, ts []Task) error {
	if _, err := c.call(ctx, http.MethodPost, ReportBatchPath, EncodeJSON(ReportBatch{Tasks: ts}), nil); err != nil {
		if s := StatusOf(err); s == http.StatusNotFound || s == http.StatusMethodNotAllowed {
			return fmt.Errorf("report %d tasks: %w: %w", len(ts), ErrBatchUnsupported, err)
		}
		return fmt.Errorf("report %d tasks: %w", len(ts), err)
	}
	return nil
}

// ErrBatchUnsupported: the managers do not take batches of reports yet.
var ErrBatchUnsupported = errors.New("the managers do not take batches of reports (an older version)")

// withConsistent adds ?consistent=1 to path when asked.
func withConsistent(path string, consistent bool) string {
	if consistent {
		return path + "?consistent=1"
	}
	return path
}

// call sends one request, retrying as the Client's doc describes, and decodes
// a 2xx body into out (unless out is nil or the body empty). It returns the
// final status.
//
// Order of targets: the known leader first (it can answer everything without
// a forwarding hop), then the managers round-robin. A leader advertised by a
// failed answer is tried next, at once. After as many fast attempts as there
// are managers, plus one, the call sleeps with a doubling, jittered back-off,
// so a cluster without a leader is polled, not hammered.
func (c *Client) call(ctx context.Context, method, path string, body []byte, out any) (int, error) {
	start := time.Now()
	deadline := start.Add(c.retryFor)
	backoff := minBackoff
	hint := c.Leader()
	fast := 0
	var lastErr error
	// For GiveUpUnreachable: the last connect failure of each manager, and
	// whether any server answered at all during this call.
	var dialFailed map[string]error
	answered := false
	for {
		var target string
		if hint != "" {
			target, hint = baseURL(c.scheme, hint), ""
		} else {
			target = c.nextManager()
		}

		ans, err := roundTrip(ctx, c.hc, c.timeout, method, target+path, body)
		c.reached(target, err == nil || ctx.Err() != nil)
		if err == nil {
			c.learn(target, ans.header)
			if ans.status >= 200 && ans.status < 300 {
				return ans.status, ans.decode(out)
			}
			err = responseError(ans.status, ans.body)
			if !retryable(ans.status) {
				return ans.status, err
			}
			// Follow the leader the answering manager names, unless that
			// is where this answer came from.
			if l := ans.header.Get(HeaderLeader); l != "" && baseURL(c.scheme, l) != target {
				hint = l
			}
		} else {
			c.forget(target)
		}
		if _, ok := dialError(err); ok && ctx.Err() == nil {
			if dialFailed == nil {
				dialFailed = map[string]error{}
			}
			dialFailed[target] = err
		} else {
			answered = true
		}
		if ue := c.unreachable(dialFailed, answered, start); ue != nil {
			return 0, fmt.Errorf("%s %s: %w", method, path, ue)
		}
		lastErr = err
		if ctx.Err() != nil {
			return 0, fmt.Errorf("%s %s: %w (last error: %v)", method, path, ctx.Err(), lastErr)
		}
		remaining := time.Until(deadline)
		if remaining <= 0 {
			return 0, unavailableError(method, path, c.retryFor, lastErr)
		}
		if fast++; fast <= len(c.managers) {
			continue
		}
		fast = 0
		wait := min(Jitter(backoff), remaining)
		backoff = min(2*backoff, maxBackoff)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return 0, fmt.Errorf("%s %s: %w (last error: %v)", method, path, ctx.Err(), lastErr)
		case <-timer.C:
		}
		if hint == "" {
			hint = c.Leader()
		}
	}
}

// unreachable returns the *UnreachableError that ends a call early
// (ClientOptions.GiveUpUnreachable): nil unless giving up is asked for, no
// server answered during the call, every manager failed to connect, and the
// call has lasted giveUp.
func (c *Client) unreachable(dialFailed map[string]error, answered bool, start time.Time) *UnreachableError {
	if c.giveUp <= 0 || answered || time.Since(start) < c.giveUp {
		return nil
	}
	ue := &UnreachableError{}
	for _, m := range c.managers {
		err, ok := dialFailed[m]
		if !ok {
			return nil
		}
		ue.Addrs = append(ue.Addrs, m)
		ue.Errs = append(ue.Errs, err)
	}
	return ue
}

// learn records the leader an answer from target advertises. An empty
// advertisement clears the leader only when it comes from the manager
// believed to lead: that one knows it no longer does, while another manager
// may merely not have heard of the election yet.
func (c *Client) learn(target string, h http.Header) {
	vv, ok := h[HeaderLeader]
	if !ok {
		return
	}
	l := ""
	if len(vv) > 0 {
		l = vv[0]
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case l != "":
		c.leader = l
	case c.leader != "" && baseURL(c.scheme, c.leader) == target:
		c.leader = ""
	}
}

// nextManager is the next manager in round-robin order that was not found
// unreachable within unreachableFor; when every one was, simply the next.
func (c *Client) nextManager() string {
	n := uint64(len(c.managers))
	first := c.next.Add(1) - 1
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := uint64(0); i < n; i++ {
		m := c.managers[(first+i)%n]
		if at, ok := c.down[m]; !ok || time.Since(at) > unreachableFor {
			if i > 0 {
				c.next.Add(i)
			}
			return m
		}
	}
	return c.managers[first%n]
}

// reached records whether a call reached target (any HTTP answer counts).
func (c *Client) reached(target string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ok {
		delete(c.down, target)
		return
	}
	if c.down == nil {
		c.down = map[string]time.Time{}
	}
	c.down[target] = time.Now()
}

// forget drops the known leader when it could not be reached.
func (c *Client) forget(target string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leader != "" && baseURL(c.scheme, c.leader) == target {
		c.leader = ""
	}
}

// unavailableError is the error of a call that ran out of retry time: it
// wraps ErrUnavailable and the last failure.
func unavailableError(method, path string, retryFor time.Duration, last error) error {
	if errors.Is(last, ErrUnavailable) {
		return fmt.Errorf("%s %s: no manager could serve the request within %s: %w", method, path, retryFor, last)
	}
	return fmt.Errorf("%s %s: no manager could serve the request within %s: %w: %w", method, path, retryFor, ErrUnavailable, last)
}

// retryable reports whether an answer with this status is worth sending
// again, possibly elsewhere: the cluster (or a proxy in front of it) cannot
// serve it right now, and every request the Client sends is idempotent.
func retryable(status int) bool {
	return status == http.StatusServiceUnavailable || status == http.StatusBadGateway || status == http.StatusGatewayTimeout
}

// Jitter returns a wait between d/2 and d, so that callers that failed
// together do not retry together: the one jitter of Cube's retries (this
// client's, and the manager's calls to workers and its restart back-off).
// A d of zero or less is returned as it is.
func Jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// StatusError is an error answer (a status outside 2xx) from a Cube API. It
// wraps the sentinel that matches its status: ErrNotFound (404), ErrConflict
// (409, plus ErrStaleGeneration when the message says so), ErrUnavailable
// (502, 503, 504), and a *ValidationError carrying the server's message for
// 400 and 413.
type StatusError struct {
	// StatusCode is the HTTP status; Message the server's ErrResponse message.
	StatusCode int
	Message    string
	wrapped    []error
}

// Error returns the server's message and the status.
func (e *StatusError) Error() string {
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.StatusCode)
}

// Unwrap returns the sentinel errors the status maps to.
func (e *StatusError) Unwrap() []error { return e.wrapped }

// responseError builds the *StatusError for an error answer.
func responseError(status int, body []byte) error {
	var er ErrResponse
	msg := ""
	if json.Unmarshal(body, &er) == nil && er.Message != "" {
		msg = er.Message
	} else if msg = strings.TrimSpace(string(body)); len(msg) > 512 {
		msg = msg[:512] + "…"
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	e := &StatusError{StatusCode: status, Message: msg}
	switch {
	case status == http.StatusBadRequest, status == http.StatusRequestEntityTooLarge:
		e.wrapped = []error{&ValidationError{Msg: msg}}
	case status == http.StatusNotFound:
		e.wrapped = []error{ErrNotFound}
	case status == http.StatusConflict:
		// A stale generation is a kind of conflict: callers that only care
		// about "the state moved on" match ErrConflict and see both.
		e.wrapped = []error{ErrConflict}
		if strings.Contains(msg, ErrStaleGeneration.Error()) {
			e.wrapped = append(e.wrapped, ErrStaleGeneration)
		}
	case status == http.StatusTooManyRequests:
		e.wrapped = []error{ErrLimit}
	case retryable(status):
		e.wrapped = []error{ErrUnavailable}
	}
	return e
}

// answer is one HTTP response, read whole.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// decode unmarshals the body into out; an empty body (204) leaves out alone.
// rawBody, passed as a call's out, receives the answer's body as it is.
type rawBody struct{ p *[]byte }

func (a answer) decode(out any) error {
	if rb, ok := out.(*rawBody); ok {
		*rb.p = a.body
		return nil
	}
	if out == nil || len(bytes.TrimSpace(a.body)) == 0 {
		return nil
	}
	if err := json.Unmarshal(a.body, out); err != nil {
		return fmt.Errorf("decode %d answer: %w", a.status, err)
	}
	return nil
}

// roundTrip sends one request with its own timeout and reads the answer
// whole, so the body is always closed and the timeout covers reading it.
func roundTrip(ctx context.Context, hc *http.Client, timeout time.Duration, method, url string, body []byte) (answer, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := send(ctx, hc, method, url, body)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return answer{}, fmt.Errorf("read answer of %s %s: %w", method, url, err)
	}
	if len(b) > maxResponseBytes {
		return answer{}, fmt.Errorf("answer of %s %s is larger than %d bytes", method, url, maxResponseBytes)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// send starts one request; the caller closes the response body.
func send(ctx context.Context, hc *http.Client, method, url string, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	return hc.Do(req)
}

// normalizeAddr turns "host:port" or "http(s)://host:port" into a base URL.
func normalizeAddr(addr string) (string, error) {
	raw := strings.TrimSpace(addr)
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("address %q: %w", addr, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("address %q: scheme %q is not http or https", addr, u.Scheme)
	case u.Host == "" || u.Port() == "":
		return "", fmt.Errorf("address %q: want host:port, for example 127.0.0.1:5556", addr)
	case strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "":
		return "", fmt.Errorf("address %q: want host:port without a path", addr)
	}
	return u.Scheme + "://" + u.Host, nil
}
