package testkit

import (
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
)

// Ports are handed out from [portLow, portHigh): below the kernel's
// ephemeral range (32768 and up on Linux), from which outgoing connections
// take their local ports. A port from 127.0.0.1:0 comes out of that range
// and can be taken by some connection between the test choosing it and a
// server binding it; one from here cannot.
const (
	portLow  = 20000
	portHigh = 32000
)

// portNext is the last port tried. Each test binary starts at a random point,
// as the packages' tests run in parallel processes.
var portNext struct {
	sync.Mutex
	n int
}

// FreeAddr returns "127.0.0.1:port" with a port that was free for both TCP
// and UDP a moment ago, for a server to bind later, or as an address where
// nothing listens (connections are refused). See FreeAddrOn.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return FreeAddrOn(t, "127.0.0.1")
}

// FreeAddrOn returns ip:port with a port that was free on ip for both TCP
// and UDP a moment ago: memberlist binds both on one port. The port is below
// the ephemeral range, and no two calls in one test binary return the same
// port until the range wraps. It fails t if no port is free.
func FreeAddrOn(t testing.TB, ip string) string {
	t.Helper()
	portNext.Lock()
	defer portNext.Unlock()
	if portNext.n == 0 {
		portNext.n = portLow + rand.IntN(portHigh-portLow)
	}
	for range portHigh - portLow {
		portNext.n++
		if portNext.n >= portHigh {
			portNext.n = portLow
		}
		addr := net.JoinHostPort(ip, strconv.Itoa(portNext.n))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err != nil {
			continue
		}
		pc.Close()
		return addr
	}
	t.Fatalf("no port in [%d, %d) free for TCP and UDP on %s", portLow, portHigh, ip)
	return ""
}
