package api

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestServeProfiles_ServesAndStops(t *testing.T) {
	addr, stop, err := ServeProfiles("127.0.0.1:0", hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile") {
		t.Fatalf("GET goroutine profile: %d %.200s", resp.StatusCode, body)
	}
	stop()
	if resp, err := hc.Get("http://" + addr + "/debug/pprof/"); err == nil {
		resp.Body.Close()
		t.Fatal("pprof still served after stop")
	}
	if _, _, err := ServeProfiles("not-an-address", hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), "--pprof") {
		t.Fatalf("bad address: %v, want an error naming --pprof", err)
	}
}
