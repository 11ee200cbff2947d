package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/security"
	"github.com/cube-orch/cube/test/testkit"
)

func TestLoopbackRange(t *testing.T) {
	cases := []struct {
		name       string
		base       string
		skip, n    int
		want, fail string
	}{
		{name: "from base", base: "127.0.1.1", n: 3, want: "127.0.1.1 127.0.1.2 127.0.1.3"},
		{name: "skips .255 and .0", base: "127.0.1.254", n: 3, want: "127.0.1.254 127.0.2.1 127.0.2.2"},
		{name: "after skip", base: "127.0.1.1", skip: 254, n: 2, want: "127.0.2.1 127.0.2.2"},
		{name: "base on .0", base: "127.5.0.0", n: 1, want: "127.5.0.1"},
		{name: "not loopback", base: "10.0.0.1", n: 1, fail: "127.0.0.0/8"},
		{name: "IPv6", base: "::1", n: 1, fail: "127.0.0.0/8"},
		{name: "runs past the range", base: "127.255.255.250", n: 10, fail: "run past"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := loopbackRange(c.base, c.skip, c.n)
			if c.fail != "" {
				testkit.WantErr(t, fmt.Sprintf("loopbackRange(%s, %d, %d)", c.base, c.skip, c.n), err, c.fail)
				return
			}
			if err != nil || strings.Join(got, " ") != c.want {
				t.Errorf("loopbackRange(%s, %d, %d) = %v, %v; want %s", c.base, c.skip, c.n, got, err, c.want)
			}
		})
	}
}

// simCredentials makes a CA (its key beside it, for sim-workers to make
// the workers' certificates) and a gossip key in a directory of the test's.
func simCredentials(t *testing.T) (dir, ca, caKey, gossipKey string) {
	t.Helper()
	dir = t.TempDir()
	ca, caKey, err := security.CreateCA(dir, "test CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	gossipKey, err = security.NewGossipKey()
	if err != nil {
		t.Fatal(err)
	}
	return dir, ca, caKey, gossipKey
}

// TestSimWorkers_RunAndStop runs cube sim-workers with three workers (with
// TLS: their certificates made from the CA key it is given) and no
// managers, checks each answers on its own address, then ends the command
// as a signal would and checks that every goroutine it started is gone.
func TestSimWorkers_RunAndStop(t *testing.T) {
	dir, ca, caKey, key := simCredentials(t)
	// An address range of its own: 127.2xx.x.1 and the next two.
	base := fmt.Sprintf("127.%d.%d.1", 200+rand.IntN(50), rand.IntN(250))
	_, port, _ := strings.Cut(testkit.FreeAddrOn(t, base), ":")
	_, gport, _ := strings.Cut(testkit.FreeAddrOn(t, base), ":")
	// The signal package's own goroutine, started by the first Notify and
	// never stopped, is not the command's.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR2)
	signal.Stop(sig)
	before := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := newRootCmd()
	root.SetArgs([]string{"sim-workers", "--count", "3", "--ip-base", base, "--http-port", port, "--gossip-port", gport,
		"--data", filepath.Join(dir, "data"), "--fast", "--name-prefix", "t-", "--log-level", "error",
		"--ca-file", ca, "--ca-key-file", caKey, "--cert-dir", dir, "--encrypt", key, "--start-delay", "1ms"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	// Each worker serves its API over mutual TLS on its own address: the
	// probes come with a client certificate of the CA.
	cert, certKey, err := security.CreateCert(ca, caKey, dir, security.CertRequest{Role: security.RoleClient, Name: "probe"})
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := security.ClientTLS(ca, cert, certKey)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg.ServerName = security.ServerName(security.RoleWorker)
	tr := &http.Transport{TLSClientConfig: tlsCfg}
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	ips, _ := loopbackRange(base, 0, 3)
	for i, ip := range ips {
		url := "https://" + ip + ":" + port + "/health/live"
		testkit.Eventually(t, 30*time.Second, func() error {
			select {
			case err := <-done:
				t.Fatalf("cube sim-workers ended early: %v", err)
			default:
			}
			resp, err := hc.Get(url)
			if err != nil {
				return err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("GET %s: %s", url, resp.Status)
			}
			return nil
		})
		if cert, _ := security.CertFiles(dir, security.RoleWorker, "t-"+strconv.Itoa(i+1)); !fileExists(cert) {
			t.Errorf("no certificate %s made for worker t-%d", cert, i+1)
		}
	}
	tr.CloseIdleConnections()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("cube sim-workers: %v; want nil after the signal", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("cube sim-workers did not stop within 30 s of the signal")
	}
	testkit.Eventually(t, 10*time.Second, func() error {
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			return fmt.Errorf("%d goroutines left, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
		}
		return nil
	})
}

func TestSimWorkers_RefusesBadFlags(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no credentials", []string{"--count", "1"}, "no TLS certificate"},
		{"zero count", []string{"--count", "0", "--insecure"}, "--count (0)"},
		{"same ports", []string{"--http-port", "7000", "--gossip-port", "7000", "--insecure"}, "must differ"},
		{"not loopback", []string{"--ip-base", "192.0.2.1", "--insecure"}, "127.0.0.0/8"},
		{"fail rate", []string{"--fail-rate", "2", "--insecure"}, "FailRate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := newRootCmd()
			root.SetArgs(append([]string{"sim-workers", "--data", dir, "--log-level", "error"}, c.args...))
			root.SetOut(io.Discard)
			root.SetErr(io.Discard)
			testkit.WantErr(t, "cube sim-workers "+strings.Join(c.args, " "), root.Execute(), c.want)
		})
	}
}

// TestSimWorkers_GossipOnly runs cube sim-workers --gossip-only with three
// members, encrypted, that join an observer: each is there as a worker
// with no API and its runtime down (so managers call nothing and place
// nothing on it), and on the signal each leaves and the command returns,
// leaving no goroutine behind.
func TestSimWorkers_GossipOnly(t *testing.T) {
	dir, ca, caKey, key := simCredentials(t)
	net3 := fmt.Sprintf("127.%d.%d.", 200+rand.IntN(50), rand.IntN(250))
	base := net3 + "1"
	_, port, _ := strings.Cut(testkit.FreeAddrOn(t, base), ":")
	_, gport, _ := strings.Cut(testkit.FreeAddrOn(t, base), ":")
	obsAddr := testkit.FreeAddrOn(t, net3+"50")
	g := cluster.FastGossipConfig()
	if err := g.SetAddrs(context.Background(), obsAddr, obsAddr, "--gossip", nil); err != nil {
		t.Fatal(err)
	}
	g.Name, g.Meta = "observer", cluster.Meta{Role: cluster.RoleManager, API: "127.0.0.1:1"}
	keys, err := cluster.DecodeGossipKeys([]string{key})
	if err != nil {
		t.Fatal(err)
	}
	g.Keys = keys
	obs, err := cluster.NewPool(g)
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Shutdown()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR2)
	signal.Stop(sig)
	before := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := newRootCmd()
	root.SetArgs([]string{"sim-workers", "--gossip-only", "--count", "3", "--ip-base", base, "--http-port", port, "--gossip-port", gport,
		"--data", filepath.Join(dir, "data"), "--fast", "--name-prefix", "g-", "--log-level", "error", "--join", obsAddr,
		"--ca-file", ca, "--ca-key-file", caKey, "--cert-dir", dir, "--encrypt", key})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	members := func(want cluster.MemberState) error {
		select {
		case err := <-done:
			t.Fatalf("cube sim-workers ended early: %v", err)
		default:
		}
		seen := 0
		for _, m := range obs.Members() {
			if !strings.HasPrefix(m.Name, "g-") {
				continue
			}
			if m.Meta.Role != cluster.RoleWorker || m.Meta.API != "" || !m.Meta.RuntimeDown {
				return fmt.Errorf("member %s advertises %+v; want a worker with no API and its runtime down", m.Name, m.Meta)
			}
			if m.State == want {
				seen++
			}
		}
		if seen != 3 {
			return fmt.Errorf("%d of 3 members %s: %v", seen, want, obs.Members())
		}
		return nil
	}
	testkit.Eventually(t, 30*time.Second, func() error { return members(cluster.StateAlive) })
	// No API: nothing listens on the workers' HTTP port.
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(base, port), time.Second); err == nil {
		c.Close()
		t.Fatalf("something listens on %s:%s; a gossip-only member has no API", base, port)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("cube sim-workers: %v; want nil after the signal", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("cube sim-workers did not stop within 30 s of the signal")
	}
	testkit.Eventually(t, 10*time.Second, func() error { return members(cluster.StateLeft) })
	testkit.Eventually(t, 10*time.Second, func() error {
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			return fmt.Errorf("%d goroutines left, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
		}
		return nil
	})
}
