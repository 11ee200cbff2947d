package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
)

// DefaultForwardTimeout bounds one request a follower forwards to the leader
// when ManagerHandlerOptions.ForwardTimeout is zero.
const DefaultForwardTimeout = 10 * time.Second

// retryAfter is the Retry-After value (seconds) of every 503 the manager
// handler writes itself. An election on loopback settles in well under a
// second, so one second is a fair first wait; the Go client backs off faster.
const retryAfter = "1"

// ManagerHandlerOptions tunes NewManagerHandler. The zero value is usable.
type ManagerHandlerOptions struct {
	// SourceIP, if set, is the local address forwarded requests leave from.
	SourceIP string

	// ForwardTimeout bounds one request forwarded to the leader, from sending
	// it to reading the whole answer; 0 means DefaultForwardTimeout. A leader
	// that does not answer in time yields a 503 rather than a hung caller.
	ForwardTimeout time.Duration
	// Logger receives forwarding failures and unexpected service errors; nil
	// discards them.
	Logger hclog.Logger
	// Transport carries forwarded requests; nil means a private clone of
	// http.DefaultTransport (with ForwardTLS, if set). Tests use it to
	// inject failures.
	Transport http.RoundTripper

	// Authenticator, if set, turns security on: every request must come
	// from a caller it establishes, with the permission the route needs
	// (see NewManagerHandler); nil leaves the API open, as with TLS off.
	Authenticator Authenticator
	// ForwardTLS, if set, is the client TLS config of requests forwarded to
	// the leader, which are then sent over https: the manager's own
	// certificate (the leader honours HeaderCaller only from a manager
	// certificate) and the leader verified as a manager. Nil forwards over
	// plain http.
	ForwardTLS *tls.Config

	// Ready, if set, answers GET /health/ready (see probes.go); nil: ready
	// whenever the process serves.
	Ready ReadyFunc
	// Metrics, if set, serves GET /metrics (Prometheus' text format); nil:
	// no such route.
	Metrics http.Handler
	// UI, if set, serves the web page of the cluster under UIPath (package
	// ui), open to everyone, and / redirects to it; nil: no such routes.
	UI http.Handler
}

// managerHandler serves the manager API for one ManagerService.
type managerHandler struct {
	svc     ManagerService
	mux     *routeMux
	guard   *guard
	client  *http.Client
	scheme  string // of forwarded requests: http, or https with ForwardTLS
	timeout time.Duration
	log     hclog.Logger
}

// NewManagerHandler returns the manager's HTTP API, which every manager serves:
//
//	POST   /tasks        submit a task (TaskEvent body); 201 and the stored task
//	                     once committed, 200 and the stored task if the ID existed
//	GET    /tasks        every task ([] when none)
//	GET    /tasks/{id}   one task
//	DELETE /tasks/{id}   stop a task; 200 and the task once the stop is committed
//	GET    /nodes        workers with liveness, capacity and allocations
//	GET    /cluster      raft servers and gossip members
//	POST   /reports      internal: a worker reports one of its task records; 204
//	POST   /reports/batch internal: many of them ({"Tasks": [...]}, at most
//	                     MaxReportBatch, one per task), one log entry; 204
//	GET    /events       task changes as they commit, one JSON Change per line;
//	                     ?after=INDEX[.SEQ] resumes after a change seen (410 if
//	                     this manager no longer holds every change since)
//	GET    /tasks/{id}/logs      the task's container output (?tail=N), through its worker
//	POST   /cluster/servers       add a manager as a raft non-voter ({"ID","Addr"}), promoted
//	                              to voter once caught up and stable; 204, 409 if unsafe
//	DELETE /cluster/servers/{id}  remove a manager from the raft configuration; 204, 409
//	                              if fewer reachable voters than a quorum would remain
//	GET    /cluster/self          internal: this manager's own raft progress (ServerStatus),
//	                              never forwarded; manager certificate or operator role
//	POST   /tokens               create a token (TokenRequest body); 201 and the
//	                             Token with its Secret, shown this once
//	GET    /tokens               every token, without secrets ([] when none)
//	DELETE /tokens/{accessor}    delete a token; 204 (also when there was none)
//	GET|POST /gossip/keyring[/local]  gossip encryption keys (keyring_http.go),
//	                     when svc implements ClusterKeyring
//	GET|PUT  /operator/snapshot       save or restore the whole state (snapshot.go),
//	                     when svc implements SnapshotService
//	GET|POST|PUT|DELETE /services[/{name}[/scale|/rollback]]  services
//	                     (service_http.go), when svc implements ServiceManager
//	GET    /health/live   200 while the process serves; open to everyone
//	GET    /health/ready  200 ready, or 503 with the reason (opts.Ready); open
//	GET    /metrics       Prometheus' text format (opts.Metrics); role read
//	GET    /ui/           the web page of the cluster (opts.UI); open, it holds no data
//	GET    /              redirects to /ui/ (with opts.UI)
//
// The probes are open, with security on too, so that a load balancer or a
// supervisor can ask without credentials: they say ready or not and why in
// general words, nothing more. /metrics needs role read, as Nomad's and
// Consul's need an ACL token: its series tell the cluster's size and load.
//
// DELETE answers 200 with the task (not the worker API's 204) so that a caller
// such as the CLI can show what it stopped without a second request.
//
// Every response carries X-Cube-Leader. Writes, and reads with ?consistent,
// are forwarded to the leader in one hop when this manager is not the leader;
// with no leader known the answer is 503 with Retry-After, at once.
//
// With opts.Authenticator set, each request is admitted before its handler
// runs (guard.go): no or unknown credentials get 401, a caller without the
// route's permission 403, both as an ErrResponse. Reads need role read,
// POST and DELETE /tasks role submit, the rest of the writes role operator
// (a manager or client certificate is operator), and POST /reports a worker
// certificate naming the report's Worker. Callers without role submit see
// every task's Env values redacted. A follower checks all of this before it
// forwards and names the caller it admitted in HeaderCaller; the leader
// takes that header from a manager certificate only, and checks again.
func NewManagerHandler(svc ManagerService, opts ManagerHandlerOptions) http.Handler {
	h := &managerHandler{svc: svc, timeout: opts.ForwardTimeout, log: opts.Logger, scheme: "http"}
	if h.timeout <= 0 {
		h.timeout = DefaultForwardTimeout
	}
	if h.log == nil {
		h.log = hclog.NewNullLogger()
	}
	h.guard = &guard{auth: opts.Authenticator, log: h.log}
	if opts.ForwardTLS != nil {
		h.scheme = "https"
	}
	rt := opts.Transport
	if rt == nil {
		rt = NewTLSTransport(opts.SourceIP, opts.ForwardTLS)
	}
	h.client = &http.Client{
		Transport: rt,
		// A redirect from the leader is relayed to the caller as is, never
		// followed here: following would turn a forwarded POST into a GET.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	// Every pattern registered here needs an entry in managerRoutes.
	mux := newRouteMux()
	mux.HandleFunc("POST /tasks", h.submitTask)
	mux.HandleFunc("GET /tasks", h.listTasks)
	mux.HandleFunc("GET /tasks/{id}", h.getTask)
	mux.HandleFunc("DELETE /tasks/{id}", h.stopTask)
	mux.HandleFunc("GET /nodes", h.nodes)
	mux.HandleFunc("POST /nodes/{name}/drain", h.drainNode)
	mux.HandleFunc("GET /cluster", h.cluster)
	mux.HandleFunc("POST /reports", h.report)
	mux.HandleFunc("POST "+ReportBatchPath, h.reportBatch)
	mux.HandleFunc("GET /events", h.events)
	mux.HandleFunc("GET /tasks/{id}/logs", h.logs)
	mux.HandleFunc("POST /cluster/servers", h.addServer)
	mux.HandleFunc("DELETE /cluster/servers/{id}", h.removeServer)
	mux.HandleFunc("GET /cluster/self", h.serverStatus)
	mux.HandleFunc("POST /tokens", h.createToken)
	mux.HandleFunc("GET /tokens", h.listTokens)
	mux.HandleFunc("DELETE /tokens/{accessor}", h.deleteToken)
	registerManagerKeyring(mux, svc)              // keyring_http.go
	h.registerSnapshot(mux)                       // snapshot.go
	h.registerGC(mux, svc)                        // gc.go
	h.registerServices(mux)                       // service_http.go
	registerProbes(mux, opts.Ready, opts.Metrics) // probes.go
	registerUI(mux, opts.UI)                      // ui.go
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, ErrResponse{
			HTTPStatusCode: http.StatusNotFound,
			Message:        fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path),
		})
	})
	h.mux = mux
	return h
}

// ServeHTTP stamps X-Cube-Leader on the response before routing, so that every
// answer (refusals, errors, the 404 fallback and the mux's own redirects
// included) tells the caller where the leader is. The caller is admitted
// against the permission of the route the request matches before any
// handler runs; a redirect is checked against the route it leads to.
func (h *managerHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	addr, _ := h.svc.Leader()
	w.Header().Set(HeaderLeader, addr)
	_, pattern := h.mux.Handler(r)
	// A stalled manager refuses before admitting: its token table is as
	// stale as the rest of its state (a deleted token would still pass, a
	// new one fail with a misleading 401). The reason names a log index and
	// a command number, nothing a caller could use, and tells an operator
	// what to do.
	if err := h.stalled(r); err != nil {
		h.unavailable(w, fmt.Sprintf("this manager cannot serve: %v; ask another manager meanwhile", err))
		return
	}
	r, ok := h.guard.admit(w, r, pattern)
	if !ok {
		return
	}
	h.mux.ServeHTTP(w, r)
}

// Staller is implemented by a ManagerService whose replicated state can
// stall (the manager's FSM met a command it does not know, see
// fsm.StallError). While Stalled returns an error, the handler answers every
// route 503 with it, but the probes and metrics: its state is frozen at an
// older point of the log, so its reads would be stale, its tokens out of
// date, and forwarding writes from it would hide that it needs upgrading.
type Staller interface {
	Stalled() error
}

// stalled returns the service's stall, unless r asks for a probe or the
// metrics, which report it their own way, or for the web page, whose static
// files hold no state and whose data calls get the stall as any call does.
func (h *managerHandler) stalled(r *http.Request) error {
	st, ok := h.svc.(Staller)
	if !ok || strings.HasPrefix(r.URL.Path, "/health/") || r.URL.Path == "/metrics" ||
		strings.HasPrefix(r.URL.Path, UIPath) || r.URL.Path == "/" {
		return nil
	}
	return st.Stalled()
}

func (h *managerHandler) submitTask(w http.ResponseWriter, r *http.Request) {
	// The body is read and checked here, before any forwarding: bad input gets
	// its 4xx from whichever manager it reached, even while no leader is
	// elected, and never costs the leader a request. The leader checks again.
	body, err := readBody(w, r)
	var ev TaskEvent
	if err == nil {
		ev, err = DecodeTaskEvent(bytes.NewReader(body))
	}
	if err == nil {
		err = ev.Validate()
	}
	if err == nil && ev.State.Terminal() {
		err = &ValidationError{Msg: fmt.Sprintf("State %d (%s) cannot be submitted; use DELETE /tasks/{id} to stop a task", ev.State, ev.State)}
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if !h.serveHere(w, r, body, true) {
		return
	}
	t, created, err := h.svc.SubmitTask(r.Context(), ev)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	status := http.StatusCreated
	if !created {
		status = http.StatusOK
	}
	writeJSON(w, status, taskFor(r.Context(), t))
}

func (h *managerHandler) listTasks(w http.ResponseWriter, r *http.Request) {
	consistent := consistentRead(r)
	if !h.serveHere(w, r, nil, consistent) {
		return
	}
	tasks, err := h.svc.Tasks(r.Context(), consistent)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSONList(w, http.StatusOK, tasksFor(r.Context(), tasks))
}

func (h *managerHandler) getTask(w http.ResponseWriter, r *http.Request) {
	id, err := PathID(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	consistent := consistentRead(r)
	if !h.serveHere(w, r, nil, consistent) {
		return
	}
	t, err := h.svc.Task(r.Context(), id, consistent)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, taskFor(r.Context(), t))
}

func (h *managerHandler) stopTask(w http.ResponseWriter, r *http.Request) {
	id, err := PathID(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if !h.serveHere(w, r, nil, true) {
		return
	}
	t, err := h.svc.StopTask(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, taskFor(r.Context(), t))
}

func (h *managerHandler) nodes(w http.ResponseWriter, r *http.Request) {
	consistent := consistentRead(r)
	if !h.serveHere(w, r, nil, consistent) {
		return
	}
	nodes, err := h.svc.Nodes(r.Context(), consistent)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if nodes == nil {
		nodes = []Node{}
	}
	writeJSON(w, http.StatusOK, nodes)
}

func (h *managerHandler) drainNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	body, err := readBody(w, r)
	var req DrainRequest
	switch {
	case err != nil:
	case name == "" || len(name) > 128:
		err = &ValidationError{Msg: "worker name is required (at most 128 characters)"}
	default:
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if derr := dec.Decode(&req); derr != nil {
			err = &ValidationError{Msg: "body must be {\"Drain\":true} or {\"Drain\":false}: " + derr.Error()}
		} else if dec.More() {
			err = &ValidationError{Msg: "body must hold one JSON object"}
		}
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if !h.serveHere(w, r, body, true) {
		return
	}
	n, err := h.svc.DrainNode(r.Context(), name, req.Drain)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, n)
}

func (h *managerHandler) cluster(w http.ResponseWriter, r *http.Request) {
	// ManagerService.Cluster has no consistent flag; ?consistent still means
	// "answer from the leader", which gives the leader's view of the cluster.
	if !h.serveHere(w, r, nil, consistentRead(r)) {
		return
	}
	info, err := h.svc.Cluster(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (h *managerHandler) report(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r)
	var t Task
	if err == nil {
		t, err = decodeReport(body)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	// Checked here, before forwarding, and again by the leader, which reads
	// the worker from HeaderCaller: a worker reports only its own tasks.
	caller, _ := CallerFrom(r.Context())
	if err := checkReporter(caller, t, "/reports"); err != nil {
		h.guard.refuse(w, r, caller, err)
		return
	}
	if !h.serveHere(w, r, body, true) {
		return
	}
	if err := h.svc.ReportTask(r.Context(), t); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// reportBatch is POST /reports/batch: report's many records in one request
// (ReportBatch, every record the worker's own), committed by the leader in
// one log entry.
func (h *managerHandler) reportBatch(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r)
	var b ReportBatch
	if err == nil {
		b, err = decodeReportBatch(body)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	caller, _ := CallerFrom(r.Context())
	for _, t := range b.Tasks {
		if err := checkReporter(caller, t, ReportBatchPath); err != nil {
			h.guard.refuse(w, r, caller, err)
			return
		}
	}
	if !h.serveHere(w, r, body, true) {
		return
	}
	if err := h.svc.ReportTasks(r.Context(), b.Tasks); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// consistentRead reports whether r asks for a linearizable read: the query
// parameter consistent is present with any value but a false one ("0",
// "false", …), so ?consistent, ?consistent=1 and ?consistent=true all count.
func consistentRead(r *http.Request) bool { return queryFlag(r, "consistent") }

// serveHere reports whether this manager serves r itself. A request that
// needs the leader (a write, or a read with ?consistent) is forwarded when this
// manager is not the leader; serveHere then answers r itself, with the
// leader's answer or a 503, and returns false. body is the request body as
// already read (nil for none).
func (h *managerHandler) serveHere(w http.ResponseWriter, r *http.Request, body []byte, needLeader bool) bool {
	if !needLeader {
		return true
	}
	leader, self := h.svc.Leader()
	switch {
	case self:
		return true
	case leader == "":
		h.unavailable(w, "no leader elected yet; retry")
	case r.Header.Get(HeaderForwarded) != "":
		// One hop only: the manager that forwarded this believed we lead, so
		// leadership is moving. Forwarding again could bounce between two
		// managers with stale views; the caller retries instead.
		h.unavailable(w, fmt.Sprintf("request was forwarded here, but this manager is not the leader (the leader is %s); retry", leader))
	default:
		h.forward(w, r, leader, body)
	}
	return false
}

// forward relays r to the leader and its answer (status, headers, body) back
// to the caller. The answer is read whole before anything is written, so that
// a leader that fails mid-answer yields a clean 503, never a truncated body.
func (h *managerHandler) forward(w http.ResponseWriter, r *http.Request, leader string, body []byte) {
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, baseURL(h.scheme, leader)+r.URL.RequestURI(), rd)
	if err != nil {
		h.unavailable(w, fmt.Sprintf("cannot forward to the leader %s: %v; retry", leader, err))
		return
	}
	copyHeader(req.Header, r.Header)
	req.Header.Set(HeaderForwarded, "1")
	// The leader authenticates this manager by its certificate and acts for
	// the caller named here, which this manager admitted; admit removed any
	// HeaderCaller the caller sent. The caller's token (HeaderToken or
	// Authorization) is relayed as it came: the leader, finding a manager
	// certificate first, does not consult it, and the link is TLS to a
	// verified manager, so relaying it shows the secret to no one new.
	req.Header.Del(HeaderCaller)
	if caller, ok := CallerFrom(r.Context()); ok && h.guard.auth != nil {
		req.Header.Set(HeaderCaller, string(bytes.TrimSpace(EncodeJSON(caller))))
	}

	resp, err := h.client.Do(req)
	var out []byte
	if err == nil {
		out, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err != nil {
		if r.Context().Err() != nil {
			// The caller has gone: nothing to log, and the answer goes nowhere.
			h.unavailable(w, fmt.Sprintf("request cancelled while forwarded to the leader %s", leader))
			return
		}
		h.log.Warn("forward to leader failed", "leader", leader, "method", r.Method, "path", r.URL.Path, "error", err)
		if errors.Is(err, context.DeadlineExceeded) {
			msg := fmt.Sprintf("the leader %s did not answer within %s; retry", leader, h.timeout)
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				// The leader may have received the write and still commit it.
				msg += " with the same task ID (the write may have been applied; a resubmit is idempotent)"
			}
			h.unavailable(w, msg)
			return
		}
		h.unavailable(w, fmt.Sprintf("cannot reach the leader %s: %v; retry", leader, err))
		return
	}
	copyHeader(w.Header(), resp.Header)
	// The leader's own X-Cube-Leader is the freshest; keep ours only when it
	// sent none (for example, it has just lost leadership).
	if l := resp.Header.Get(HeaderLeader); l != "" {
		w.Header().Set(HeaderLeader, l)
	} else {
		addr, _ := h.svc.Leader()
		w.Header().Set(HeaderLeader, addr)
	}
	if r.Method != http.MethodHead && resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified {
		w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(out)
}

// fail answers err. 503s get Retry-After and a fresh X-Cube-Leader; the
// outcome-unknown case is checked first because such an error may also wrap
// ErrNotLeader (leadership lost after the write was sent), and the caller
// must hear that the write may have been applied.
func (h *managerHandler) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch status := StatusOf(err); {
	case errors.Is(err, ErrUnknownOutcome):
		h.unavailable(w, fmt.Sprintf("the write may have been applied but its outcome is unknown (%v); retry with the same task ID, which is idempotent", err))
	case errors.Is(err, ErrNotLeader):
		leader, _ := h.svc.Leader()
		if leader == "" {
			leader = "not known yet"
		}
		h.unavailable(w, fmt.Sprintf("leadership changed while the request was handled (%v); retry, the leader is %s", err, leader))
	case status == http.StatusServiceUnavailable:
		h.unavailable(w, fmt.Sprintf("%v; retry", err))
	case status == http.StatusInternalServerError:
		h.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		writeError(w, err)
	default:
		writeError(w, err)
	}
}

// unavailable answers 503 with Retry-After and the current leader.
func (h *managerHandler) unavailable(w http.ResponseWriter, msg string) {
	addr, _ := h.svc.Leader()
	w.Header().Set(HeaderLeader, addr)
	w.Header().Set("Retry-After", retryAfter)
	writeJSON(w, http.StatusServiceUnavailable, ErrResponse{HTTPStatusCode: http.StatusServiceUnavailable, Message: msg})
}

// readBody reads the whole request body, at most MaxBodyBytes; it is kept as
// bytes because a follower both checks it and forwards it.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return nil, err
		}
		return nil, &ValidationError{Msg: fmt.Sprintf("cannot read the request body: %v", err)}
	}
	return body, nil
}

// decodeReport reads the body of POST /reports: one Task, no unknown fields,
// with the ID and Worker a report must name.
func decodeReport(body []byte) (Task, error) {
	var t Task
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		if errors.Is(err, io.EOF) {
			return Task{}, &ValidationError{Msg: "request body is empty; expected a JSON Task"}
		}
		return Task{}, describeJSONError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Task{}, &ValidationError{Msg: "request body holds data after the JSON value"}
	}
	if err := checkReport(t); err != nil {
		return Task{}, err
	}
	return t, nil
}

// checkReport checks what a report must carry: the task's ID, the
// reporting worker's name, a task state, and bounded observations.
func checkReport(t Task) error {
	switch {
	case t.ID == uuid.Nil:
		return &ValidationError{Msg: "report has no task ID"}
	case strings.TrimSpace(t.Worker) == "":
		return &ValidationError{Msg: "report has no Worker; the reporting worker must name itself"}
	case !t.State.Valid():
		return &ValidationError{Msg: fmt.Sprintf("State %d is not a task state (0 Pending … 4 Failed)", t.State)}
	}
	return t.ValidateReport()
}

// ReportBatchPath is where a worker posts a ReportBatch.
const ReportBatchPath = "/reports/batch"

// MaxReportBatch bounds the records of one ReportBatch.
const MaxReportBatch = 512

// ReportBatch is the body of POST /reports/batch: a worker's task records,
// at most one per task.
type ReportBatch struct {
	Tasks []Task
}

// decodeReportBatch reads a ReportBatch: no unknown fields, 1 to
// MaxReportBatch records, each as POST /reports requires, no task twice.
func decodeReportBatch(body []byte) (ReportBatch, error) {
	var b ReportBatch
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		if errors.Is(err, io.EOF) {
			return ReportBatch{}, &ValidationError{Msg: "request body is empty; expected {\"Tasks\": [...]}"}
		}
		return ReportBatch{}, describeJSONError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return ReportBatch{}, &ValidationError{Msg: "request body holds data after the JSON value"}
	}
	switch {
	case len(b.Tasks) == 0:
		return ReportBatch{}, &ValidationError{Msg: "the batch holds no report"}
	case len(b.Tasks) > MaxReportBatch:
		return ReportBatch{}, &ValidationError{Msg: fmt.Sprintf("the batch holds %d reports, more than %d", len(b.Tasks), MaxReportBatch)}
	}
	seen := make(map[uuid.UUID]bool, len(b.Tasks))
	for i, t := range b.Tasks {
		if err := checkReport(t); err != nil {
			return ReportBatch{}, &ValidationError{Msg: fmt.Sprintf("report %d of the batch: %v", i+1, err)}
		}
		if seen[t.ID] {
			return ReportBatch{}, &ValidationError{Msg: fmt.Sprintf("report %d of the batch: task %s is reported twice", i+1, t.ID)}
		}
		seen[t.ID] = true
	}
	return b, nil
}

// hopHeaders are meaningful for one connection only and are not relayed;
// Content-Length is recomputed from the relayed body.
var hopHeaders = map[string]bool{
	"Connection":          true,
	"Keep-Alive":          true,
	"Proxy-Connection":    true,
	"Proxy-Authenticate":  true,
	"Proxy-Authorization": true,
	"Te":                  true,
	"Trailer":             true,
	"Transfer-Encoding":   true,
	"Upgrade":             true,
	"Content-Length":      true,
}

// copyHeader copies the end-to-end headers of src into dst, replacing any
// values dst already holds for the same names.
func copyHeader(dst, src http.Header) {
	for k, vv := range src {
		if hopHeaders[k] {
			continue
		}
		dst[k] = append([]string(nil), vv...)
	}
}

// baseURL turns "host:port" into scheme://host:port; an address that already
// names a scheme is kept, without a trailing slash.
func baseURL(scheme, addr string) string {
	if strings.Contains(addr, "://") {
		return strings.TrimRight(addr, "/")
	}
	return scheme + "://" + addr
}

// newTransport returns a clone of http.DefaultTransport that keeps more idle
// connections per host (a manager forwards to one leader and dispatches to a
// few workers, many requests at once, and the default of two idle connections
// per host would open, and leave in TIME_WAIT, a connection per request), and
// that notices a peer machine that lost power: connects are bounded by
// DialTimeout and unacknowledged data by DeadPeerTimeout.
func newTransport(sourceIP string) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	d := &net.Dialer{Timeout: DialTimeout, KeepAlive: 15 * time.Second, Control: deadPeerControl}
	if ip := net.ParseIP(sourceIP); ip != nil {
		// Outgoing connections leave from this node's own address, so that a
		// firewall rule on source and destination can cut this node off (the
		// chaos tests simulate machines with loopback addresses this way).
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	t.DialContext = d.DialContext
	return t
}

// ServerRequest is the body of POST /cluster/servers.
type ServerRequest struct {
	// ID is the manager's raft server ID; Addr its raft address.
	ID   string
	Addr string
}

func (h *managerHandler) addServer(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r)
	var req ServerRequest
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if derr := dec.Decode(&req); derr != nil {
			err = &ValidationError{Msg: "body must be {\"ID\":\"m4\",\"Addr\":\"IP:PORT\"}: " + derr.Error()}
		}
	}
	if err == nil {
		if req.ID == "" || len(req.ID) > 128 {
			err = &ValidationError{Msg: "ID is required (at most 128 characters)"}
		} else if host, port, serr := net.SplitHostPort(req.Addr); serr != nil || net.ParseIP(host) == nil || port == "" {
			err = &ValidationError{Msg: fmt.Sprintf("Addr %q is not an IP:PORT raft address", req.Addr)}
		}
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if !h.serveHere(w, r, body, true) {
		return
	}
	if err := h.svc.AddManager(r.Context(), req.ID, req.Addr); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *managerHandler) removeServer(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if id == "" || len(id) > 128 {
		h.fail(w, r, &ValidationError{Msg: "server ID is required (at most 128 characters)"})
		return
	}
	if !h.serveHere(w, r, nil, true) {
		return
	}
	if err := h.svc.RemoveManager(r.Context(), id); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// events streams task changes as this manager applies them, one JSON object
// per line, flushed as each arrives. Every manager applies every committed
// change, so any manager can serve it; it is not forwarded. ?after=POS
// resumes after a change seen (on any manager): 410 with an EventsGap when
// this manager no longer holds every change since, 400 when the position
// is past the cluster's log. HeaderEventsAfter says where the stream
// starts. ?heartbeat=D asks for an EventsHeartbeat line whenever the
// stream has been idle for D (HeaderEventsHeartbeat confirms it), so that
// the client can tell a quiet stream from a dead one.
func (h *managerHandler) events(w http.ResponseWriter, r *http.Request) {
	after, err := QueryPosition(r, "after")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	beat, err := QueryHeartbeat(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	ch, start, err := h.svc.Changes(r.Context(), after)
	var gap *GapError
	if errors.As(err, &gap) {
		writeGap(w, gap)
		return
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set(HeaderEventsAfter, start.String())
	if beat > 0 {
		w.Header().Set(HeaderEventsHeartbeat, beat.String())
	}
	w.WriteHeader(http.StatusOK)
	if flusher != nil {
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	send := func(v any) bool {
		if err := enc.Encode(v); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	// idle fires once the stream has sent nothing for beat; every line
	// restarts it, so a busy stream carries no heartbeat.
	var idle <-chan time.Time
	if beat > 0 {
		t := time.NewTimer(beat)
		defer t.Stop()
		idle = t.C
		sent := send
		send = func(v any) bool { t.Reset(beat); return sent(v) }
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-idle:
			if !send(EventsHeartbeat{Heartbeat: true, Index: h.appliedIndex(r.Context())}) {
				return
			}
		case c, ok := <-ch:
			if !ok {
				return
			}
			c.Task = taskFor(r.Context(), c.Task)
			if !send(c) {
				return
			}
			if c.Error != "" {
				return // the stream's last line: the subscriber was dropped
			}
		}
	}
}

// appliedIndex is this manager's applied raft index for a heartbeat, or 0
// when it cannot say (a stalled manager, whose streams end anyway).
func (h *managerHandler) appliedIndex(ctx context.Context) uint64 {
	st, err := h.svc.ServerStatus(ctx)
	if err != nil {
		return 0
	}
	return st.AppliedIndex
}

// logs relays the task's container output from its worker.
func (h *managerHandler) logs(w http.ResponseWriter, r *http.Request) {
	id, err := PathID(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	opts, err := logOptions(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	rc, err := h.svc.Logs(r.Context(), id, opts)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	defer rc.Close()
	serveLogs(w, rc, opts.Follow)
}
