package cluster

import (
	"context"
	"net"
	"strings"
	"testing"
)

func TestEndpoint_Advertised(t *testing.T) {
	http := func(bind, adv string) Endpoint {
		return Endpoint{Bind: bind, BindFlag: "--http", Advertise: adv, AdvertiseFlag: "--advertise-http"}
	}
	for _, tc := range []struct {
		name    string
		e       Endpoint
		host    string
		want    string
		wantErr string // substring; empty: no error
	}{
		{"concrete bind advertises itself", http("127.0.0.1:5556", ""), "", "127.0.0.1:5556", ""},
		{"host name bind advertises itself", http("node1.example:5556", ""), "", "node1.example:5556", ""},
		{"--advertise sets the host, bind the port", http("0.0.0.0:5556", ""), "10.0.0.5", "10.0.0.5:5556", ""},
		{"--advertise takes a host name", http("0.0.0.0:5556", ""), "node1.example", "node1.example:5556", ""},
		{"--advertise on IPv6", http("[::]:5556", ""), "fd00::5", "[fd00::5]:5556", ""},
		{"per-address override wins", http("0.0.0.0:5556", "192.0.2.1:80"), "10.0.0.5", "192.0.2.1:80", ""},
		{"0.0.0.0 without advertise", http("0.0.0.0:5556", ""), "", "",
			"--http 0.0.0.0:5556 binds every interface; give --advertise-http (or --advertise)"},
		{"[::] without advertise", http("[::]:5556", ""), "", "", "binds every interface"},
		{"empty host without advertise", http(":5556", ""), "", "", "binds every interface"},
		{"wildcard override", http("0.0.0.0:5556", "0.0.0.0:5556"), "", "", "--advertise-http \"0.0.0.0:5556\" must be this machine's address"},
		{"wildcard --advertise", http("0.0.0.0:5556", ""), "0.0.0.0", "", "--advertise \"0.0.0.0\" must be this machine's address"},
		{"override without port", http("0.0.0.0:5556", "10.0.0.5"), "", "", "--advertise-http"},
		{"bind without port", http("127.0.0.1", ""), "", "", "--http \"127.0.0.1\" must be HOST:PORT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.e.Advertised(tc.host)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Advertised(%+v, %q) = %q, %v; want an error containing %q", tc.e, tc.host, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Advertised(%+v, %q) = %q, %v; want %q", tc.e, tc.host, got, err, tc.want)
			}
		})
	}
}

func TestResolveAddr(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ in, want string }{
		{"localhost:6556", "127.0.0.1:6556"},
		{"127.0.0.2:6556", "127.0.0.2:6556"},
		{"[::1]:6556", "[::1]:6556"},
		{":6556", "0.0.0.0:6556"},
	} {
		got, err := ResolveAddr(ctx, tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ResolveAddr(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	// .invalid never resolves (RFC 6761); the error names the address.
	for _, in := range []string{"no-such-host.invalid:6556", "localhost", "localhost:http2"} {
		if got, err := ResolveAddr(ctx, in); err == nil || !strings.Contains(err.Error(), in) {
			t.Errorf("ResolveAddr(%q) = %q, %v; want an error naming it", in, got, err)
		}
	}
}

func TestWithPort(t *testing.T) {
	bound := &net.TCPAddr{IP: net.IPv4zero, Port: 41234}
	for _, tc := range []struct{ in, want string }{
		{"127.0.0.1:0", "127.0.0.1:41234"},
		{"node1.example:0", "node1.example:41234"},
		{"127.0.0.1:5556", "127.0.0.1:5556"},
	} {
		if got := WithPort(tc.in, bound); got != tc.want {
			t.Errorf("WithPort(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestGossipConfig_SetAddrs(t *testing.T) {
	for _, c := range []struct {
		name, bind, adv string
		seeds           []string
		wantBind        string
		wantPort        int
		wantAdv         string
		wantAdvPort     int
		wantErr         string
	}{
		{name: "bind is what it advertises", bind: "127.0.0.1:6557", adv: "127.0.0.1:6557", wantBind: "127.0.0.1", wantPort: 6557},
		{name: "wildcard bind, advertised name resolved", bind: "0.0.0.0:6557", adv: "localhost:6557", seeds: []string{"localhost:6567"},
			wantBind: "0.0.0.0", wantPort: 6557, wantAdv: "127.0.0.1", wantAdvPort: 6557},
		{name: "seed that does not resolve", bind: "127.0.0.1:6557", adv: "127.0.0.1:6557", seeds: []string{"nowhere.invalid:6557"}, wantErr: "seed (--join)"},
		{name: "advertise that does not resolve", bind: "0.0.0.0:6557", adv: "nowhere.invalid:6557", wantErr: "--advertise-gossip"},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := FastGossipConfig()
			err := g.SetAddrs(context.Background(), c.bind, c.adv, "--advertise-gossip", c.seeds)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("SetAddrs = %v, want an error naming %s", err, c.wantErr)
				}
				return
			}
			if err != nil || g.BindAddr != c.wantBind || g.BindPort != c.wantPort || g.AdvertiseAddr != c.wantAdv || g.AdvertisePort != c.wantAdvPort || len(g.Seeds) != len(c.seeds) {
				t.Fatalf("SetAddrs = %v: bind %s:%d, advertise %s:%d, seeds %v; want %s:%d, %s:%d, %v",
					err, g.BindAddr, g.BindPort, g.AdvertiseAddr, g.AdvertisePort, g.Seeds, c.wantBind, c.wantPort, c.wantAdv, c.wantAdvPort, c.seeds)
			}
		})
	}
}
