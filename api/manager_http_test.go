package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
)

var _ ManagerService = (*fakeManager)(nil)

// fakeManager is an in-memory ManagerService with a settable leader. Like the
// real one it refuses writes and consistent reads with ErrNotLeader when it
// is not the leader, so a test sees it if the handler fails to forward.
type fakeManager struct {
	mu      sync.Mutex
	leader  string
	self    bool
	tasks   map[uuid.UUID]Task
	order   []uuid.UUID
	reports []Task
	tokens  []Token // tokens_http_test.go
	calls   map[string]int
	// callers holds, per method, the caller found in the context of its
	// last call (SubmitTask, ReportTask, Tasks).
	callers map[string]Caller
	// inject holds errors to return, per method, one per call; when
	// afterApply is set the call takes effect first (an outcome the caller
	// cannot see).
	inject map[string][]injected
}

type injected struct {
	err        error
	afterApply bool
}

func newFakeManager() *fakeManager {
	return &fakeManager{tasks: map[uuid.UUID]Task{}, calls: map[string]int{}, callers: map[string]Caller{}, inject: map[string][]injected{}}
}

func (f *fakeManager) setLeader(addr string, self bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leader, f.self = addr, self
}

func (f *fakeManager) injectErr(method string, err error, afterApply bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inject[method] = append(f.inject[method], injected{err, afterApply})
}

// enterLocked counts a call and pops the error injected for it, if any.
func (f *fakeManager) enterLocked(method string) (injected, bool) {
	f.calls[method]++
	q := f.inject[method]
	if len(q) == 0 {
		return injected{}, false
	}
	f.inject[method] = q[1:]
	return q[0], true
}

func (f *fakeManager) count(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

// total counts every call of the service, of any method.
func (f *fakeManager) total() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		n += c
	}
	return n
}

// caller returns the caller of the last call of method.
func (f *fakeManager) caller(method string) Caller {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.callers[method]
}

// noteCallerLocked records the caller of ctx for method.
func (f *fakeManager) noteCallerLocked(ctx context.Context, method string) {
	c, _ := CallerFrom(ctx)
	f.callers[method] = c
}

func (f *fakeManager) taskCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.tasks)
}

func (f *fakeManager) reported() []Task {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Task(nil), f.reports...)
}

// state is a comparable summary of what the fake stores.
func (f *fakeManager) state() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprintf("tasks=%d reports=%d %s", len(f.tasks), len(f.reports), EncodeJSON(f.tasks))
}

func (f *fakeManager) SubmitTask(ctx context.Context, ev TaskEvent) (Task, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noteCallerLocked(ctx, "SubmitTask")
	inj, ok := f.enterLocked("SubmitTask")
	if ok && !inj.afterApply {
		return Task{}, false, inj.err
	}
	if !f.self {
		return Task{}, false, ErrNotLeader
	}
	t := ev.Task
	if t.ID == uuid.Nil {
		t.ID = uuid.New()
	}
	created := false
	if old, exists := f.tasks[t.ID]; exists {
		t = old
	} else {
		t.State = Pending
		f.tasks[t.ID] = t
		f.order = append(f.order, t.ID)
		created = true
	}
	if ok {
		return Task{}, false, inj.err
	}
	return t, created, nil
}

func (f *fakeManager) StopTask(_ context.Context, id uuid.UUID) (Task, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if inj, ok := f.enterLocked("StopTask"); ok {
		return Task{}, inj.err
	}
	if !f.self {
		return Task{}, ErrNotLeader
	}
	t, ok := f.tasks[id]
	switch {
	case !ok:
		return Task{}, fmt.Errorf("task %s: %w", id, ErrNotFound)
	case t.State.Terminal():
		return Task{}, fmt.Errorf("task %s already ended (%s): %w", id, t.State, ErrConflict)
	}
	t.State = Completed
	f.tasks[id] = t
	return t, nil
}

func (f *fakeManager) ReportTasks(ctx context.Context, ts []Task) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noteCallerLocked(ctx, "ReportTasks")
	if inj, ok := f.enterLocked("ReportTasks"); ok {
		return inj.err
	}
	if !f.self {
		return ErrNotLeader
	}
	f.reports = append(f.reports, ts...)
	return nil
}

func (f *fakeManager) ReportTask(ctx context.Context, t Task) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noteCallerLocked(ctx, "ReportTask")
	if inj, ok := f.enterLocked("ReportTask"); ok {
		return inj.err
	}
	if !f.self {
		return ErrNotLeader
	}
	f.reports = append(f.reports, t)
	return nil
}

func (f *fakeManager) Tasks(ctx context.Context, consistent bool) ([]Task, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noteCallerLocked(ctx, "Tasks")
	if inj, ok := f.enterLocked("Tasks"); ok {
		return nil, inj.err
	}
	if consistent && !f.self {
		return nil, ErrNotLeader
	}
	var out []Task
	for _, id := range f.order {
		out = append(out, f.tasks[id])
	}
	return out, nil
}

func (f *fakeManager) Task(_ context.Context, id uuid.UUID, consistent bool) (Task, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if inj, ok := f.enterLocked("Task"); ok {
		return Task{}, inj.err
	}
	if consistent && !f.self {
		return Task{}, ErrNotLeader
	}
	t, ok := f.tasks[id]
	if !ok {
		return Task{}, fmt.Errorf("task %s: %w", id, ErrNotFound)
	}
	return t, nil
}

func (f *fakeManager) Nodes(_ context.Context, consistent bool) ([]Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if inj, ok := f.enterLocked("Nodes"); ok {
		return nil, inj.err
	}
	if consistent && !f.self {
		return nil, ErrNotLeader
	}
	return nil, nil
}

func (f *fakeManager) Cluster(context.Context) (ClusterInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if inj, ok := f.enterLocked("Cluster"); ok {
		return ClusterInfo{}, inj.err
	}
	return ClusterInfo{Self: "fake", Leader: f.leader}, nil
}

func (f *fakeManager) Leader() (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader, f.self
}

// testCluster is n manager handlers on real HTTP servers, each with its fake.
type testCluster struct {
	srvs  []*httptest.Server
	fakes []*fakeManager
	addrs []string // host:port
}

// newTestCluster starts n managers; leader is the index of the leader, or -1
// for none.
func newTestCluster(t *testing.T, n, leader int, opts ManagerHandlerOptions) *testCluster {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testkit.LoggerAt(t, "api", hclog.Debug)
	}
	c := &testCluster{}
	for range n {
		f := newFakeManager()
		srv := httptest.NewServer(NewManagerHandler(f, opts))
		t.Cleanup(srv.Close)
		c.srvs = append(c.srvs, srv)
		c.fakes = append(c.fakes, f)
		c.addrs = append(c.addrs, srv.Listener.Addr().String())
	}
	c.setLeader(leader)
	return c
}

// setLeader makes every fake agree that manager i leads (-1: no leader).
func (c *testCluster) setLeader(i int) {
	for j, f := range c.fakes {
		if i < 0 {
			f.setLeader("", false)
			continue
		}
		f.setLeader(c.addrs[i], i == j)
	}
}

func (c *testCluster) url(i int, path string) string { return c.srvs[i].URL + path }

// reply is an HTTP answer read whole.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) errResponse(t *testing.T) ErrResponse {
	t.Helper()
	var er ErrResponse
	if err := json.Unmarshal(r.body, &er); err != nil {
		t.Fatalf("body %q is not an ErrResponse: %v", r.body, err)
	}
	if er.HTTPStatusCode != r.status {
		t.Fatalf("ErrResponse.HTTPStatusCode %d, status %d", er.HTTPStatusCode, r.status)
	}
	return er
}

// doHTTP sends one request and reads the answer whole.
func doHTTP(t *testing.T, method, u string, body []byte, header http.Header) reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		t.Fatalf("new request %s %s: %v", method, u, err)
	}
	for k, vv := range header {
		req.Header[k] = vv
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s %s: %v", method, u, err)
	}
	return reply{resp.StatusCode, resp.Header, b}
}

func taskEventJSON(id uuid.UUID) []byte {
	return EncodeJSON(TaskEvent{ID: uuid.New(), State: Running, Task: Task{ID: id, Name: "echo", Image: "cube-echo:latest"}})
}

func wantLeaderHeader(t *testing.T, r reply, want string) {
	t.Helper()
	vv, ok := r.header[HeaderLeader]
	if !ok {
		t.Fatalf("no %s header (status %d, body %s)", HeaderLeader, r.status, r.body)
	}
	if want != "*" && (len(vv) != 1 || vv[0] != want) {
		t.Fatalf("%s = %q, want %q", HeaderLeader, vv, want)
	}
}

func TestManagerHandler_ForwardsWritesToLeader(t *testing.T) {
	c := newTestCluster(t, 3, 0, ManagerHandlerOptions{})
	leader, follower := c.fakes[0], c.fakes[1]
	id := uuid.New()

	r := doHTTP(t, http.MethodPost, c.url(1, "/tasks"), taskEventJSON(id), nil)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /tasks via follower: status %d, body %s; want 201", r.status, r.body)
	}
	wantLeaderHeader(t, r, c.addrs[0])
	var got Task
	if err := json.Unmarshal(r.body, &got); err != nil || got.ID != id {
		t.Fatalf("body %s (err %v), want the task %s", r.body, err, id)
	}
	if n := leader.count("SubmitTask"); n != 1 {
		t.Fatalf("leader SubmitTask calls = %d, want 1", n)
	}
	if n := follower.count("SubmitTask"); n != 0 {
		t.Fatalf("follower SubmitTask calls = %d, want 0", n)
	}

	// The same ID again, through the other follower: 200, nothing new.
	r = doHTTP(t, http.MethodPost, c.url(2, "/tasks"), taskEventJSON(id), nil)
	if r.status != http.StatusOK {
		t.Fatalf("resubmit: status %d, body %s; want 200", r.status, r.body)
	}
	if n := leader.taskCount(); n != 1 {
		t.Fatalf("leader holds %d tasks after a resubmit, want 1", n)
	}

	r = doHTTP(t, http.MethodDelete, c.url(1, "/tasks/"+id.String()), nil, nil)
	if r.status != http.StatusOK {
		t.Fatalf("DELETE via follower: status %d, body %s; want 200", r.status, r.body)
	}
	wantLeaderHeader(t, r, c.addrs[0])
	if err := json.Unmarshal(r.body, &got); err != nil || got.ID != id || got.State != Completed {
		t.Fatalf("DELETE body %s (err %v), want task %s Completed", r.body, err, id)
	}
	if n := leader.count("StopTask"); n != 1 {
		t.Fatalf("leader StopTask calls = %d, want 1", n)
	}

	report := EncodeJSON(Task{ID: id, Worker: "w1", State: Running, Image: "cube-echo:latest"})
	r = doHTTP(t, http.MethodPost, c.url(2, "/reports"), report, nil)
	if r.status != http.StatusNoContent {
		t.Fatalf("POST /reports via follower: status %d, body %s; want 204", r.status, r.body)
	}
	wantLeaderHeader(t, r, c.addrs[0])
	if n, reports := leader.count("ReportTask"), leader.reported(); n != 1 || len(reports) != 1 || reports[0].Worker != "w1" {
		t.Fatalf("leader ReportTask calls = %d, reports %+v; want one from w1", n, reports)
	}
}

// TestManagerHandler_ReportBatch: a batch of reports is forwarded to the
// leader and handed over whole; a bad batch is refused with 400 and
// reaches nobody; a client facing a manager without the route (an older
// version) gets ErrBatchUnsupported.
func TestManagerHandler_ReportBatch(t *testing.T) {
	c := newTestCluster(t, 3, 0, ManagerHandlerOptions{})
	leader := c.fakes[0]
	a, b := uuid.New(), uuid.New()
	batch := EncodeJSON(ReportBatch{Tasks: []Task{{ID: a, Worker: "w1", State: Running}, {ID: b, Worker: "w1", State: Failed}}})
	r := doHTTP(t, http.MethodPost, c.url(2, ReportBatchPath), batch, nil)
	if r.status != http.StatusNoContent {
		t.Fatalf("POST %s via follower: status %d, body %s; want 204", ReportBatchPath, r.status, r.body)
	}
	if n, reports := leader.count("ReportTasks"), leader.reported(); n != 1 || len(reports) != 2 || reports[0].ID != a || reports[1].ID != b {
		t.Fatalf("leader ReportTasks calls = %d, reports %+v; want one call with a then b", n, reports)
	}
	for name, body := range map[string]string{
		"empty":          `{"Tasks":[]}`,
		"no worker":      `{"Tasks":[{"ID":"` + a.String() + `","State":2}]}`,
		"twice":          string(EncodeJSON(ReportBatch{Tasks: []Task{{ID: a, Worker: "w1", State: Running}, {ID: a, Worker: "w1", State: Failed}}})),
		"unknown field":  `{"Tasks":[],"More":1}`,
		"not a batch":    string(EncodeJSON(Task{ID: a, Worker: "w1", State: Running})),
		"too many":       string(EncodeJSON(ReportBatch{Tasks: manyReports(MaxReportBatch + 1)})),
		"state too high": `{"Tasks":[{"ID":"` + a.String() + `","Worker":"w1","State":9}]}`,
	} {
		r := doHTTP(t, http.MethodPost, c.url(1, ReportBatchPath), []byte(body), nil)
		if r.status != http.StatusBadRequest {
			t.Errorf("%s: status %d, body %s; want 400", name, r.status, r.body)
		}
	}
	if n := leader.count("ReportTasks"); n != 1 {
		t.Fatalf("bad batches reached the leader: %d ReportTasks calls, want 1", n)
	}

	// An older manager: no such route.
	old := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(old.Close)
	cl, err := NewClient([]string{old.URL}, ClientOptions{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ReportTasks(context.Background(), []Task{{ID: a, Worker: "w1", State: Running}}); !errors.Is(err, ErrBatchUnsupported) {
		t.Fatalf("ReportTasks against a manager without the route: %v; want ErrBatchUnsupported", err)
	}
}

func manyReports(n int) []Task {
	out := make([]Task, n)
	for i := range out {
		out[i] = Task{ID: uuid.New(), Worker: "w1", State: Running}
	}
	return out
}

func TestManagerHandler_ReadsLocalUnlessConsistent(t *testing.T) {
	c := newTestCluster(t, 3, 0, ManagerHandlerOptions{})
	r := doHTTP(t, http.MethodPost, c.url(0, "/tasks"), taskEventJSON(uuid.New()), nil)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /tasks: status %d, body %s", r.status, r.body)
	}
	// Only the leader's fake holds the task, so the answer tells who served.
	cases := []struct {
		name      string
		path      string
		wantTasks int
		leaderHit bool
	}{
		{"local", "/tasks", 0, false},
		{"consistent", "/tasks?consistent", 1, true},
		{"consistent=1", "/tasks?consistent=1", 1, true},
		{"consistent=true", "/tasks?consistent=true", 1, true},
		{"consistent=false", "/tasks?consistent=false", 0, false},
		{"consistent=0", "/tasks?consistent=0", 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := c.fakes[0].count("Tasks")
			r := doHTTP(t, http.MethodGet, c.url(1, tc.path), nil, nil)
			if r.status != http.StatusOK {
				t.Fatalf("GET %s: status %d, body %s", tc.path, r.status, r.body)
			}
			wantLeaderHeader(t, r, c.addrs[0])
			var tasks []Task
			if err := json.Unmarshal(r.body, &tasks); err != nil || tasks == nil || len(tasks) != tc.wantTasks {
				t.Fatalf("GET %s: body %s (err %v), want a list of %d tasks", tc.path, r.body, err, tc.wantTasks)
			}
			if hit := c.fakes[0].count("Tasks") > before; hit != tc.leaderHit {
				t.Fatalf("GET %s: reached the leader = %v, want %v", tc.path, hit, tc.leaderHit)
			}
		})
	}

	r = doHTTP(t, http.MethodGet, c.url(2, "/nodes?consistent"), nil, nil)
	if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != "[]" || c.fakes[0].count("Nodes") != 1 {
		t.Fatalf("GET /nodes?consistent: status %d, body %s, leader Nodes calls %d; want 200 [] from the leader",
			r.status, r.body, c.fakes[0].count("Nodes"))
	}
	r = doHTTP(t, http.MethodGet, c.url(2, "/cluster"), nil, nil)
	if r.status != http.StatusOK || c.fakes[2].count("Cluster") != 1 {
		t.Fatalf("GET /cluster: status %d, body %s; want 200 from the follower itself", r.status, r.body)
	}
}

func TestManagerHandler_NoLeader(t *testing.T) {
	c := newTestCluster(t, 3, -1, ManagerHandlerOptions{})
	cases := []struct{ method, path string }{
		{http.MethodPost, "/tasks"},
		{http.MethodDelete, "/tasks/" + uuid.NewString()},
		{http.MethodPost, "/reports"},
		{http.MethodGet, "/tasks?consistent"},
	}
	for _, tc := range cases {
		var body []byte
		switch tc.path {
		case "/tasks":
			body = taskEventJSON(uuid.New())
		case "/reports":
			body = EncodeJSON(Task{ID: uuid.New(), Worker: "w1"})
		}
		start := time.Now()
		r := doHTTP(t, tc.method, c.url(1, tc.path), body, nil)
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%s %s took %s, want < 2s", tc.method, tc.path, took)
		}
		if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
			t.Fatalf("%s %s: status %d, Retry-After %q; want 503 with Retry-After", tc.method, tc.path, r.status, r.header.Get("Retry-After"))
		}
		wantLeaderHeader(t, r, "")
		if er := r.errResponse(t); !strings.Contains(er.Message, "no leader elected yet") {
			t.Fatalf("%s %s: message %q, want it to say no leader is elected", tc.method, tc.path, er.Message)
		}
	}
	// Plain reads still work without a leader.
	if r := doHTTP(t, http.MethodGet, c.url(1, "/tasks"), nil, nil); r.status != http.StatusOK {
		t.Fatalf("GET /tasks without a leader: status %d, want 200", r.status)
	}
}

func TestManagerHandler_ForwardedRequestNotForwardedAgain(t *testing.T) {
	c := newTestCluster(t, 3, 0, ManagerHandlerOptions{})
	hdr := http.Header{HeaderForwarded: {"1"}}
	r := doHTTP(t, http.MethodPost, c.url(1, "/tasks"), taskEventJSON(uuid.New()), hdr)
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("forwarded POST on a follower: status %d, body %s; want 503 with Retry-After", r.status, r.body)
	}
	wantLeaderHeader(t, r, c.addrs[0])
	if n := c.fakes[0].count("SubmitTask"); n != 0 {
		t.Fatalf("leader saw %d SubmitTask calls, want 0 (no second hop)", n)
	}
	// On the leader a forwarded request is served as usual.
	r = doHTTP(t, http.MethodPost, c.url(0, "/tasks"), taskEventJSON(uuid.New()), hdr)
	if r.status != http.StatusCreated {
		t.Fatalf("forwarded POST on the leader: status %d, body %s; want 201", r.status, r.body)
	}
}

func TestManagerHandler_LeaderUnreachable(t *testing.T) {
	// A free address refuses connections; a listener that never accepts
	// lets the connection open but never answers.
	refusedAddr := testkit.FreeAddr(t)
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })

	const timeout = 300 * time.Millisecond
	for _, tc := range []struct{ name, leader, want string }{
		{"refused", refusedAddr, "cannot reach the leader " + refusedAddr},
		{"silent", silent.Addr().String(), "the leader " + silent.Addr().String() + " did not answer within"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCluster(t, 1, -1, ManagerHandlerOptions{ForwardTimeout: timeout})
			c.fakes[0].setLeader(tc.leader, false)
			start := time.Now()
			r := doHTTP(t, http.MethodPost, c.url(0, "/tasks"), taskEventJSON(uuid.New()), nil)
			took := time.Since(start)
			if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
				t.Fatalf("status %d, body %s; want 503 with Retry-After", r.status, r.body)
			}
			if took > timeout+time.Second {
				t.Fatalf("took %s, want about ForwardTimeout (%s) at most", took, timeout)
			}
			wantLeaderHeader(t, r, tc.leader)
			if er := r.errResponse(t); !strings.Contains(er.Message, tc.want) {
				t.Fatalf("message %q, want it to contain %q", er.Message, tc.want)
			}
		})
	}
}

func TestManagerHandler_BadInput(t *testing.T) {
	const okTask = `"Image":"cube-echo:latest"`
	id := uuid.NewString()
	big := []byte(`{"Task":{` + okTask + `,"Name":"` + strings.Repeat("a", 10<<20) + `"}}`)
	cases := []struct {
		name         string
		method, path string
		body         []byte
		status       int
		want         string
	}{
		{"malformed JSON", "POST", "/tasks", []byte(`{"Task":`), 400, "ends in the middle"},
		{"syntax error", "POST", "/tasks", []byte(`{"Task" x}`), 400, "malformed JSON"},
		{"empty body", "POST", "/tasks", nil, 400, "request body is empty"},
		{"unknown field", "POST", "/tasks", []byte(`{"Tsk":{}}`), 400, `unknown field "Tsk"`},
		{"unknown task field", "POST", "/tasks", []byte(`{"Task":{` + okTask + `,"Imgae":"x"}}`), 400, `unknown field "Imgae"`},
		{"bad UUID in body", "POST", "/tasks", []byte(`{"Task":{"ID":"nope",` + okTask + `}}`), 400, "invalid ID"},
		{"wrong type", "POST", "/tasks", []byte(`{"Task":{` + okTask + `,"Cpu":"lots"}}`), 400, "field Task.Cpu"},
		{"negative cpu", "POST", "/tasks", []byte(`{"Task":{` + okTask + `,"Cpu":-1}}`), 400, "Cpu must be"},
		{"negative memory", "POST", "/tasks", []byte(`{"Task":{` + okTask + `,"Memory":-1}}`), 400, "Memory must be"},
		{"terminal state", "POST", "/tasks", []byte(`{"State":3,"Task":{` + okTask + `}}`), 400, "use DELETE /tasks/{id}"},
		{"10 MiB body", "POST", "/tasks", big, 413, "larger than the limit"},
		{"bad UUID in GET path", "GET", "/tasks/xyz", nil, 400, `task ID "xyz" is not a UUID`},
		{"bad UUID in DELETE path", "DELETE", "/tasks/xyz", nil, 400, `task ID "xyz" is not a UUID`},
		{"report without ID", "POST", "/reports", []byte(`{"Worker":"w1"}`), 400, "no task ID"},
		{"report without worker", "POST", "/reports", []byte(`{"ID":"` + id + `"}`), 400, "no Worker"},
		{"report unknown field", "POST", "/reports", []byte(`{"ID":"` + id + `","Worker":"w1","Wrkr":1}`), 400, `unknown field "Wrkr"`},
		{"report bad state", "POST", "/reports", []byte(`{"ID":"` + id + `","Worker":"w1","State":7}`), 400, "State 7"},
		{"report trailing data", "POST", "/reports", []byte(`{"ID":"` + id + `","Worker":"w1"} {}`), 400, "data after"},
		{"report empty", "POST", "/reports", nil, 400, "expected a JSON Task"},
		{"report 10 MiB", "POST", "/reports", big, 413, "larger than the limit"},
		{"unknown route", "GET", "/jobs", nil, 404, "no route for GET /jobs"},
		{"wrong method", "PUT", "/tasks", nil, 404, "no route for PUT /tasks"},
		{"trailing slash", "GET", "/tasks/", nil, 404, "no route"},
	}
	c := newTestCluster(t, 2, 0, ManagerHandlerOptions{})
	// Something stored beforehand, which bad input must not touch.
	if r := doHTTP(t, "POST", c.url(0, "/tasks"), taskEventJSON(uuid.New()), nil); r.status != http.StatusCreated {
		t.Fatalf("seed task: status %d", r.status)
	}
	before := c.fakes[0].state()
	// Bad input is refused by whichever manager it reaches, leader or follower.
	for i, where := range []string{"leader", "follower"} {
		for _, tc := range cases {
			t.Run(where+"/"+tc.name, func(t *testing.T) {
				r := doHTTP(t, tc.method, c.url(i, tc.path), tc.body, nil)
				if r.status != tc.status {
					t.Fatalf("%s %s %.80q: status %d, body %s; want %d", tc.method, tc.path, tc.body, r.status, r.body, tc.status)
				}
				wantLeaderHeader(t, r, c.addrs[0])
				if er := r.errResponse(t); !strings.Contains(er.Message, tc.want) {
					t.Fatalf("%s %s %.80q: message %q, want it to contain %q", tc.method, tc.path, tc.body, er.Message, tc.want)
				}
				if after := c.fakes[0].state(); after != before {
					t.Fatalf("leader state changed:\nbefore %s\nafter  %s", before, after)
				}
			})
		}
	}
	if n := c.fakes[0].count("SubmitTask"); n != 1 {
		t.Fatalf("leader SubmitTask calls = %d, want 1 (bad input never reaches the service)", n)
	}
}

func TestManagerHandler_ServiceErrors(t *testing.T) {
	cases := []struct {
		name   string
		method string
		err    error
		status int
		want   string
		retry  bool
	}{
		{"not leader", "SubmitTask", fmt.Errorf("apply: %w", ErrNotLeader), 503, "leadership changed", true},
		{"unknown outcome", "SubmitTask", fmt.Errorf("apply: timed out: %w", ErrUnknownOutcome), 503, "may have been applied", true},
		{"unknown outcome and not leader", "StopTask", fmt.Errorf("%w: %w", ErrUnknownOutcome, ErrNotLeader), 503, "retry with the same task ID", true},
		{"unavailable", "Tasks", fmt.Errorf("raft shutting down: %w", ErrUnavailable), 503, "raft shutting down", true},
		{"conflict", "StopTask", fmt.Errorf("task ended: %w", ErrConflict), 409, "task ended", false},
		{"validation", "SubmitTask", &ValidationError{Msg: "no worker has 64 cores"}, 400, "no worker has 64 cores", false},
		{"unexpected", "Tasks", errors.New("disk on fire"), 500, "disk on fire", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCluster(t, 1, 0, ManagerHandlerOptions{})
			c.fakes[0].injectErr(tc.method, tc.err, false)
			var r reply
			switch tc.method {
			case "SubmitTask":
				r = doHTTP(t, "POST", c.url(0, "/tasks"), taskEventJSON(uuid.New()), nil)
			case "StopTask":
				r = doHTTP(t, "DELETE", c.url(0, "/tasks/"+uuid.NewString()), nil, nil)
			case "Tasks":
				r = doHTTP(t, "GET", c.url(0, "/tasks"), nil, nil)
			}
			if r.status != tc.status {
				t.Fatalf("status %d, body %s; want %d", r.status, r.body, tc.status)
			}
			if got := r.header.Get("Retry-After") != ""; got != tc.retry {
				t.Fatalf("Retry-After present = %v, want %v", got, tc.retry)
			}
			wantLeaderHeader(t, r, c.addrs[0])
			if er := r.errResponse(t); !strings.Contains(er.Message, tc.want) {
				t.Fatalf("message %q, want it to contain %q", er.Message, tc.want)
			}
		})
	}
}

func TestManagerHandler_RelaysLeaderAnswer(t *testing.T) {
	c := newTestCluster(t, 2, 0, ManagerHandlerOptions{})
	c.fakes[0].injectErr("StopTask", fmt.Errorf("task ended: %w", ErrConflict), false)
	r := doHTTP(t, "DELETE", c.url(1, "/tasks/"+uuid.NewString()), nil, nil)
	if r.status != http.StatusConflict || r.errResponse(t).Message != "task ended: conflict" {
		t.Fatalf("status %d, body %s; want the leader's 409", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want the leader's application/json", ct)
	}
	wantLeaderHeader(t, r, c.addrs[0])
}

// FuzzManagerHandler sends arbitrary requests to a leader's handler: it must
// never panic, always answer a status below 600 with X-Cube-Leader set, and
// never answer 5xx, since its service never fails.
func FuzzManagerHandler(f *testing.F) {
	id := "bb1d59ef-9fc1-4e4b-a44d-db571eeed203"
	f.Add(uint8(1), "/tasks", []byte(`{"ID":"a7aa1d44-08f6-443e-9378-f5884311019e","State":2,"Task":{"State":1,"ID":"`+id+`","Name":"t","Image":"cube-echo:latest","ExposedPorts":{"7777/tcp":{}},"PortBindings":{"7777/tcp":"7777"},"HealthCheck":"/health"}}`))
	f.Add(uint8(1), "/tasks", []byte(`{"Task":{"Image":"x","Cpu":-1}}`))
	f.Add(uint8(1), "/reports", []byte(`{"ID":"`+id+`","Worker":"w1","State":2}`))
	f.Add(uint8(1), "/reports", []byte(`{"ID":"`+id+`"`))
	f.Add(uint8(0), "/tasks?consistent", []byte(nil))
	f.Add(uint8(0), "/tasks/"+id, []byte(nil))
	f.Add(uint8(2), "/tasks/"+id, []byte(nil))
	f.Add(uint8(2), "/tasks/%zz", []byte(nil))
	f.Add(uint8(0), "/nodes?consistent=0", []byte(nil))
	f.Add(uint8(0), "/cluster", []byte(nil))
	f.Add(uint8(3), "/tasks/../nodes", []byte(`{}`))
	f.Add(uint8(4), "/", []byte(nil))
	f.Add(uint8(1), "/system/gc", []byte(nil))
	f.Add(uint8(0), "/events?after=12.3", []byte(nil))
	f.Add(uint8(0), "/events?after=1.x", []byte(nil))
	f.Add(uint8(0), "/events?after=1&heartbeat=5s", []byte(nil))
	f.Add(uint8(0), "/events?heartbeat=1e3h", []byte(nil))
	methods := []string{"GET", "POST", "DELETE", "PUT", "HEAD", "PATCH", "OPTIONS"}
	f.Fuzz(func(t *testing.T, m uint8, path string, body []byte) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		u, err := url.ParseRequestURI(path)
		if err != nil {
			return
		}
		fake := newFakeManager()
		fake.setLeader("127.0.0.1:5556", true)
		h := NewManagerHandler(fake, ManagerHandlerOptions{})
		req := httptest.NewRequest(methods[int(m)%len(methods)], "/", bytes.NewReader(body))
		req.URL = u
		req.RequestURI = path
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code < 100 || rec.Code >= 600 {
			t.Fatalf("%s %q: status %d", req.Method, path, rec.Code)
		}
		if rec.Code >= 500 {
			t.Fatalf("%s %q %q: status %d from a leader that never fails, body %s", req.Method, path, body, rec.Code, rec.Body)
		}
		if got := rec.Header().Get(HeaderLeader); got != "127.0.0.1:5556" {
			t.Fatalf("%s %q: %s = %q", req.Method, path, HeaderLeader, got)
		}
	})
}
