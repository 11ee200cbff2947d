package main

import (
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
)

func TestPortsText(t *testing.T) {
	cases := []struct {
		pm   api.PortMap
		want string
	}{
		{nil, "-"},
		{api.PortMap{"7777/tcp": nil}, "-"},
		// Docker publishes on IPv4 and IPv6: one entry.
		{api.PortMap{"7777/tcp": {{HostIp: "0.0.0.0", HostPort: "49153"}, {HostIp: "::", HostPort: "49153"}}}, "49153->7777/tcp"},
		// Docker 20.10 may give the IPv6 twin another port: the IPv4 one is shown.
		{api.PortMap{"7777/tcp": {{HostIp: "0.0.0.0", HostPort: "33152"}, {HostIp: "::", HostPort: "33147"}}}, "33152->7777/tcp"},
		{api.PortMap{"7777/tcp": {{HostIp: "::", HostPort: "33147"}}}, "33147->7777/tcp"},
		{api.PortMap{"7777/tcp": {{HostIp: "127.0.0.2", HostPort: "7777"}}}, "127.0.0.2:7777->7777/tcp"},
		{api.PortMap{"9000/udp": {{HostPort: "9000"}}, "7777/tcp": {{HostIp: "::1", HostPort: "80"}}}, "[::1]:80->7777/tcp,9000->9000/udp"},
	}
	for _, c := range cases {
		if got := portsText(c.pm); got != c.want {
			t.Errorf("portsText(%v) = %q, want %q", c.pm, got, c.want)
		}
	}
}

// With no manager listening, a client command fails in about a second (not
// --timeout), naming the addresses it tried and the connect error, and says
// how to start a cluster.
func TestClientCommands_NoManagerFailsFast(t *testing.T) {
	var addrs []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, ln.Addr().String())
		ln.Close()
	}
	m := strings.Join(addrs, ",")
	for _, args := range [][]string{{"status"}, {"node"}, {"stop", "bb1d59ef-9fc1-4e4b-a44d-db571eeed203"}, {"events"}, {"service", "ls"}} {
		start := time.Now()
		_, err := cube(t, m, args...)
		took := time.Since(start)
		if err == nil {
			t.Fatalf("cube %s with no manager: no error", strings.Join(args, " "))
		}
		if took > 2500*time.Millisecond {
			t.Errorf("cube %s with no manager: failed after %s, want about 1s", strings.Join(args, " "), took)
		}
		for _, w := range append(slices.Clone(addrs), "connection refused", "make cluster", "cube dev") {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("cube %s: error %q does not mention %q", strings.Join(args, " "), err, w)
			}
		}
	}
}
