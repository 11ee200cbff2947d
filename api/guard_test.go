package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/security"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
)

// testPKI is a CA in a temporary directory that signs node certificates.
type testPKI struct {
	t         *testing.T
	ca, caKey string
	dir       string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	ca, key, err := security.CreateCA(dir, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{t: t, ca: ca, caKey: key, dir: dir}
}

// bundle signs a certificate of role for name and loads it.
func (p *testPKI) bundle(role security.Role, name string) *security.Bundle {
	p.t.Helper()
	c, k, err := security.CreateCert(p.ca, p.caKey, p.dir, security.CertRequest{Role: role, Name: name, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		p.t.Fatal(err)
	}
	b, err := security.Load(security.Files{CA: p.ca, Cert: c, Key: k})
	if err != nil {
		p.t.Fatal(err)
	}
	return b
}

// testAuth is a small Authenticator: a verified certificate names the
// caller (manager and client certificates are operators), else a token
// from a fixed table, looked up by its hash as the real one does.
type testAuth struct {
	tokens map[string]Caller // by security.HashToken(secret)
}

func (a testAuth) Authenticate(r *http.Request) (Caller, error) {
	if id, ok := security.PeerIdentity(r.TLS); ok {
		c := Caller{Kind: string(id.Role), Name: id.Name}
		if id.Role != security.RoleWorker {
			c.Role = RoleOperator
		}
		return c, nil
	}
	secret := r.Header.Get(HeaderToken)
	if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && secret == "" {
		secret = b
	}
	if secret == "" {
		return Caller{}, fmt.Errorf("%w: no client certificate and no token", ErrUnauthenticated)
	}
	c, ok := a.tokens[security.HashToken(secret)]
	if !ok {
		return Caller{}, fmt.Errorf("%w: unknown token", ErrUnauthenticated)
	}
	return c, nil
}

// The secrets of the test tokens.
const (
	readSecret     = "cube_read-secret"
	submitSecret   = "cube_submit-secret"
	operatorSecret = "cube_operator-secret"
)

func newTestAuth() testAuth {
	return testAuth{tokens: map[string]Caller{
		security.HashToken(readSecret):     {Kind: CallerToken, Name: "dashboard", Role: RoleRead},
		security.HashToken(submitSecret):   {Kind: CallerToken, Name: "ci", Role: RoleSubmit},
		security.HashToken(operatorSecret): {Kind: CallerToken, Name: "admin", Role: RoleOperator},
	}}
}

// cred is one way of calling: a certificate (of this CA or another), a
// token, both or neither. name is how the tables below refer to it; who is
// the name a 403 message must mention.
type cred struct {
	name  string
	cert  *security.Bundle
	token string
	who   string
}

// client returns an HTTPS client presenting c to a server whose
// certificate has role peer and is signed by the CA of pool. A foreign
// certificate is presented as it is; the server must refuse it.
func (c cred) client(pool *security.Bundle, peer security.Role) *http.Client {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: security.ServerName(peer)}
	if c.cert != nil {
		cfg = c.cert.ClientConfig(peer)
	}
	cfg.RootCAs = pool.Pool()
	tr := &http.Transport{TLSClientConfig: cfg}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// doTLS sends one request with c and reads the answer whole; err is the
// transport's error (a refused handshake, for example).
func doTLS(t *testing.T, hc *http.Client, c cred, method, u string, body []byte, header http.Header) (reply, error) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatalf("new request %s %s: %v", method, u, err)
	}
	for k, vv := range header {
		req.Header[k] = vv
	}
	if c.token != "" {
		req.Header.Set(HeaderToken, c.token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	return reply{resp.StatusCode, resp.Header, b}, nil
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startTLS serves h over TLS with cfg on a real loopback listener.
func startTLS(t *testing.T, h http.Handler, cfg *tls.Config) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = cfg
	// Refused handshakes are expected here; they go to the test's log.
	srv.Config.ErrorLog = testkit.Logger(t, "tls").StandardLogger(nil)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// wantRefused checks a refusal: the status, the JSON ErrResponse, and a
// message naming the caller and what it lacked.
func wantRefused(t *testing.T, r reply, status int, mention ...string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, body %s; want %d", r.status, r.body, status)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	er := r.errResponse(t)
	for _, m := range mention {
		if !strings.Contains(er.Message, m) {
			t.Fatalf("message %q does not mention %q", er.Message, m)
		}
	}
	if status == http.StatusUnauthorized && r.header.Get("WWW-Authenticate") == "" {
		t.Fatalf("401 without WWW-Authenticate")
	}
}

// wantRedacted checks that a body carrying seedEnv shows its values, or
// only its keys.
func wantRedacted(t *testing.T, body []byte, redacted bool) {
	t.Helper()
	// EncodeJSON escapes < and > as \u003c and \u003e.
	text := strings.NewReplacer(`\u003c`, "<", `\u003e`, ">").Replace(string(body))
	if shown := strings.Contains(text, "hunter2"); shown == redacted {
		t.Fatalf("body %s: Env value shown = %v, want %v", body, shown, !redacted)
	}
	if redacted && !strings.Contains(text, "SECRET=<redacted>") {
		t.Fatalf("body %s: want SECRET=<redacted>", body)
	}
}

// The task every matrix fake holds, with a secret in its Env.
var (
	seedID  = uuid.MustParse("6f0c1a52-2b8e-4f7a-9d1e-3c5b7a9e0f11")
	seedEnv = []string{"SECRET=hunter2", "MODE=fast"}
)

func seededFake() *fakeManager {
	f := newFakeManager()
	f.tasks[seedID] = Task{ID: seedID, Name: "seed", Image: "cube-echo:latest", State: Running, Env: seedEnv, Worker: "w1"}
	f.order = append(f.order, seedID)
	return f
}

// authRoute is one row of an authorization matrix.
type authRoute struct {
	pattern      string // as registered: ties the row to the permission table
	method, path string
	body         []byte
	status       int      // the answer to an admitted caller
	call         string   // the fake's method an admitted caller reaches; "" for none
	allowed      []string // the names of the credentials admitted
	need         string   // what a 403 names as missing
	tasks        bool     // the answer carries seedEnv, to be redacted for read
}

// TestManagerHandler_AuthMatrix sends every route of the manager API with
// every kind of credentials to a leader serving over TLS as a manager does
// (client certificates verified if given, tokens otherwise). Exactly the
// cells the permission table allows reach the service; the others get 401,
// 403 or a refused handshake, are logged once, and reach nothing.
func TestManagerHandler_AuthMatrix(t *testing.T) {
	pki, other := newTestPKI(t), newTestPKI(t)
	server := pki.bundle(security.RoleManager, "m1")
	creds := []cred{
		{name: "none"},
		{name: "bogus token", token: "cube_nobody-issued-this"},
		{name: "other CA", cert: other.bundle(security.RoleClient, "mallory")},
		{name: "worker w1", cert: pki.bundle(security.RoleWorker, "w1"), who: `worker "w1"`},
		{name: "worker w2", cert: pki.bundle(security.RoleWorker, "w2"), who: `worker "w2"`},
		{name: "read token", token: readSecret, who: `token "dashboard" (role read)`},
		{name: "submit token", token: submitSecret, who: `token "ci" (role submit)`},
		{name: "operator token", token: operatorSecret, who: `token "admin" (role operator)`},
		{name: "client cert", cert: pki.bundle(security.RoleClient, "alice"), who: `client "alice" (role operator)`},
		{name: "manager cert", cert: pki.bundle(security.RoleManager, "m2"), who: `manager "m2" (role operator)`},
	}
	var (
		readers    = []string{"read token", "submit token", "operator token", "client cert", "manager cert"}
		submitters = []string{"submit token", "operator token", "client cert", "manager cert"}
		operators  = []string{"operator token", "client cert", "manager cert"}
		anyone     = []string{"worker w1", "worker w2", "read token", "submit token", "operator token", "client cert", "manager cert"}
		everyone   = append([]string{"none", "bogus token"}, anyone...)
	)
	// The probes and /metrics are served by what the options give.
	probeOpts := func(o ManagerHandlerOptions) ManagerHandlerOptions {
		o.Ready = func(context.Context) error { return nil }
		o.Metrics = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "cube_tasks 1\n") })
		return o
	}
	svcBody := EncodeJSON(Service{Name: "web", Count: 2, Task: Task{Image: "cube-echo:latest", Env: seedEnv}})
	submit := EncodeJSON(TaskEvent{ID: uuid.New(), State: Running, Task: Task{ID: uuid.New(), Image: "cube-echo:latest", Env: seedEnv}})
	routes := []authRoute{
		{"POST /tasks", "POST", "/tasks", submit, 201, "SubmitTask", submitters, "role submit", true},
		{"GET /tasks", "GET", "/tasks", nil, 200, "Tasks", readers, "role read", true},
		{"GET /tasks/{id}", "GET", "/tasks/" + seedID.String(), nil, 200, "Task", readers, "role read", true},
		{"DELETE /tasks/{id}", "DELETE", "/tasks/" + seedID.String(), nil, 200, "StopTask", submitters, "role submit", true},
		{"GET /nodes", "GET", "/nodes", nil, 200, "Nodes", readers, "role read", false},
		{"POST /nodes/{name}/drain", "POST", "/nodes/w1/drain", []byte(`{"Drain":true}`), 200, "DrainNode", operators, "role operator", false},
		{"GET /cluster", "GET", "/cluster", nil, 200, "Cluster", readers, "role read", false},
		{"POST /reports", "POST", "/reports", EncodeJSON(Task{ID: seedID, Worker: "w1", State: Running}), 204, "ReportTask", []string{"worker w1"}, "", false},
		{"POST /reports/batch", "POST", "/reports/batch", EncodeJSON(ReportBatch{Tasks: []Task{{ID: seedID, Worker: "w1", State: Running}}}), 204, "ReportTasks", []string{"worker w1"}, "", false},
		{"GET /events", "GET", "/events", nil, 200, "Changes", readers, "role read", true},
		{"GET /tasks/{id}/logs", "GET", "/tasks/" + seedID.String() + "/logs", nil, 200, "Logs", readers, "role read", false},
		{"POST /cluster/servers", "POST", "/cluster/servers", []byte(`{"ID":"m4","Addr":"127.0.0.1:7000"}`), 204, "AddManager", operators, "role operator", false},
		{"DELETE /cluster/servers/{id}", "DELETE", "/cluster/servers/m9", nil, 204, "RemoveManager", operators, "role operator", false},
		{"GET /cluster/self", "GET", "/cluster/self", nil, 200, "ServerStatus", operators, "role operator", false},
		{"POST /tokens", "POST", "/tokens", []byte(`{"Name":"ci","Role":"submit"}`), 201, "CreateToken", operators, "role operator", false},
		{"GET /tokens", "GET", "/tokens", nil, 200, "Tokens", operators, "role operator", false},
		{"DELETE /tokens/{accessor}", "DELETE", "/tokens/" + seedID.String(), nil, 204, "DeleteToken", operators, "role operator", false},
		{"GET /operator/snapshot", "GET", "/operator/snapshot", nil, 200, "SaveSnapshot", operators, "role operator", false},
		{"PUT /operator/snapshot", "PUT", "/operator/snapshot", []byte("good"), 200, "RestoreSnapshot", operators, "role operator", false},
		{"POST /system/gc", "POST", "/system/gc", nil, 200, "CollectGarbage", operators, "role operator", false},
		{"POST /services", "POST", "/services", svcBody, 201, "svc:create web", submitters, "role submit", false},
		{"GET /services", "GET", "/services", nil, 200, "svc:get web", readers, "role read", true},
		{"GET /services/{name}", "GET", "/services/web", nil, 200, "svc:get web", readers, "role read", true},
		{"PUT /services/{name}", "PUT", "/services/web", svcBody, 200, "svc:put web", submitters, "role submit", false},
		{"DELETE /services/{name}", "DELETE", "/services/web", nil, 204, "svc:delete web", submitters, "role submit", false},
		{"POST /services/{name}/scale", "POST", "/services/web/scale", []byte(`{"Count":2}`), 200, "svc:scale web 2", submitters, "role submit", false},
		{"POST /services/{name}/rollback", "POST", "/services/web/rollback", nil, 200, "svc:rollback web from 0", submitters, "role submit", false},
		{"GET /health/live", "GET", "/health/live", nil, 200, "", everyone, "", false},
		{"GET /health/ready", "GET", "/health/ready", nil, 200, "", everyone, "", false},
		{"GET /metrics", "GET", "/metrics", nil, 200, "", readers, "role read", false},
		{"/", "GET", "/no/such/route", nil, 404, "", anyone, "", false},
	}

	// Every registered route has a row, so a new route cannot skip the matrix.
	registered := NewManagerHandler(newFakeManager(), probeOpts(ManagerHandlerOptions{})).(*managerHandler).mux.patterns
	for _, p := range registered {
		if !slices.ContainsFunc(routes, func(r authRoute) bool { return r.pattern == p }) {
			t.Errorf("route %q is registered but not in the matrix", p)
		}
	}

	for _, rt := range routes {
		for _, c := range creds {
			t.Run(rt.method+" "+rt.path+"/"+c.name, func(t *testing.T) {
				f := seededFake()
				f.setLeader("127.0.0.1:1", true)
				logs := &syncBuffer{}
				h := NewManagerHandler(f, probeOpts(ManagerHandlerOptions{
					Authenticator: newTestAuth(),
					Logger:        hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info}),
				}))
				srv := startTLS(t, h, server.ServerConfig(false))
				r, err := doTLS(t, c.client(server, security.RoleManager), c, rt.method, srv.URL+rt.path, rt.body, nil)
				t.Log(logs.String())
				allowed := slices.Contains(rt.allowed, c.name)
				switch {
				case c.name == "other CA":
					if err == nil || !strings.Contains(err.Error(), "tls:") {
						t.Fatalf("a certificate of another CA: status %d, body %s, error %v; want a refused handshake", r.status, r.body, err)
					}
				case err != nil:
					t.Fatalf("%s %s: %v", rt.method, rt.path, err)
				case allowed:
					if r.status != rt.status {
						t.Fatalf("status %d, body %s; want %d", r.status, r.body, rt.status)
					}
					if rt.call != "" && f.count(rt.call) != 1 {
						t.Fatalf("%s calls = %d, want 1", rt.call, f.count(rt.call))
					}
					if rt.tasks {
						wantRedacted(t, r.body, c.name == "read token")
					}
					if strings.Contains(logs.String(), "request refused") {
						t.Fatalf("an admitted request was logged as refused")
					}
					return
				case c.name == "none" || c.name == "bogus token":
					wantRefused(t, r, http.StatusUnauthorized)
				default:
					mention := []string{c.who, rt.method + " " + rt.path}
					if rt.need != "" {
						mention = append(mention, "needs "+rt.need)
					}
					wantRefused(t, r, http.StatusForbidden, mention...)
				}
				if n := f.total(); n != 0 {
					t.Fatalf("a refused request reached the service: %d calls %v", n, f.calls)
				}
				if c.name != "other CA" {
					if n := strings.Count(logs.String(), "request refused"); n != 1 {
						t.Fatalf("refusal logged %d times, want once", n)
					}
				}
			})
		}
	}
}

// TestManagerRoutes_AllHavePermissions walks the patterns NewManagerHandler
// registers: each must have an entry in the permission table.
func TestManagerRoutes_AllHavePermissions(t *testing.T) {
	h := NewManagerHandler(newFakeManager(), ManagerHandlerOptions{}).(*managerHandler)
	if len(h.mux.patterns) < 12 {
		t.Fatalf("only %d patterns recorded: %q", len(h.mux.patterns), h.mux.patterns)
	}
	for _, p := range h.mux.patterns {
		if routeAccess(p) == accessNone {
			t.Errorf("route %q has no permission in managerRoutes", p)
		}
	}
	for p := range managerRoutes {
		if !slices.Contains(h.mux.patterns, p) {
			t.Logf("permission for %q, a route not registered (yet)", p)
		}
	}
}

func TestRouteAccess(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		want    access
	}{
		{"GET /tasks", accessRead},
		{"POST /tasks", accessSubmit},
		{"POST /reports", accessWorker},
		{"POST /tokens", accessOperator},
		{"GET /tokens", accessOperator},
		{"DELETE /tokens/{accessor}", accessOperator},
		{"/gossip/keyring", accessOperator},
		{"GET /gossip/keyring", accessOperator},
		{"POST /gossip/keyring/{op}", accessOperator},
		{"PUT /gossip/keyring/use", accessOperator},
		{"GET /gossip/keyringx", accessNone},
		{"GET /ui/", accessOpen},
		{"GET /{$}", accessOpen},
		{"GET /secrets", accessNone},
		{"", accessNone},
	} {
		if got := routeAccess(tc.pattern); got != tc.want {
			t.Errorf("routeAccess(%q) = %v, want %v", tc.pattern, got, tc.want)
		}
	}
}

// A route registered without a permission is refused to everyone, the
// most trusted callers included, and its handler never runs.
func TestManagerHandler_RouteWithoutPermissionIsRefused(t *testing.T) {
	pki := newTestPKI(t)
	server := pki.bundle(security.RoleManager, "m1")
	f := seededFake()
	f.setLeader("127.0.0.1:1", true)
	h := NewManagerHandler(f, ManagerHandlerOptions{Authenticator: newTestAuth(), Logger: testkit.Logger(t, "api")}).(*managerHandler)
	reached := false
	h.mux.HandleFunc("GET /secrets", func(http.ResponseWriter, *http.Request) { reached = true })
	srv := startTLS(t, h, server.ServerConfig(false))
	for _, c := range []cred{
		{name: "manager", cert: pki.bundle(security.RoleManager, "m2")},
		{name: "operator", token: operatorSecret},
	} {
		r, err := doTLS(t, c.client(server, security.RoleManager), c, "GET", srv.URL+"/secrets", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		wantRefused(t, r, http.StatusForbidden, "missing from the permission table")
	}
	if reached {
		t.Fatal("the handler of a route without permission ran")
	}
}

// TestManagerHandler_AuthOff: without an Authenticator every request is
// admitted as an anonymous operator (Env shown), and a caller header is
// not trusted for anything.
func TestManagerHandler_AuthOff(t *testing.T) {
	f := seededFake()
	f.setLeader("127.0.0.1:1", true)
	srv := httptest.NewServer(NewManagerHandler(f, ManagerHandlerOptions{}))
	t.Cleanup(srv.Close)
	hdr := http.Header{HeaderCaller: {`{"Kind":"token","Name":"x","Role":"read"}`}}
	r := doHTTP(t, "GET", srv.URL+"/tasks", nil, hdr)
	if r.status != 200 || !bytes.Contains(r.body, []byte("hunter2")) {
		t.Fatalf("GET /tasks with security off: %d %s; want 200 with Env", r.status, r.body)
	}
	if c := f.caller("Tasks"); c != anonymous {
		t.Fatalf("caller %+v, want %+v", c, anonymous)
	}
	r = doHTTP(t, "POST", srv.URL+"/reports", EncodeJSON(Task{ID: seedID, Worker: "w9", State: Running}), nil)
	if r.status != http.StatusNoContent {
		t.Fatalf("report with security off: %d %s", r.status, r.body)
	}
}

// forwardingPair is a leader and a follower serving over TLS with an
// Authenticator, the follower forwarding with its manager certificate.
type forwardingPair struct {
	pki              *testPKI
	server           *security.Bundle // the certificate the servers present
	leader, follower *fakeManager
	leaderURL        string
	followerURL      string
	logs             *syncBuffer // the leader's log
}

func newForwardingPair(t *testing.T) *forwardingPair {
	t.Helper()
	p := &forwardingPair{pki: newTestPKI(t), logs: &syncBuffer{}}
	p.server = p.pki.bundle(security.RoleManager, "m1")
	m2 := p.pki.bundle(security.RoleManager, "m2")
	p.leader, p.follower = seededFake(), newFakeManager()
	lh := NewManagerHandler(p.leader, ManagerHandlerOptions{
		Authenticator: newTestAuth(),
		Logger:        hclog.New(&hclog.LoggerOptions{Output: p.logs, Level: hclog.Info}),
	})
	ls := startTLS(t, lh, p.server.ServerConfig(false))
	leaderAddr := ls.Listener.Addr().String()
	fh := NewManagerHandler(p.follower, ManagerHandlerOptions{
		Authenticator: newTestAuth(),
		Logger:        testkit.LoggerAt(t, "follower", hclog.Debug),
		ForwardTLS:    m2.ClientConfig(security.RoleManager),
	})
	fs := startTLS(t, fh, m2.ServerConfig(false))
	p.leader.setLeader(leaderAddr, true)
	p.follower.setLeader(leaderAddr, false)
	p.leaderURL, p.followerURL = ls.URL, fs.URL
	return p
}

func (p *forwardingPair) do(t *testing.T, c cred, method, u string, body []byte, header http.Header) reply {
	t.Helper()
	r, err := doTLS(t, c.client(p.server, security.RoleManager), c, method, u, body, header)
	if err != nil {
		t.Fatalf("%s %s as %s: %v", method, u, c.name, err)
	}
	return r
}

// TestManagerHandler_ForwardsCaller: a follower admits a request, forwards
// it with HeaderCaller naming the caller, and the leader acts for that
// caller (checking it again); HeaderCaller from anyone but a manager
// certificate counts for nothing.
func TestManagerHandler_ForwardsCaller(t *testing.T) {
	p := newForwardingPair(t)
	var (
		submitter = cred{name: "submit token", token: submitSecret}
		reader    = cred{name: "read token", token: readSecret}
		w1        = cred{name: "worker w1", cert: p.pki.bundle(security.RoleWorker, "w1")}
		m3        = cred{name: "manager m3", cert: p.pki.bundle(security.RoleManager, "m3")}
	)
	forged := http.Header{HeaderCaller: {`{"Kind":"client","Name":"root","Role":"operator"}`}}

	t.Run("submit through the follower acts as the token", func(t *testing.T) {
		r := p.do(t, submitter, "POST", p.followerURL+"/tasks", taskEventJSON(uuid.New()), nil)
		if r.status != http.StatusCreated {
			t.Fatalf("status %d, body %s; want 201", r.status, r.body)
		}
		want := Caller{Kind: CallerToken, Name: "ci", Role: RoleSubmit}
		if got := p.leader.caller("SubmitTask"); got != want {
			t.Fatalf("the leader acted for %+v, want %+v", got, want)
		}
		if p.follower.count("SubmitTask") != 0 {
			t.Fatal("the follower served the write itself")
		}
	})

	t.Run("consistent read through the follower is redacted by the leader", func(t *testing.T) {
		for _, hdr := range []http.Header{nil, forged} {
			before := p.leader.count("Tasks")
			r := p.do(t, reader, "GET", p.followerURL+"/tasks?consistent", nil, hdr)
			if r.status != 200 || p.leader.count("Tasks") != before+1 {
				t.Fatalf("status %d, body %s, leader Tasks calls %d; want 200 from the leader", r.status, r.body, p.leader.count("Tasks")-before)
			}
			wantRedacted(t, r.body, true)
			want := Caller{Kind: CallerToken, Name: "dashboard", Role: RoleRead}
			if got := p.leader.caller("Tasks"); got != want {
				t.Fatalf("header %v: the leader acted for %+v, want %+v", hdr, got, want)
			}
		}
	})

	t.Run("a read token forging an operator header gets nothing extra", func(t *testing.T) {
		for _, u := range []string{p.followerURL, p.leaderURL} {
			r := p.do(t, reader, "POST", u+"/tasks", taskEventJSON(uuid.New()), forged)
			wantRefused(t, r, http.StatusForbidden, `token "dashboard" (role read)`, "needs role submit")
		}
		r := p.do(t, reader, "GET", p.leaderURL+"/tasks/"+seedID.String(), nil, forged)
		if r.status != 200 {
			t.Fatalf("GET on the leader with a forged header: %d %s; want 200", r.status, r.body)
		}
		wantRedacted(t, r.body, true)
		if !strings.Contains(p.logs.String(), "ignoring caller header") {
			t.Fatalf("the leader did not log the ignored header:\n%s", p.logs)
		}
	})

	t.Run("a worker reports through the follower for itself only", func(t *testing.T) {
		r := p.do(t, w1, "POST", p.followerURL+"/reports", EncodeJSON(Task{ID: seedID, Worker: "w1", State: Running}), nil)
		if r.status != http.StatusNoContent {
			t.Fatalf("own report: %d %s; want 204", r.status, r.body)
		}
		if got := p.leader.caller("ReportTask"); got != (Caller{Kind: CallerWorker, Name: "w1"}) {
			t.Fatalf("the leader took the report from %+v, want worker w1", got)
		}
		before := p.leader.count("ReportTask")
		w2 := http.Header{HeaderCaller: {`{"Kind":"worker","Name":"w2"}`}}
		for _, hdr := range []http.Header{nil, w2} {
			r = p.do(t, w1, "POST", p.followerURL+"/reports", EncodeJSON(Task{ID: seedID, Worker: "w2", State: Completed}), hdr)
			wantRefused(t, r, http.StatusForbidden, `worker "w1"`, `POST /reports for worker "w2"`)
		}
		if p.leader.count("ReportTask") != before || p.follower.total() != 0 {
			t.Fatal("a report for another worker reached a service")
		}
	})

	t.Run("the leader checks the caller a manager names", func(t *testing.T) {
		asRead := http.Header{HeaderCaller: {`{"Kind":"token","Name":"dashboard","Role":"read"}`}}
		r := p.do(t, m3, "POST", p.leaderURL+"/tasks", taskEventJSON(uuid.New()), asRead)
		wantRefused(t, r, http.StatusForbidden, `token "dashboard" (role read)`, "needs role submit")

		asW1 := http.Header{HeaderCaller: {`{"Kind":"worker","Name":"w1"}`}}
		r = p.do(t, m3, "POST", p.leaderURL+"/reports", EncodeJSON(Task{ID: seedID, Worker: "w2", State: Completed}), asW1)
		wantRefused(t, r, http.StatusForbidden, `worker "w1"`, `POST /reports for worker "w2"`)
		r = p.do(t, m3, "POST", p.leaderURL+"/cluster/servers", []byte(`{"ID":"m4","Addr":"127.0.0.1:7000"}`), asW1)
		wantRefused(t, r, http.StatusForbidden, `worker "w1"`, "needs role operator")

		// A manager certificate calling for itself is an operator, but not
		// a worker: it cannot report.
		r = p.do(t, m3, "POST", p.leaderURL+"/cluster/servers", []byte(`{"ID":"m4","Addr":"127.0.0.1:7000"}`), nil)
		if r.status != http.StatusNoContent {
			t.Fatalf("manager for itself: %d %s; want 204", r.status, r.body)
		}
		r = p.do(t, m3, "POST", p.leaderURL+"/reports", EncodeJSON(Task{ID: seedID, Worker: "w1", State: Running}), nil)
		wantRefused(t, r, http.StatusForbidden, `manager "m3"`, "needs a worker certificate")

		for _, bad := range []string{`nope`, `{"Kind":"anonymous","Name":"x"}`, `{"Kind":"token"}`, `{"Kind":"token","Name":"x","Extra":1}`} {
			r = p.do(t, m3, "GET", p.leaderURL+"/tasks", nil, http.Header{HeaderCaller: {bad}})
			wantRefused(t, r, http.StatusBadRequest, HeaderCaller)
		}
		if p.leader.count("ReportTask") != 1 || p.leader.count("SubmitTask") != 1 {
			t.Fatalf("refused requests reached the leader's service: %v", p.leader.calls)
		}
	})

	t.Run("a worker naming a manager in the header is still a worker", func(t *testing.T) {
		asM := http.Header{HeaderCaller: {`{"Kind":"manager","Name":"m1"}`}}
		r := p.do(t, w1, "GET", p.leaderURL+"/tasks", nil, asM)
		wantRefused(t, r, http.StatusForbidden, `worker "w1"`, "needs role read")
	})
}

// TestTaskFor_Redaction: only callers with role submit or operator see Env
// values; the stored task is never changed.
func TestTaskFor_Redaction(t *testing.T) {
	task := Task{ID: seedID, Env: []string{"A=1", "B=x=y", "C="}}
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		redact bool
	}{
		{"read", ContextWithCaller(context.Background(), Caller{Kind: CallerToken, Name: "r", Role: RoleRead}), true},
		{"submit", ContextWithCaller(context.Background(), Caller{Kind: CallerToken, Name: "s", Role: RoleSubmit}), false},
		{"operator", ContextWithCaller(context.Background(), Caller{Kind: CallerToken, Name: "o", Role: RoleOperator}), false},
		{"anonymous", ContextWithCaller(context.Background(), anonymous), false},
		{"worker", ContextWithCaller(context.Background(), Caller{Kind: CallerWorker, Name: "w1"}), true},
		{"no caller", context.Background(), true},
	} {
		got := taskFor(tc.ctx, task)
		want := task.Env
		if tc.redact {
			want = []string{"A=<redacted>", "B=<redacted>", "C=<redacted>"}
		}
		if !slices.Equal(got.Env, want) {
			t.Errorf("%s: Env %q, want %q", tc.name, got.Env, want)
		}
		if list := tasksFor(tc.ctx, []Task{task}); !slices.Equal(list[0].Env, want) {
			t.Errorf("%s: list Env %q, want %q", tc.name, list[0].Env, want)
		}
	}
	if !slices.Equal(task.Env, []string{"A=1", "B=x=y", "C="}) {
		t.Fatalf("the task itself was changed: %q", task.Env)
	}
}

// TestManagerHandler_AuthenticatorFailure: an Authenticator that fails for
// another reason than bad credentials gets its own status, not a 401.
func TestManagerHandler_AuthenticatorFailure(t *testing.T) {
	f := seededFake()
	f.setLeader("127.0.0.1:1", true)
	auth := authFunc(func(*http.Request) (Caller, error) {
		return Caller{}, fmt.Errorf("token table: %w", ErrUnavailable)
	})
	srv := httptest.NewServer(NewManagerHandler(f, ManagerHandlerOptions{Authenticator: auth, Logger: testkit.Logger(t, "api")}))
	t.Cleanup(srv.Close)
	r := doHTTP(t, "GET", srv.URL+"/tasks", nil, nil)
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" || f.total() != 0 {
		t.Fatalf("status %d, body %s, calls %d; want 503 with Retry-After and no call", r.status, r.body, f.total())
	}
	_ = r.errResponse(t)
}

// authFunc adapts a function to Authenticator.
type authFunc func(*http.Request) (Caller, error)

func (f authFunc) Authenticate(r *http.Request) (Caller, error) { return f(r) }

// TestGuard_UnnamedCallerIsUnauthenticated: an Authenticator answering a
// caller without a known kind or a name does not let it in.
func TestGuard_UnnamedCallerIsUnauthenticated(t *testing.T) {
	for _, c := range []Caller{{}, {Kind: CallerAnonymous, Name: "a", Role: RoleOperator}, {Kind: CallerToken, Role: RoleOperator}, {Kind: "root", Name: "x"}} {
		g := &guard{auth: authFunc(func(*http.Request) (Caller, error) { return c, nil }), log: hclog.NewNullLogger()}
		rec := httptest.NewRecorder()
		if _, ok := g.admit(rec, httptest.NewRequest("GET", "/tasks", nil), "GET /tasks"); ok || rec.Code != http.StatusUnauthorized {
			t.Errorf("caller %+v: admitted %v, status %d; want 401", c, ok, rec.Code)
		}
		var er ErrResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &er); err != nil || er.HTTPStatusCode != 401 || !strings.Contains(er.Message, "named no caller") {
			t.Errorf("caller %+v: body %s", c, rec.Body)
		}
	}
}

// FuzzCallerHeader sends arbitrary X-Cube-Caller values, as a manager
// certificate and as a token: the guard must never panic or answer 5xx; a
// manager's request is admitted only as a caller of a known kind with a
// name; a token's header never changes who it is.
func FuzzCallerHeader(f *testing.F) {
	f.Add(true, uint8(0), "/tasks", `{"Kind":"token","Name":"ci","Role":"submit"}`)
	f.Add(true, uint8(1), "/reports", `{"Kind":"worker","Name":"w1"}`)
	f.Add(true, uint8(0), "/tasks", `{"Kind":"anonymous","Name":"x","Role":"operator"}`)
	f.Add(false, uint8(1), "/tasks", `{"Kind":"client","Name":"root","Role":"operator"}`)
	f.Add(true, uint8(2), "/cluster/servers/m1", `{"Kind":"token","Name":"x","Role":"root"}`)
	f.Add(true, uint8(0), "/tasks", `{"Kind":"worker","Name":"w1","Role":"operator"}`)
	methods := []string{"GET", "POST", "DELETE", "PUT"}
	reader := Caller{Kind: CallerToken, Name: "dashboard", Role: RoleRead}
	f.Fuzz(func(t *testing.T, asManager bool, m uint8, path, header string) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		req, err := http.NewRequest(methods[int(m)%len(methods)], "http://m1"+path, nil)
		if err != nil {
			return
		}
		req.Header.Set(HeaderCaller, header)
		direct := reader
		if asManager {
			direct = Caller{Kind: CallerManager, Name: "m2"}
		}
		g := &guard{auth: authFunc(func(*http.Request) (Caller, error) { return direct, nil }), log: hclog.NewNullLogger()}
		mux := NewManagerHandler(newFakeManager(), ManagerHandlerOptions{}).(*managerHandler).mux
		_, pattern := mux.Handler(req)
		rec := httptest.NewRecorder()
		admitted, ok := g.admit(rec, req, pattern)
		if !ok {
			if rec.Code < 400 || rec.Code >= 500 {
				t.Fatalf("refused with status %d, body %s", rec.Code, rec.Body)
			}
			return
		}
		c, _ := CallerFrom(admitted.Context())
		if !knownKind(c.Kind) || c.Name == "" {
			t.Fatalf("admitted as %+v", c)
		}
		if !asManager && c != reader {
			t.Fatalf("a token's header %q made it %+v", header, c)
		}
		if admitted.Header.Get(HeaderCaller) != "" {
			t.Fatalf("%s left in the admitted request", HeaderCaller)
		}
		if c.Kind == CallerWorker && c.Role != "" {
			t.Fatalf("a worker admitted with role %q", c.Role)
		}
	})
}
