package main

import (
	"testing"

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
