package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cube-orch/cube/test/testkit"
)

// TestHandler covers every endpoint of newHandler through httptest.
func TestHandler(t *testing.T) {
	longAgo := time.Now().Add(-time.Hour)
	tests := []struct {
		name           string
		start          time.Time
		unhealthyAfter time.Duration
		method, path   string
		body           string
		wantCode       int
		wantBody       string // exact match after trimming trailing newline
		wantType       string // Content-Type prefix; empty means unchecked
		wantCrash      bool
	}{
		{name: "echo", method: http.MethodPost, path: "/", body: `{"Msg":"hello"}`,
			wantCode: 200, wantBody: `{"Msg":"hello"}`, wantType: "application/json"},
		{name: "echo unicode and escapes", method: http.MethodPost, path: "/", body: `{"Msg":"h\u00e9 \"q\""}`,
			wantCode: 200, wantBody: `{"Msg":"hé \"q\""}`, wantType: "application/json"},
		{name: "echo missing field", method: http.MethodPost, path: "/", body: `{}`,
			wantCode: 200, wantBody: `{"Msg":""}`, wantType: "application/json"},
		{name: "echo bad JSON", method: http.MethodPost, path: "/", body: `{"Msg":`,
			wantCode: 400, wantType: "text/plain"},
		{name: "echo empty body", method: http.MethodPost, path: "/", body: ``,
			wantCode: 400, wantType: "text/plain"},
		{name: "echo wrong type", method: http.MethodPost, path: "/", body: `{"Msg":42}`,
			wantCode: 400, wantType: "text/plain"},
		{name: "echo trailing data", method: http.MethodPost, path: "/", body: `{"Msg":"a"}{"Msg":"b"}`,
			wantCode: 400, wantType: "text/plain"},
		{name: "echo body too large", method: http.MethodPost, path: "/",
			body:     `{"Msg":"` + strings.Repeat("a", maxBodyBytes) + `"}`,
			wantCode: 400, wantBody: "request body too large", wantType: "text/plain"},
		{name: "echo GET not allowed", method: http.MethodGet, path: "/", wantCode: 405},
		{name: "echo PUT not allowed", method: http.MethodPut, path: "/", body: `{"Msg":"x"}`, wantCode: 405},
		{name: "unknown path", method: http.MethodGet, path: "/nope", wantCode: 404},
		{name: "health", method: http.MethodGet, path: "/health",
			wantCode: 200, wantBody: "OK", wantType: "text/plain"},
		{name: "health before unhealthy-after", unhealthyAfter: time.Hour, method: http.MethodGet, path: "/health",
			wantCode: 200, wantBody: "OK"},
		{name: "health after unhealthy-after", start: longAgo, unhealthyAfter: time.Minute, method: http.MethodGet, path: "/health",
			wantCode: 500, wantBody: "Internal server error"},
		{name: "health POST not allowed", method: http.MethodPost, path: "/health", wantCode: 405},
		{name: "healthfail", method: http.MethodGet, path: "/healthfail",
			wantCode: 500, wantBody: "Internal server error", wantType: "text/plain"},
		{name: "crash", method: http.MethodPost, path: "/crash",
			wantCode: 200, wantBody: "crashing", wantCrash: true},
		{name: "crash GET not allowed", method: http.MethodGet, path: "/crash", wantCode: 405},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := tc.start
			if start.IsZero() {
				start = time.Now()
			}
			var crashed atomic.Int32
			h := newHandler(start, tc.unhealthyAfter, func() { crashed.Add(1) })

			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)

			if rec.Code != tc.wantCode {
				t.Fatalf("status = %d, want %d (body %q)", rec.Code, tc.wantCode, rec.Body.String())
			}
			if tc.wantBody != "" {
				if got := strings.TrimSuffix(rec.Body.String(), "\n"); got != tc.wantBody {
					t.Errorf("body = %q, want %q", got, tc.wantBody)
				}
			}
			if tc.wantType != "" {
				if got := rec.Header().Get("Content-Type"); !strings.HasPrefix(got, tc.wantType) {
					t.Errorf("Content-Type = %q, want prefix %q", got, tc.wantType)
				}
			}
			if tc.wantCode == http.StatusBadRequest && rec.Body.Len() > 200 {
				t.Errorf("400 body is %d bytes, want a short message", rec.Body.Len())
			}
			wantCalls := int32(0)
			if tc.wantCrash {
				wantCalls = 1
			}
			if got := crashed.Load(); got != wantCalls {
				t.Errorf("crash called %d times, want %d", got, wantCalls)
			}
			if tc.wantCrash && !rec.Flushed {
				t.Error("crash response was not flushed before crash was called")
			}
		})
	}
}

// TestHealthTurnsUnhealthy checks that /health flips from 200 to 500 once
// unhealthyAfter has elapsed, waiting on the condition rather than sleeping.
func TestHealthTurnsUnhealthy(t *testing.T) {
	const after = 100 * time.Millisecond
	start := time.Now()
	h := newHandler(start, after, func() { t.Error("crash called") })
	get := func() int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/health", nil))
		return rec.Code
	}

	// The handler measured at most `elapsed`, so if that is below the
	// threshold the answer must still be healthy. Checking after the fact
	// keeps the test correct on a slow machine.
	code := get()
	if elapsed := time.Since(start); elapsed < after && code != http.StatusOK {
		t.Fatalf("status after %s = %d, want 200", elapsed, code)
	}

	testkit.WaitFor(t, 5*time.Second, "/health to turn 500", func() bool { return get() == http.StatusInternalServerError })
	if elapsed := time.Since(start); elapsed < after {
		t.Fatalf("/health turned 500 after %s, before %s", elapsed, after)
	}
}

// TestParseConfig covers the environment parsing, including the defaults and
// the invalid values that make the binary exit with code 2.
func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    config
		wantErr bool
	}{
		{name: "defaults", env: nil, want: config{addr: ":7777"}},
		{name: "addr", env: map[string]string{envAddr: "127.0.0.1:0"}, want: config{addr: "127.0.0.1:0"}},
		{name: "unhealthy after", env: map[string]string{envUnhealthyAfter: "3s"}, want: config{addr: ":7777", unhealthyAfter: 3 * time.Second}},
		{name: "unhealthy after garbage", env: map[string]string{envUnhealthyAfter: "soon"}, wantErr: true},
		{name: "unhealthy after no unit", env: map[string]string{envUnhealthyAfter: "3"}, wantErr: true},
		{name: "unhealthy after negative", env: map[string]string{envUnhealthyAfter: "-1s"}, wantErr: true},
		{name: "unhealthy after zero", env: map[string]string{envUnhealthyAfter: "0s"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseConfig(func(k string) string { return tc.env[k] })
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err == nil && got != tc.want {
				t.Errorf("config = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestParseExitAtStart covers ECHO_EXIT_AT_START parsing.
func TestParseExitAtStart(t *testing.T) {
	tests := []struct {
		value    string
		wantCode int
		wantOK   bool
		wantErr  bool
	}{
		{value: "", wantOK: false},
		{value: "0", wantCode: 0, wantOK: true},
		{value: "3", wantCode: 3, wantOK: true},
		{value: "255", wantCode: 255, wantOK: true},
		{value: "256", wantErr: true},
		{value: "-1", wantErr: true},
		{value: "three", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q", tc.value), func(t *testing.T) {
			code, ok, err := parseExitAtStart(func(k string) string {
				if k == envExitAtStart {
					return tc.value
				}
				return ""
			})
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if code != tc.wantCode || ok != tc.wantOK {
				t.Errorf("got (%d, %v), want (%d, %v)", code, ok, tc.wantCode, tc.wantOK)
			}
		})
	}
}

// TestBinary builds the real binary and checks its process-level behaviour:
// exit codes, signal handling and the crash endpoint.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary; skipped in -short mode")
	}
	if runtime.GOOS == "windows" {
		t.Skip("relies on SIGTERM")
	}
	bin := buildBinary(t)

	t.Run("exit at start", func(t *testing.T) {
		p := startBinary(t, bin, envExitAtStart+"=3")
		if code := p.wait(t, 10*time.Second); code != 3 {
			t.Fatalf("exit code = %d, want 3; stderr:\n%s", code, p.stderr())
		}
	})

	t.Run("invalid setting", func(t *testing.T) {
		p := startBinary(t, bin, envUnhealthyAfter+"=soon", envAddr+"=127.0.0.1:0")
		if code := p.wait(t, 10*time.Second); code != 2 {
			t.Fatalf("exit code = %d, want 2; stderr:\n%s", code, p.stderr())
		}
	})

	t.Run("SIGTERM", func(t *testing.T) {
		addr := testkit.FreeAddr(t)
		p := startBinary(t, bin, envAddr+"="+addr)
		p.waitHealthy(t, addr)
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatalf("sending SIGTERM: %v", err)
		}
		if code := p.wait(t, 5*time.Second); code != 0 {
			t.Fatalf("exit code = %d, want 0; stderr:\n%s", code, p.stderr())
		}
	})

	t.Run("crash", func(t *testing.T) {
		addr := testkit.FreeAddr(t)
		p := startBinary(t, bin, envAddr+"="+addr)
		p.waitHealthy(t, addr)
		resp, err := httpClient.Post("http://"+addr+"/crash", "text/plain", nil)
		if err != nil {
			t.Fatalf("POST /crash: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "crashing" {
			t.Errorf("POST /crash = %d %q, want 200 \"crashing\"", resp.StatusCode, body)
		}
		if code := p.wait(t, 5*time.Second); code != 1 {
			t.Fatalf("exit code = %d, want 1; stderr:\n%s", code, p.stderr())
		}
	})
}

// httpClient is used against the subprocess; the timeout keeps a wedged
// server from hanging the test.
var httpClient = &http.Client{Timeout: 2 * time.Second}

// buildBinary compiles this package into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go tool not found: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "echo")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// proc is a running echo subprocess.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	code int           // exit code, valid once done is closed

	mu  sync.Mutex
	buf bytes.Buffer // captured stderr
}

// Write collects the subprocess's stderr; exec copies into it from its own
// goroutine, hence the lock.
func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.Write(b)
}

// stderr returns what the subprocess has logged so far.
func (p *proc) stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.String()
}

// startBinary starts bin with the given extra environment and arranges for
// it to be killed when the test ends.
func startBinary(t *testing.T, bin string, env ...string) *proc {
	t.Helper()
	p := &proc{done: make(chan struct{})}
	p.cmd = exec.Command(bin)
	p.cmd.Env = append(filteredEnv(), env...)
	p.cmd.Stderr = p
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	go func() {
		err := p.cmd.Wait()
		var exitErr *exec.ExitError
		switch {
		case err == nil:
			p.code = 0
		case errors.As(err, &exitErr):
			p.code = exitErr.ExitCode()
		default:
			p.code = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// filteredEnv is the test's environment without any ECHO_* variable, so a
// setting in the developer's shell cannot change the outcome.
func filteredEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ECHO_") {
			env = append(env, kv)
		}
	}
	return env
}

// wait returns the exit code of p, failing the test if it has not exited
// within timeout. -1 means it was killed by a signal.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(timeout):
		t.Fatalf("process still running after %s; stderr:\n%s", timeout, p.stderr())
		return 0
	}
}

// waitHealthy polls GET /health until it answers 200, failing the test if
// the process exits first or the deadline passes.
func (p *proc) waitHealthy(t *testing.T, addr string) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, func() error {
		resp, err := httpClient.Get("http://" + addr + "/health")
		if err == nil {
			line, _ := bufio.NewReader(resp.Body).ReadString('\n')
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && line == "OK" {
				return nil
			}
			err = fmt.Errorf("status %d body %q", resp.StatusCode, line)
		}
		select {
		case <-p.done:
			t.Fatalf("process exited with code %d before becoming healthy; stderr:\n%s", p.code, p.stderr())
		default:
		}
		return fmt.Errorf("not healthy: %v; stderr:\n%s", err, p.stderr())
	})
}

// TestCheckHealth covers the -health command: 0 when /health answers 200,
// 1 on 500, on nothing listening and on a bad ECHO_ADDR.
func TestCheckHealth(t *testing.T) {
	healthy := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" || !healthy {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	_, port, _ := strings.Cut(strings.TrimPrefix(srv.URL, "http://"), ":")
	env := func(addr string) func(string) string {
		return func(k string) string {
			if k == envAddr {
				return addr
			}
			return ""
		}
	}
	hc := &http.Client{Timeout: time.Second}
	if got := checkHealth(env(":"+port), hc); got != 0 {
		t.Fatalf("healthy: exit %d, want 0", got)
	}
	healthy = false
	if got := checkHealth(env(":"+port), hc); got != 1 {
		t.Fatalf("unhealthy: exit %d, want 1", got)
	}
	srv.Close()
	if got := checkHealth(env(":"+port), hc); got != 1 {
		t.Fatalf("nothing listening: exit %d, want 1", got)
	}
	if got := checkHealth(env("no-port"), hc); got != 1 {
		t.Fatalf("bad %s: exit %d, want 1", envAddr, got)
	}
}
