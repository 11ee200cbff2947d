package worker

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/security"
)

// With TLS the worker API speaks HTTP/2, and a manager's WorkerClient
// sends its calls to one worker over one connection, however many were in
// flight at once: a new leader's first pass asks every worker tens of things at
// once, and one TLS handshake per call starved raft at 200 workers
// (bench/scale/SCALE.md).
func TestAgent_TLSCallsShareOneHTTP2Connection(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("counts the worker's connections in /proc/net/tcp (Linux)")
	}
	dir := t.TempDir()
	ca, caKey, err := security.CreateCA(dir, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(r security.Role, name string) security.Files {
		c, k, err := security.CreateCert(ca, caKey, dir, security.CertRequest{Role: r, Name: name, Hosts: []string{"127.0.0.1"}})
		if err != nil {
			t.Fatal(err)
		}
		return security.Files{CA: ca, Cert: c, Key: k}
	}
	cfg := testAgentConfig(t)
	cfg.TLS = issue(security.RoleWorker, cfg.Worker.Name)
	a, err := NewAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	mgr, err := security.Load(issue(security.RoleManager, "m1"))
	if err != nil {
		t.Fatal(err)
	}
	ccfg := mgr.ClientConfig(security.RoleWorker)

	// The handshake offers h2 and the worker takes it.
	ccfg2 := ccfg.Clone()
	ccfg2.NextProtos = []string{"h2", "http/1.1"}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", a.Addr(), ccfg2)
	if err != nil {
		t.Fatal(err)
	}
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Errorf("ALPN with the worker API chose %q, want h2", p)
	}
	conn.Close()
	waitConns(t, a.Addr(), 0)

	wc := api.NewWorkerClientTLS(10*time.Second, "", ccfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const calls = 64
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	start := make(chan struct{})
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, err := wc.Tasks(ctx, a.Addr()); err != nil {
				errs <- err
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("GET /tasks: %v", err)
	}
	// The calls that dialed while the first handshake was under way find
	// HTTP/2 there and close their own (api.WorkerClient bounds those dials;
	// api's TestWorkerClient_HerdOfCallsDialsAFew): one connection stays.
	waitConns(t, a.Addr(), 1)
	for range 3 {
		if _, err := wc.Tasks(ctx, a.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	if n := established(t, a.Addr()); n != 1 {
		t.Fatalf("later calls: %d connections to the worker, want 1", n)
	}
}

// waitConns waits until the worker at addr holds n established
// connections.
func waitConns(t *testing.T, addr string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for established(t, addr) != n {
		if time.Now().After(deadline) {
			t.Fatalf("worker %s holds %d connections, want %d", addr, established(t, addr), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// established counts the connections accepted by the listener at addr
// (127.0.0.1:port) that are established, from /proc/net/tcp.
func established(t *testing.T, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	local := fmt.Sprintf("0100007F:%04X", p)
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		// sl local_address rem_address st …; 01 is ESTABLISHED.
		if len(fs) > 3 && fs[1] == local && fs[3] == "01" {
			n++
		}
	}
	return n
}
