package cluster

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/test/testkit"
	"github.com/prometheus/client_golang/prometheus"
)

// TestMetricsHandler_RaftAndMemberlist: once GoMetrics has installed its
// sink, what raft and memberlist emit through go-metrics is served by
// MetricsHandler in Prometheus' text format, beside the node's own series:
// raft's apply counter after a write, memberlist's series labelled with
// each pool's node name.
func TestMetricsHandler_RaftAndMemberlist(t *testing.T) {
	own := prometheus.NewRegistry()
	own.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "cube_test_own_total", Help: "The node's own series."}))
	h, err := MetricsHandler(own, testkit.Logger(t, "metrics"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	scrape := func() string {
		t.Helper()
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Fatalf("scrape: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		return string(b)
	}

	c := newTestCluster(t, 1, nil)
	c.leader(10 * time.Second)
	c.apply("a", "b")
	tp := newTestPools(t)
	a := tp.start("metrics-a", 0)
	tp.start("metrics-b", 0, a.LocalAddr())

	raftApply := regexp.MustCompile(`(?m)^cube_raft_apply [1-9]`)
	gossipOfA := regexp.MustCompile(`(?m)^cube_memberlist_[a-z_]+\{[^}]*node="metrics-a"`)
	var text string
	testkit.WaitFor(t, 20*time.Second, "raft's and memberlist's series in /metrics", func() bool {
		text = scrape()
		return raftApply.MatchString(text) && gossipOfA.MatchString(text)
	})
	if !strings.Contains(text, "cube_test_own_total 0") {
		t.Fatalf("the node's own series missing from /metrics:\n%s", text)
	}
}
