package api

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/cube-orch/cube/test/testkit"
)

// pageStub stands for package ui's handler (api imports no package of ours).
var pageStub = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write([]byte("<title>page</title>"))
})

// The page's routes are open with security on, and exist only with
// ManagerHandlerOptions.UI: without it / is the authenticated 404 it was.
func TestManagerHandler_UIRoutes(t *testing.T) {
	for _, tc := range []struct {
		name       string
		page       http.Handler
		path, auth string
		want       int
	}{
		{"page without credentials", pageStub, "/ui/", "", http.StatusOK},
		{"page file without credentials", pageStub, "/ui/app.js", "", http.StatusOK},
		{"root redirects to the page", pageStub, "/", "", http.StatusFound},
		{"data still needs a token", pageStub, "/tasks", "", http.StatusUnauthorized},
		{"data with a token", pageStub, "/tasks", "Bearer " + readSecret, http.StatusOK},
		{"no page: /ui/ is the authenticated 404", nil, "/ui/", "", http.StatusUnauthorized},
		{"no page: /ui/ with a token", nil, "/ui/", "Bearer " + readSecret, http.StatusNotFound},
		{"no page: / is the authenticated 404", nil, "/", "", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := seededFake()
			f.setLeader("127.0.0.1:1", true)
			srv := httptest.NewServer(NewManagerHandler(f, ManagerHandlerOptions{Authenticator: newTestAuth(), UI: tc.page, Logger: testkit.Logger(t, "api")}))
			t.Cleanup(srv.Close)
			req, err := http.NewRequest(http.MethodGet, srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("GET %s (auth %q): %d, want %d", tc.path, tc.auth, resp.StatusCode, tc.want)
			}
			if tc.want == http.StatusFound && resp.Header.Get("Location") != UIPath {
				t.Fatalf("GET %s: Location %q, want %s", tc.path, resp.Header.Get("Location"), UIPath)
			}
		})
	}
}

// A stalled manager still serves the page (static files, no state), whose
// data calls then meet the stall like any other call.
func TestManagerHandler_StalledServesThePage(t *testing.T) {
	f := &stallingManager{fakeManager: newFakeManager()}
	f.setLeader("127.0.0.1:1", true)
	srv := httptest.NewServer(NewManagerHandler(f, ManagerHandlerOptions{UI: pageStub}))
	t.Cleanup(srv.Close)
	f.set(errors.New("state machine stalled"))
	for path, want := range map[string]int{"/ui/": http.StatusOK, "/tasks": http.StatusServiceUnavailable} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s on a stalled manager: %d, want %d", path, resp.StatusCode, want)
		}
	}
}
