package api

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cube-orch/cube/security"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
)

// TestWorkerHandler_AuthMatrix sends every route of the worker API with
// every kind of credentials, to two servers: one with the TLS config a
// worker serves with (a certificate of the cluster's CA required in the
// handshake), and one that verifies certificates only if given, to show
// that the handler refuses on its own everything but a manager, the probes
// (any caller it authenticates) and /metrics (a client certificate too).
func TestWorkerHandler_AuthMatrix(t *testing.T) {
	pki, other := newTestPKI(t), newTestPKI(t)
	server := pki.bundle(security.RoleWorker, "w1")
	w1 := server // a worker calling a worker, with its own certificate
	creds := []cred{
		{name: "none"},
		{name: "other CA", cert: other.bundle(security.RoleManager, "m1")},
		{name: "worker w1", cert: w1, who: `worker "w1"`},
		{name: "client cert", cert: pki.bundle(security.RoleClient, "alice"), who: `client "alice" (role operator)`},
		{name: "read token", token: readSecret, who: `token "dashboard" (role read)`},
		{name: "operator token", token: operatorSecret, who: `token "admin" (role operator)`},
		{name: "worker w1 with operator token", cert: w1, token: operatorSecret, who: `worker "w1"`},
		{name: "manager cert", cert: pki.bundle(security.RoleManager, "m1")},
	}
	stopID := uuid.New()
	routes := []struct {
		method, path string
		body         []byte
		status       int
		kind         string // "": managers only; probe; metrics
	}{
		{"POST", "/tasks", EncodeJSON(TaskEvent{ID: uuid.New(), State: Running, Task: Task{ID: uuid.New(), Image: "cube-echo:latest", Generation: 1}}), 201, ""},
		{"GET", "/tasks", nil, 200, ""},
		{"GET", "/tasks/" + seedID.String(), nil, 200, ""},
		{"DELETE", "/tasks/" + stopID.String() + "?generation=3", nil, 204, ""},
		{"GET", "/tasks/" + seedID.String() + "/logs?tail=1", nil, 200, ""},
		{"GET", "/stats", nil, 200, ""},
		{"GET", "/no/such/route", nil, 404, ""},
		{"GET", "/health/live", nil, 200, "probe"},
		{"GET", "/health/ready", nil, 200, "probe"},
		{"GET", "/metrics", nil, 200, "metrics"},
	}
	servers := []struct {
		name string
		cfg  *tls.Config
	}{
		{"worker TLS", server.ServerConfig(true)},
		{"handler alone", server.ServerConfig(false)},
	}
	for _, sc := range servers {
		for _, rt := range routes {
			for _, c := range creds {
				t.Run(sc.name+"/"+rt.method+" "+rt.path+"/"+c.name, func(t *testing.T) {
					f := &fakeWorker{tasks: map[uuid.UUID]Task{
						seedID: {ID: seedID, Image: "cube-echo:latest", State: Running, Generation: 1},
						stopID: {ID: stopID, Image: "cube-echo:latest", State: Running, Generation: 3},
					}}
					logs := &syncBuffer{}
					h := NewWorkerHandlerWith(f, WorkerHandlerOptions{
						Authenticator: newTestAuth(),
						Logger:        hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info}),
						Ready:         func(context.Context) error { return nil },
						Metrics:       http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "cube_worker_tasks 1\n") }),
					})
					srv := startTLS(t, h, sc.cfg)
					r, err := doTLS(t, c.client(server, security.RoleWorker), c, rt.method, srv.URL+rt.path, rt.body, nil)
					t.Log(logs.String())
					handshake := c.name == "other CA" || (sc.name == "worker TLS" && c.cert == nil)
					admitted := c.name == "manager cert" ||
						(rt.kind == "probe" && c.name != "none") ||
						(rt.kind == "metrics" && c.name == "client cert")
					switch {
					case handshake:
						if !handshakeRefused(err) {
							t.Fatalf("status %d, body %s, error %v; want a refused handshake", r.status, r.body, err)
						}
					case err != nil:
						t.Fatalf("%s %s: %v", rt.method, rt.path, err)
					case admitted:
						if r.status != rt.status {
							t.Fatalf("status %d, body %s; want %d", r.status, r.body, rt.status)
						}
						if (f.callCount() > 0) != (rt.kind == "" && rt.status != 404) {
							t.Fatalf("service calls %d after an admitted %s %s", f.callCount(), rt.method, rt.path)
						}
						return
					case c.name == "none":
						wantRefused(t, r, http.StatusUnauthorized)
					default:
						wantRefused(t, r, http.StatusForbidden, c.who, rt.method+" "+strings.SplitN(rt.path, "?", 2)[0], "only managers")
					}
					if n := f.callCount(); n != 0 {
						t.Fatalf("a refused request reached the worker: %d calls", n)
					}
					if !handshake {
						if n := strings.Count(logs.String(), "request refused"); n != 1 {
							t.Fatalf("refusal logged %d times, want once", n)
						}
					}
				})
			}
		}
	}
}

// handshakeRefused reports whether err is a TLS handshake the server
// refused. With TLS 1.3 the client may finish its side before the server's
// alert arrives, and then sees the connection end instead of the alert.
func handshakeRefused(err error) bool {
	if err == nil {
		return false
	}
	for _, s := range []string{"tls:", "certificate", "reset", "EOF", "closed network connection"} {
		if strings.Contains(err.Error(), s) {
			return true
		}
	}
	return false
}

// TestWorkerHandler_OpenWithoutAuthenticator: NewWorkerHandler stays the
// open API of a worker with security off.
func TestWorkerHandler_OpenWithoutAuthenticator(t *testing.T) {
	f := &fakeWorker{tasks: map[uuid.UUID]Task{}}
	srv := httptest.NewServer(NewWorkerHandler(f))
	t.Cleanup(srv.Close)
	if r := doHTTP(t, "GET", srv.URL+"/stats", nil, nil); r.status != 200 {
		t.Fatalf("GET /stats on an open worker: %d %s", r.status, r.body)
	}
}

// TestGenerationBound: no caller can send a generation above MaxGeneration,
// to a worker or a manager; the bound itself is accepted.
func TestGenerationBound(t *testing.T) {
	bound := fmt.Sprint(uint64(MaxGeneration))
	task := func(gen uint64) Task { return Task{ID: seedID, Image: "cube-echo:latest", Generation: gen} }

	ok, over := task(MaxGeneration), task(MaxGeneration+1)
	if err := ok.Validate(); err != nil {
		t.Fatalf("Generation = MaxGeneration: %v", err)
	}
	testkit.WantErr(t, "Validate of Generation MaxGeneration+1", over.Validate(), "above the bound of "+bound)
	huge := task(1<<64 - 1)
	testkit.WantErr(t, "Validate of Generation 2^64-1", huge.Validate(), "above the bound of "+bound)

	f := &fakeWorker{tasks: map[uuid.UUID]Task{seedID: {ID: seedID, Image: "cube-echo:latest", State: Running, Generation: 2}}}
	ws := httptest.NewServer(NewWorkerHandler(f))
	t.Cleanup(ws.Close)
	for _, tc := range []struct {
		name, method, path string
		body               []byte
		status             int
		want               string
	}{
		{"submit 2^64-1", "POST", "/tasks", EncodeJSON(TaskEvent{State: Running, Task: huge}), 400, "above the bound of " + bound},
		{"submit bound+1", "POST", "/tasks", EncodeJSON(TaskEvent{State: Running, Task: over}), 400, "above the bound of " + bound},
		{"stop above the bound", "DELETE", "/tasks/" + seedID.String() + "?generation=9007199254740993", nil, 400, "above the bound of " + bound},
		{"stop at 2^64", "DELETE", "/tasks/" + seedID.String() + "?generation=18446744073709551616", nil, 400, "above the bound of " + bound},
		{"stop not a number", "DELETE", "/tasks/" + seedID.String() + "?generation=x", nil, 400, "not a non-negative integer"},
		{"stop negative", "DELETE", "/tasks/" + seedID.String() + "?generation=-1", nil, 400, "not a non-negative integer"},
	} {
		r := doHTTP(t, tc.method, ws.URL+tc.path, tc.body, nil)
		if er := r.errResponse(t); r.status != tc.status || !strings.Contains(er.Message, tc.want) {
			t.Errorf("%s: %d %q, want %d containing %q", tc.name, r.status, er.Message, tc.status, tc.want)
		}
	}
	if n := f.callCount(); n != 0 {
		t.Fatalf("out-of-bound requests reached the worker: %d calls", n)
	}
	if r := doHTTP(t, "DELETE", ws.URL+"/tasks/"+seedID.String()+"?generation="+bound, nil, nil); r.status != http.StatusNoContent {
		t.Fatalf("stop at the bound: %d %s; want 204", r.status, r.body)
	}

	c := newTestCluster(t, 1, 0, ManagerHandlerOptions{})
	for _, tc := range []struct {
		path string
		body []byte
	}{
		{"/tasks", EncodeJSON(TaskEvent{State: Running, Task: huge})},
		{"/reports", EncodeJSON(Task{ID: seedID, Worker: "w1", State: Running, Generation: MaxGeneration + 1})},
	} {
		r := doHTTP(t, "POST", c.url(0, tc.path), tc.body, nil)
		if er := r.errResponse(t); r.status != 400 || !strings.Contains(er.Message, "above the bound of "+bound) {
			t.Errorf("POST %s: %d %q, want 400 naming the bound", tc.path, r.status, er.Message)
		}
	}
	if n := c.fakes[0].total(); n != 0 {
		t.Fatalf("out-of-bound requests reached the manager: %d calls", n)
	}
}
