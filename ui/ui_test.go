package ui_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/ui"
)

// get sends one request to srv and returns the answer with its body read.
func get(t *testing.T, srv *httptest.Server, method, path string, header http.Header) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vv := range header {
		req.Header[k] = vv
	}
	// Redirects are looked at, not followed.
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s %s: %v", method, path, err)
	}
	return resp, string(body)
}

func TestHandler_ServesTheEmbeddedFiles(t *testing.T) {
	srv := httptest.NewServer(ui.Handler())
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		path, contentType, contains string
	}{
		{"/ui/", "text/html; charset=utf-8", `<script src="app.js" defer></script>`},
		{"/ui/index.html", "text/html; charset=utf-8", `<link rel="stylesheet" href="style.css">`},
		{"/ui/app.js", "text/javascript; charset=utf-8", `/events?after=`},
		{"/ui/style.css", "text/css; charset=utf-8", `.banner`},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, body := get(t, srv, "GET", tc.path, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: %d %q, want 200", tc.path, resp.StatusCode, body)
			}
			if got := resp.Header.Get("Content-Type"); got != tc.contentType {
				t.Errorf("GET %s: Content-Type %q, want %q", tc.path, got, tc.contentType)
			}
			if !strings.Contains(body, tc.contains) {
				t.Errorf("GET %s: body does not hold %q:\n%s", tc.path, tc.contains, body)
			}
			for k, want := range map[string]string{
				"X-Content-Type-Options": "nosniff",
				"X-Frame-Options":        "DENY",
				"Cache-Control":          "no-cache",
			} {
				if got := resp.Header.Get(k); got != want {
					t.Errorf("GET %s: %s %q, want %q", tc.path, k, got, want)
				}
			}
			csp := resp.Header.Get("Content-Security-Policy")
			for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
				if !strings.Contains(csp, want) {
					t.Errorf("GET %s: Content-Security-Policy %q lacks %q", tc.path, csp, want)
				}
			}

			// HEAD: the same headers, no body; the ETag revalidates.
			head, hbody := get(t, srv, "HEAD", tc.path, nil)
			if head.StatusCode != http.StatusOK || hbody != "" || head.Header.Get("Content-Type") != tc.contentType {
				t.Errorf("HEAD %s: %d, %d bytes, %q; want 200, no body, %q", tc.path, head.StatusCode, len(hbody), head.Header.Get("Content-Type"), tc.contentType)
			}
			etag := resp.Header.Get("ETag")
			if etag == "" {
				t.Fatalf("GET %s: no ETag", tc.path)
			}
			again, abody := get(t, srv, "GET", tc.path, http.Header{"If-None-Match": {etag}})
			if again.StatusCode != http.StatusNotModified || abody != "" {
				t.Errorf("GET %s If-None-Match %s: %d %q, want 304 and no body", tc.path, etag, again.StatusCode, abody)
			}
		})
	}
}

func TestHandler_RefusesWhatItDoesNotServe(t *testing.T) {
	srv := httptest.NewServer(ui.Handler())
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"POST", "/ui/", http.StatusMethodNotAllowed},
		{"DELETE", "/ui/app.js", http.StatusMethodNotAllowed},
		{"GET", "/ui/nope.js", http.StatusNotFound},
		{"GET", "/ui/static/app.js", http.StatusNotFound},
		{"GET", "/ui", http.StatusNotFound},
		{"GET", "/app.js", http.StatusNotFound},
	} {
		resp, body := get(t, srv, tc.method, tc.path, nil)
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: %d %q, want %d", tc.method, tc.path, resp.StatusCode, body, tc.want)
		}
	}
}

// The page loads nothing from elsewhere: no script, style sheet, font or
// image from another origin, no import, and it calls only its own origin's
// API (relative paths).
func TestHandler_LoadsNothingFromElsewhere(t *testing.T) {
	srv := httptest.NewServer(ui.Handler())
	t.Cleanup(srv.Close)
	external := regexp.MustCompile(`(?i:(src|href)\s*=\s*["']?\s*(https?:)?//)|@import|\burl\(|\bimport\s*\(|importScripts`)
	fetches := regexp.MustCompile(`fetch\(\s*([^,)]*)`)
	for _, path := range []string{"/ui/", "/ui/app.js", "/ui/style.css"} {
		_, body := get(t, srv, "GET", path, nil)
		if m := external.FindString(body); m != "" {
			t.Errorf("%s refers to another origin or file: %q", path, m)
		}
		for _, m := range fetches.FindAllStringSubmatch(body, -1) {
			if arg := strings.TrimSpace(m[1]); arg != "path" && !strings.HasPrefix(arg, "'/") {
				t.Errorf("%s fetches %s; want a path of this origin", path, arg)
			}
		}
	}
}

// stubManager is a ManagerService of which the tests use only Leader: the
// guard refuses the data routes before any other method is called (a call
// would panic on the nil interface).
type stubManager struct{ api.ManagerService }

func (stubManager) Leader() (string, bool) { return "127.0.0.1:1", true }

// tokenAuth admits "Authorization: Bearer good" as a reader, nobody else.
type tokenAuth struct{}

func (tokenAuth) Authenticate(r *http.Request) (api.Caller, error) {
	if r.Header.Get("Authorization") == "Bearer good" {
		return api.Caller{Kind: api.CallerToken, Name: "reader", Role: api.RoleRead}, nil
	}
	return api.Caller{}, fmt.Errorf("%w: no token", api.ErrUnauthenticated)
}

// Mounted on the manager API with security on, the page is served without
// credentials, / leads to it, and the API's data still needs a token.
func TestHandler_OnTheManagerAPI_PageOpenDataNot(t *testing.T) {
	srv := httptest.NewServer(api.NewManagerHandler(stubManager{}, api.ManagerHandlerOptions{Authenticator: tokenAuth{}, UI: ui.Handler()}))
	t.Cleanup(srv.Close)

	resp, body := get(t, srv, "GET", "/ui/", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "<title>Cube</title>") {
		t.Fatalf("GET /ui/ without a token: %d %q, want 200 and the page", resp.StatusCode, body)
	}
	if resp, _ := get(t, srv, "GET", "/ui/app.js", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /ui/app.js without a token: %d, want 200", resp.StatusCode)
	}
	resp, _ = get(t, srv, "GET", "/", nil)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("GET /: %d Location %q, want 302 to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = get(t, srv, "GET", "/ui", nil)
	if resp.StatusCode/100 != 3 || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("GET /ui: %d Location %q, want a redirect to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, path := range []string{"/tasks", "/nodes", "/cluster", "/events", "/tasks/6f1c2a9e-0000-4000-8000-000000000001"} {
		resp, body := get(t, srv, "GET", path, nil)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without a token: %d %q, want 401", path, resp.StatusCode, body)
		}
	}
	// A path that climbs out of /ui/ is cleaned by the mux into the data
	// route it names, and admitted as that route: 401.
	resp, body = get(t, srv, "GET", "/ui/../tasks", nil)
	if resp.StatusCode/100 == 3 {
		loc := resp.Header.Get("Location")
		if loc != "/tasks" {
			t.Fatalf("GET /ui/../tasks: redirect to %q, want /tasks", loc)
		}
		resp, body = get(t, srv, "GET", loc, nil)
	}
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /ui/../tasks without a token: %d %q, want 401", resp.StatusCode, body)
	}
	if resp, body := get(t, srv, "POST", "/ui/", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST /ui/ without a token: %d %q, want 401 (only GET of the page is open)", resp.StatusCode, body)
	}
}
