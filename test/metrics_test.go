package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/security"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// scrape GETs url with hc and returns the status and body.
func scrape(t *testing.T, hc *http.Client, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode, string(b)
}

// metricValue returns the value of the series of a /metrics text whose
// line starts with series (a name with its labels, as printed).
func metricValue(text, series string) (float64, bool) {
	for _, l := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(l, series+" "); ok {
			v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			return v, err == nil
		}
	}
	return 0, false
}

// wantMetric waits until series scraped from url with hc is at least min,
// and returns the /metrics text it was read from.
func wantMetric(t *testing.T, hc *http.Client, url, series string, min float64) string {
	t.Helper()
	var text string
	testkit.Eventually(t, 60*time.Second, func() error {
		code, body := scrape(t, hc, url)
		if code != 200 {
			return fmt.Errorf("GET %s: %d %.300s", url, code, body)
		}
		text = body
		if v, ok := metricValue(body, series); !ok || v < min {
			return fmt.Errorf("%s at %s = %v (present %v), want at least %v", series, url, v, ok, min)
		}
		return nil
	})
	return text
}

// wantProbe waits until GET url answers status and a Probe whose Reason
// contains reason.
func wantProbe(t *testing.T, hc *http.Client, url string, status int, reason string) {
	t.Helper()
	testkit.Eventually(t, 60*time.Second, func() error {
		code, body := scrape(t, hc, url)
		var p api.Probe
		if err := json.Unmarshal([]byte(body), &p); err != nil {
			return fmt.Errorf("GET %s: %d %.300s: %v", url, code, body, err)
		}
		if code != status || !strings.Contains(p.Reason, reason) {
			return fmt.Errorf("GET %s: %d %+v, want %d with a reason containing %q", url, code, p, status, reason)
		}
		return nil
	})
}

// TestE2E_MetricsAndProbes runs real binaries (3 managers, 1 worker) with
// security on and scrapes them over HTTPS as Prometheus would:
//   - the probes answer without credentials; /metrics refuses them (401)
//     and serves a read token, on every manager;
//   - a submitted task moves cube_placements_total on the leader and
//     cube_tasks{state="running"} on every manager, and the worker's engine
//     calls show in its cube_worker_runtime_call_seconds, read with a
//     client certificate;
//   - raft's and memberlist's own series are there (go-metrics sink);
//   - a crash moves cube_restarts_total and cube_crash_to_running_seconds;
//   - with two managers killed the third says not ready, naming the missing
//     leader, and ready again once they are back.
func TestE2E_MetricsAndProbes(t *testing.T) {
	c := NewProcCluster(t, 3, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	caOnly, err := security.ClientTLS(c.Sec.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	anonymous := &http.Client{Transport: api.NewTLSTransport("", caOnly)}
	read, err := c.Client().CreateToken(ctx, api.TokenRequest{Name: "prometheus", Role: api.RoleRead})
	if err != nil {
		t.Fatal(err)
	}
	reader := &http.Client{Transport: &tokenHeader{base: api.NewTLSTransport("", caOnly), token: read.Secret}}
	scraper := c.Sec.HTTPClientAs(security.RoleClient, "prometheus")

	var addrs []string
	for _, m := range c.Managers {
		addrs = append(addrs, m.HTTPAddr)
	}
	waitTokenSecret(t, c.Sec, addrs, read.Secret)
	for _, m := range c.Managers {
		wantProbe(t, anonymous, c.URL(m, "/health/live"), 200, "")
		wantProbe(t, anonymous, c.URL(m, "/health/ready"), 200, "")
		if code, body := scrape(t, anonymous, c.URL(m, "/metrics")); code != http.StatusUnauthorized {
			t.Fatalf("GET /metrics of %s without credentials: %d %.300s, want 401", m.Name, code, body)
		}
		wantMetric(t, reader, c.URL(m, "/metrics"), `cube_workers{state="alive"}`, 1)
	}
	w := c.Workers[0]
	workerURL := "https://" + w.HTTPAddr
	wantProbe(t, scraper, workerURL+"/health/ready", 200, "")

	leader := c.LeaderProc()
	_, text := scrape(t, reader, c.URL(leader, "/metrics"))
	placed, _ := metricValue(text, "cube_placements_total")

	task, _, err := c.Client().SubmitTask(ctx, api.TaskEvent{State: api.Running, Task: echoTask("metrics")})
	if err != nil {
		t.Fatal(err)
	}
	running := waitRunning(t, c, []uuid.UUID{task.ID})[task.ID]
	wantMetric(t, reader, c.URL(leader, "/metrics"), "cube_placements_total", placed+1)
	for _, m := range c.Managers {
		wantMetric(t, reader, c.URL(m, "/metrics"), `cube_tasks{state="running"}`, 1)
	}
	text = wantMetric(t, reader, c.URL(leader, "/metrics"), "cube_raft_apply", 1)
	for _, s := range []string{"cube_leader 1", "cube_leader_pass_seconds_count", "cube_memberlist_", "go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(text, s) {
			t.Errorf("the leader's /metrics has no %q", s)
		}
	}
	wantMetric(t, scraper, workerURL+"/metrics", `cube_worker_runtime_call_seconds_count{op="create",result="ok"}`, 1)
	wantMetric(t, scraper, workerURL+"/metrics", `cube_worker_tasks{state="running"}`, 1)
	if code, body := scrape(t, c.Sec.HTTPClientAs(security.RoleWorker, w.Name), workerURL+"/metrics"); code != http.StatusForbidden {
		t.Fatalf("a worker certificate reading a worker's /metrics: %d %.300s, want 403", code, body)
	}

	recAfterHealthyRun(running)
	recCrash(t, running)
	testkit.Eventually(t, 60*time.Second, func() error {
		cur, err := c.Client().Task(ctx, task.ID, false)
		if err != nil || cur.State != api.Running || cur.Generation <= running.Generation {
			return fmt.Errorf("task after its crash: %s gen %d (%v), want running above gen %d", cur.State, cur.Generation, err, running.Generation)
		}
		return nil
	})
	leader = c.LeaderProc()
	wantMetric(t, reader, c.URL(leader, "/metrics"), `cube_restarts_total{cause="exit"}`, 1)
	wantMetric(t, reader, c.URL(leader, "/metrics"), "cube_crash_to_running_seconds_count", 1)

	// Readiness follows the quorum.
	var survivor *Proc
	var killed []*Proc
	for _, m := range c.Managers {
		if survivor == nil {
			survivor = m
			continue
		}
		c.Kill(m)
		killed = append(killed, m)
	}
	wantProbe(t, anonymous, c.URL(survivor, "/health/ready"), 503, "no raft leader known")
	wantProbe(t, anonymous, c.URL(survivor, "/health/live"), 200, "")
	for _, m := range killed {
		c.Start(m)
	}
	for _, m := range c.Managers {
		wantProbe(t, anonymous, c.URL(m, "/health/ready"), 200, "")
	}
}

// waitTokenSecret waits until every manager at addrs accepts secret: a
// token is known to a manager once it has applied its creation.
func waitTokenSecret(t *testing.T, id *Identity, addrs []string, secret string) {
	t.Helper()
	caOnly, err := security.ClientTLS(id.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &tokenHeader{base: api.NewTLSTransport("", caOnly), token: secret}}
	for _, a := range addrs {
		testkit.Eventually(t, 30*time.Second, func() error {
			if code, body := scrape(t, hc, "https://"+a+"/cluster"); code != 200 {
				return fmt.Errorf("GET /cluster of %s with the new token: %d %.200s", a, code, body)
			}
			return nil
		})
	}
}
