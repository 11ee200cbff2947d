package cluster

import (
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// testWriter routes log lines to t.Log until the test ends; goroutines
// that outlive the test must not call t.Log.
type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

// Write logs p as one t.Log line, unless the test has ended.
func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// testLogger returns an hclog logger writing to t.Log. Call it before
// registering other cleanups so it is silenced last.
func testLogger(t testing.TB) hclog.Logger {
	t.Helper()
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Info, Output: w})
}

// portNext hands out candidate ports below the kernel's ephemeral range
// (32768 and up on Linux), so that a port chosen here is not taken meanwhile
// by an outgoing connection, as one from 127.0.0.1:0 can be. Each test
// process starts at a random point, as packages test in parallel.
var portNext struct {
	sync.Mutex
	n int
}

// freePort returns a 127.0.0.1:port that was free (TCP and UDP) a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	portNext.Lock()
	defer portNext.Unlock()
	if portNext.n == 0 {
		portNext.n = 20000 + rand.IntN(10000)
	}
	for tries := 0; tries < 2000; tries++ {
		portNext.n++
		if portNext.n >= 32000 {
			portNext.n = 20000
		}
		addr := fmt.Sprintf("127.0.0.1:%d", portNext.n)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		pc, err := net.ListenPacket("udp", addr)
		l.Close()
		if err != nil {
			continue
		}
		pc.Close()
		return addr
	}
	t.Fatal("no free port found")
	return ""
}

// waitFor polls cond every few milliseconds until it holds or timeout
// passes, then fails the test with msg. It returns how long it waited.
func waitFor(t testing.TB, timeout time.Duration, msg string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %s waiting for %s", timeout, msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// durationStats returns the median and maximum of ds.
func durationStats(ds []time.Duration) (median, maximum time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)-1]
}
