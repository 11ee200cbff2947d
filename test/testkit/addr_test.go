package testkit

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// bindBoth binds addr for TCP and UDP, failing t if either is taken.
func bindBoth(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("TCP %s: %v", addr, err)
	}
	ln.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("UDP %s: %v", addr, err)
	}
	pc.Close()
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func TestFreeAddr_BindableForTCPAndUDPBelowTheEphemeralRange(t *testing.T) {
	seen := map[string]bool{}
	for range 20 {
		addr := FreeAddr(t)
		if !strings.HasPrefix(addr, "127.0.0.1:") {
			t.Fatalf("FreeAddr = %q; want 127.0.0.1:port", addr)
		}
		if p := portOf(t, addr); p < portLow || p >= portHigh {
			t.Errorf("port %d outside [%d, %d)", p, portLow, portHigh)
		}
		if seen[addr] {
			t.Errorf("%s handed out twice", addr)
		}
		seen[addr] = true
		bindBoth(t, addr)
	}
}

func TestFreeAddr_RefusesConnections(t *testing.T) {
	addr := FreeAddr(t)
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err == nil {
		conn.Close()
		t.Fatalf("connected to %s; want nothing listening", addr)
	}
}

// A port taken for TCP, and one taken for UDP only, are both skipped.
func TestFreeAddrOn_SkipsPortsTakenForTCPOrUDP(t *testing.T) {
	portNext.Lock()
	start := portNext.n
	if start == 0 || start >= portHigh-100 {
		start = portLow + 1000
	}
	portNext.n = start
	portNext.Unlock()

	tcpTaken := "127.0.0.1:" + strconv.Itoa(start+1)
	if ln, err := net.Listen("tcp", tcpTaken); err == nil {
		defer ln.Close()
	}
	udpTaken := "127.0.0.1:" + strconv.Itoa(start+2)
	if pc, err := net.ListenPacket("udp", udpTaken); err == nil {
		defer pc.Close()
	}
	addr := FreeAddrOn(t, "127.0.0.1")
	if p := portOf(t, addr); p <= start+2 {
		t.Errorf("FreeAddrOn = %s; want a port after %d (taken for TCP) and %d (taken for UDP)", addr, start+1, start+2)
	}
	bindBoth(t, addr)
}

func TestFreeAddrOn_IPv6(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	ln.Close()
	addr := FreeAddrOn(t, "::1")
	if !strings.HasPrefix(addr, "[::1]:") {
		t.Fatalf("FreeAddrOn(::1) = %q; want [::1]:port", addr)
	}
	bindBoth(t, addr)
}

// On an address that is not this machine's, no port is free: a Fatal.
func TestFreeAddrOn_FailsWhenNoPortIsFree(t *testing.T) {
	f := newFakeTB(t)
	returned := f.run(func() { FreeAddrOn(f, "192.0.2.1") }) // TEST-NET-1
	_, _, msg, failed := f.report()
	if !failed || returned || !strings.Contains(msg, "192.0.2.1") {
		t.Errorf("failed %v, returned %v, message %q; want a Fatal naming the IP", failed, returned, msg)
	}
}
