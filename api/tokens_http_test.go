package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/security"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
)

// The fake's tokens: the leader makes them, with a secret, as the real
// manager does; the list never shows a secret even if the fake kept one.
func (f *fakeManager) CreateToken(_ context.Context, req TokenRequest) (Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if inj, ok := f.enterLocked("CreateToken"); ok {
		return Token{}, inj.err
	}
	if !f.self {
		return Token{}, ErrNotLeader
	}
	tok := Token{AccessorID: uuid.New(), Name: req.Name, Role: req.Role, CreateTime: time.Now().UTC(), Secret: "cube_" + uuid.NewString()}
	f.tokens = append(f.tokens, tok)
	return tok, nil
}

func (f *fakeManager) Tokens(_ context.Context, consistent bool) ([]Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if inj, ok := f.enterLocked("Tokens"); ok {
		return nil, inj.err
	}
	if consistent && !f.self {
		return nil, ErrNotLeader
	}
	return append([]Token(nil), f.tokens...), nil
}

func (f *fakeManager) DeleteToken(_ context.Context, accessor uuid.UUID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if inj, ok := f.enterLocked("DeleteToken"); ok {
		return inj.err
	}
	if !f.self {
		return ErrNotLeader
	}
	for i, t := range f.tokens {
		if t.AccessorID == accessor {
			f.tokens = append(f.tokens[:i], f.tokens[i+1:]...)
			return nil
		}
	}
	return nil // as the real one: deleting what is gone is a no-op
}

// POST and DELETE /tokens sent to a follower are made on the leader; the
// secret comes back once, not cached; GET /tokens never shows one.
func TestManagerHandler_Tokens_ForwardedToLeader(t *testing.T) {
	c := newTestCluster(t, 3, 0, ManagerHandlerOptions{})
	leader := c.fakes[0]

	r := doHTTP(t, http.MethodPost, c.url(1, "/tokens"), []byte(`{"Name":"ci","Role":"submit"}`), nil)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /tokens via a follower: %d %s", r.status, r.body)
	}
	var tok Token
	if err := json.Unmarshal(r.body, &tok); err != nil {
		t.Fatal(err)
	}
	if tok.Name != "ci" || tok.Role != RoleSubmit || tok.AccessorID == uuid.Nil || !strings.HasPrefix(tok.Secret, "cube_") {
		t.Fatalf("created token %+v", tok)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control %q on an answer holding a secret, want no-store", cc)
	}
	if leader.count("CreateToken") != 1 || c.fakes[1].count("CreateToken") != 0 {
		t.Fatalf("CreateToken calls: leader %d, follower %d", leader.count("CreateToken"), c.fakes[1].count("CreateToken"))
	}

	// A plain GET is the answering manager's own view; ?consistent is the leader's.
	r = doHTTP(t, http.MethodGet, c.url(2, "/tokens"), nil, nil)
	if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != "[]" {
		t.Fatalf("GET /tokens on a follower: %d %s, want 200 []", r.status, r.body)
	}
	r = doHTTP(t, http.MethodGet, c.url(2, "/tokens?consistent"), nil, nil)
	var list []Token
	if r.status != http.StatusOK || json.Unmarshal(r.body, &list) != nil || len(list) != 1 || list[0].AccessorID != tok.AccessorID {
		t.Fatalf("GET /tokens?consistent on a follower: %d %s", r.status, r.body)
	}
	if strings.Contains(string(r.body), "Secret") || strings.Contains(string(r.body), tok.Secret) {
		t.Fatalf("GET /tokens shows a secret: %s", r.body)
	}

	r = doHTTP(t, http.MethodDelete, c.url(1, "/tokens/"+tok.AccessorID.String()), nil, nil)
	if r.status != http.StatusNoContent || len(leader.tokens) != 0 {
		t.Fatalf("DELETE via a follower: %d %s; leader holds %+v", r.status, r.body, leader.tokens)
	}
	r = doHTTP(t, http.MethodDelete, c.url(1, "/tokens/"+tok.AccessorID.String()), nil, nil)
	if r.status != http.StatusNoContent {
		t.Fatalf("DELETE of a deleted token: %d %s, want 204 (a retry must succeed)", r.status, r.body)
	}
	// A service error is relayed from the leader as it is.
	leader.injectErr("DeleteToken", fmt.Errorf("token store: %w", ErrConflict), false)
	r = doHTTP(t, http.MethodDelete, c.url(2, "/tokens/"+tok.AccessorID.String()), nil, nil)
	if r.status != http.StatusConflict || !strings.Contains(r.errResponse(t).Message, "token store") {
		t.Fatalf("DELETE with a failing leader: %d %s, want 409", r.status, r.body)
	}
}

// Bad requests get their 400 from whichever manager they reach, even with
// no leader elected, and never reach a service.
func TestManagerHandler_Tokens_Validation(t *testing.T) {
	c := newTestCluster(t, 1, -1, ManagerHandlerOptions{})
	long := strings.Repeat("n", MaxTokenNameLen+1)
	for _, tc := range []struct {
		name, method, path, body, want string
	}{
		{"empty body", "POST", "/tokens", "", "request body is empty"},
		{"not JSON", "POST", "/tokens", "ci", "invalid character"},
		{"unknown field", "POST", "/tokens", `{"Name":"ci","Role":"read","Secret":"x"}`, "Secret"},
		{"two values", "POST", "/tokens", `{"Name":"ci","Role":"read"}{}`, "after the JSON value"},
		{"no name", "POST", "/tokens", `{"Role":"read"}`, "Name is required: 1 to 64 characters (got 0)"},
		{"name too long", "POST", "/tokens", `{"Name":"` + long + `","Role":"read"}`, "(got 65)"},
		{"control character", "POST", "/tokens", `{"Name":"c\u0007i","Role":"read"}`, "not printable"},
		{"newline", "POST", "/tokens", `{"Name":"ci\n","Role":"read"}`, "not printable"},
		{"surrounding space", "POST", "/tokens", `{"Name":" ci","Role":"read"}`, "starts or ends with a space"},
		{"no role", "POST", "/tokens", `{"Name":"ci"}`, `Role "" is not a token role; want read, submit or operator`},
		{"unknown role", "POST", "/tokens", `{"Name":"ci","Role":"admin"}`, `Role "admin" is not a token role`},
		{"role case", "POST", "/tokens", `{"Name":"ci","Role":"Operator"}`, `Role "Operator" is not a token role`},
		{"accessor not a UUID", "DELETE", "/tokens/abc", "", `token accessor "abc" is not a UUID`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body []byte
			if tc.method == "POST" {
				body = []byte(tc.body)
			}
			r := doHTTP(t, tc.method, c.url(0, tc.path), body, nil)
			if r.status != http.StatusBadRequest || !strings.Contains(r.errResponse(t).Message, tc.want) {
				t.Fatalf("%s %s %q: %d %s, want 400 with %q", tc.method, tc.path, tc.body, r.status, r.body, tc.want)
			}
		})
	}
	if n := c.fakes[0].count("CreateToken") + c.fakes[0].count("DeleteToken"); n != 0 {
		t.Fatalf("the service was called %d times for bad requests", n)
	}
	// A good request with no leader is a 503, as for any write.
	if r := doHTTP(t, "POST", c.url(0, "/tokens"), []byte(`{"Name":"Ünïcode name","Role":"operator"}`), nil); r.status != http.StatusServiceUnavailable {
		t.Fatalf("valid request, no leader: %d %s", r.status, r.body)
	}
}

func TestClient_Tokens(t *testing.T) {
	c := newTestCluster(t, 3, 2, ManagerHandlerOptions{})
	cl, err := NewClient(c.addrs[:2], ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tok, err := cl.CreateToken(ctx, TokenRequest{Name: "dash", Role: RoleRead})
	if err != nil || tok.Secret == "" || tok.Role != RoleRead {
		t.Fatalf("CreateToken: %+v, %v", tok, err)
	}
	list, err := cl.Tokens(ctx, true)
	if err != nil || len(list) != 1 || list[0].AccessorID != tok.AccessorID || list[0].Secret != "" {
		t.Fatalf("Tokens: %+v, %v", list, err)
	}
	if err := cl.DeleteToken(ctx, tok.AccessorID); err != nil {
		t.Fatalf("DeleteToken: %v", err)
	}
	if err := cl.DeleteToken(ctx, tok.AccessorID); err != nil {
		t.Fatalf("DeleteToken again: %v, want nil (idempotent)", err)
	}
	var verr *ValidationError
	if _, err := cl.CreateToken(ctx, TokenRequest{Name: "x", Role: "root"}); !errors.As(err, &verr) {
		t.Fatalf("CreateToken with a bad role: %v, want a ValidationError", err)
	}
}

// tlsManager serves a manager handler over TLS with cert.
func tlsManager(t *testing.T, f *fakeManager, cert *security.Bundle, opts ManagerHandlerOptions) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(NewManagerHandler(f, opts))
	srv.TLS = cert.ServerConfig(false)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// With TLS, a follower forwards over https with its manager certificate and
// accepts only a leader whose certificate is a manager's.
func TestManagerHandler_ForwardsOverTLS(t *testing.T) {
	sign := newTestPKI(t).bundle
	m1, m2 := sign(security.RoleManager, "m1"), sign(security.RoleManager, "m2")
	log := testkit.LoggerAt(t, "api", hclog.Debug)
	leader, follower := newFakeManager(), newFakeManager()
	var (
		mu   sync.Mutex
		seen []string // the certificates the leader was called with
	)
	ls := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, ok := security.PeerIdentity(r.TLS); ok {
			mu.Lock()
			seen = append(seen, string(id.Role)+":"+id.Name)
			mu.Unlock()
		}
		NewManagerHandler(leader, ManagerHandlerOptions{Logger: log}).ServeHTTP(w, r)
	}))
	ls.TLS = m1.ServerConfig(false)
	ls.StartTLS()
	t.Cleanup(ls.Close)
	leaderAddr := ls.Listener.Addr().String()
	fs := tlsManager(t, follower, m2, ManagerHandlerOptions{Logger: log, ForwardTLS: m2.ClientConfig(security.RoleManager)})
	leader.setLeader(leaderAddr, true)
	follower.setLeader(leaderAddr, false)

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: sign(security.RoleClient, "alice").ClientConfig(security.RoleManager)}}
	resp, err := client.Post(fs.URL+"/tokens", "application/json", strings.NewReader(`{"Name":"ci","Role":"submit"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || leader.count("CreateToken") != 1 {
		t.Fatalf("POST /tokens through a TLS follower: %d; leader calls %d", resp.StatusCode, leader.count("CreateToken"))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0] != "manager:m2" {
		t.Fatalf("the leader saw certificates %q, want the follower's [manager:m2]", seen)
	}

	// A "leader" whose certificate is a worker's is not trusted with the request.
	impostor := tlsManager(t, newFakeManager(), sign(security.RoleWorker, "w1"), ManagerHandlerOptions{Logger: log})
	follower.setLeader(impostor.Listener.Addr().String(), false)
	resp, err = client.Post(fs.URL+"/tokens", "application/json", strings.NewReader(`{"Name":"ci","Role":"submit"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("forward to a worker-certified leader: %d, want 503", resp.StatusCode)
	}
}

// A WorkerClient with TLS dials host:port over https with the manager's
// certificate and verifies the worker's; without TLS it cannot talk to a
// TLS worker.
func TestWorkerClientTLS(t *testing.T) {
	sign := newTestPKI(t).bundle
	mgr, wrk := sign(security.RoleManager, "m1"), sign(security.RoleWorker, "w1")
	peers := make(chan security.Identity, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := security.PeerIdentity(r.TLS)
		select {
		case peers <- id:
		default:
		}
		writeJSON(w, http.StatusOK, []Task{})
	}))
	srv.TLS = wrk.ServerConfig(true, security.RoleManager)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	ctx := context.Background()

	wc := NewWorkerClientTLS(time.Second, "", mgr.ClientConfig(security.RoleWorker))
	if _, err := wc.Tasks(ctx, addr); err != nil {
		t.Fatalf("Tasks over TLS: %v", err)
	}
	if peer := <-peers; peer != (security.Identity{Role: security.RoleManager, Name: "m1"}) {
		t.Fatalf("the worker saw %+v, want manager m1", peer)
	}
	if _, err := NewWorkerClient(time.Second).Tasks(ctx, addr); err == nil {
		t.Fatal("a plain HTTP client reached a TLS worker")
	}
	// A worker certificate does not pass for a worker when the "worker" is a manager.
	other := httptest.NewUnstartedServer(srv.Config.Handler)
	other.TLS = mgr.ServerConfig(true)
	other.StartTLS()
	t.Cleanup(other.Close)
	if _, err := wc.Tasks(ctx, other.Listener.Addr().String()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Tasks from a server with a manager certificate: %v, want a certificate error", err)
	}
}
