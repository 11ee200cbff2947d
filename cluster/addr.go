package cluster

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"
)

// A node binds its listeners to one address and advertises another: the
// address the other nodes and the clients dial. The two differ when a node
// binds every interface (0.0.0.0, ::) or sits behind a NAT. Nomad and Consul
// split them the same way (-bind and advertise { ... }).

// ResolveTimeout bounds the lookup of one host name in ResolveAddr.
const ResolveTimeout = 5 * time.Second

// IsWildcard reports whether addr ("host:port") binds every interface: its
// host is empty, 0.0.0.0 or ::. Such an address cannot be advertised.
func IsWildcard(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// AdvertiseAddr returns the address a listener bound to bind advertises:
// explicit if set, else host (a bare IP or host name, such as the value of
// --advertise) with bind's port, else bind itself. It does not resolve
// names; a bind with a wildcard host and neither override returns bind
// unchanged, which the callers' Validate refuses.
func AdvertiseAddr(bind, host, explicit string) (string, error) {
	if explicit != "" {
		if _, _, err := net.SplitHostPort(explicit); err != nil {
			return "", fmt.Errorf("advertise address %q must be host:port: %w", explicit, err)
		}
		return explicit, nil
	}
	if host == "" {
		return bind, nil
	}
	_, port, err := net.SplitHostPort(bind)
	if err != nil {
		return "", fmt.Errorf("bind address %q must be host:port: %w", bind, err)
	}
	return net.JoinHostPort(host, port), nil
}

// Endpoint is one listener of a node: the address it binds and the one it
// advertises, with the names of the flags that set them, for errors a
// person can act on.
type Endpoint struct {
	// Bind is where the listener binds ("host:port").
	Bind string
	// BindFlag names the flag of Bind, e.g. "--http".
	BindFlag string
	// Advertise overrides the advertised address ("host:port"); optional.
	Advertise string
	// AdvertiseFlag names the flag of Advertise, e.g. "--advertise-http".
	AdvertiseFlag string
}

// Advertised returns the address e advertises, given host (the value of
// --advertise, the host of every advertised address; may be empty). It
// refuses a wildcard, which no other node can dial, naming the flag to add.
func (e Endpoint) Advertised(host string) (string, error) {
	if _, _, err := net.SplitHostPort(e.Bind); err != nil {
		return "", fmt.Errorf("%s %q must be HOST:PORT: %v", e.BindFlag, e.Bind, err)
	}
	if host != "" && IsWildcard(net.JoinHostPort(host, "0")) {
		return "", fmt.Errorf("--advertise %q must be this machine's address, not a wildcard", host)
	}
	adv, err := AdvertiseAddr(e.Bind, host, e.Advertise)
	if err != nil {
		return "", fmt.Errorf("%s: %w", e.AdvertiseFlag, err)
	}
	if IsWildcard(adv) {
		if e.Advertise != "" {
			return "", fmt.Errorf("%s %q must be this machine's address, not a wildcard", e.AdvertiseFlag, e.Advertise)
		}
		return "", fmt.Errorf("%s %s binds every interface; give %s (or --advertise) with this machine's address", e.BindFlag, e.Bind, e.AdvertiseFlag)
	}
	return adv, nil
}

// WithPort returns addr with its port replaced by the port of bound when
// addr's port is 0: an advertised address of a listener opened on port 0
// names the port the kernel picked.
func WithPort(addr string, bound net.Addr) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port != "0" {
		return addr
	}
	if t, ok := bound.(*net.TCPAddr); ok {
		return net.JoinHostPort(host, strconv.Itoa(t.Port))
	}
	return addr
}

// ResolveAddr returns addr ("host:port") with its host resolved to an IP
// through net.DefaultResolver, bounded by ResolveTimeout and ctx. An IPv4
// address is preferred when the name has both kinds. An address whose host
// is already an IP is returned as is, and an empty host becomes 0.0.0.0.
// Raft and memberlist need IPs: raft compares server addresses as strings,
// and memberlist binds and advertises an IP.
func ResolveAddr(ctx context.Context, addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("address %q must be host:port: %w", addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return "", fmt.Errorf("address %q: %q is not a port number", addr, port)
	}
	if host == "" {
		return net.JoinHostPort("0.0.0.0", port), nil
	}
	if ip := net.ParseIP(host); ip != nil {
		return net.JoinHostPort(ip.String(), port), nil
	}
	ctx, cancel := context.WithTimeout(ctx, ResolveTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return "", fmt.Errorf("resolve %q: %w", addr, err)
	}
	if len(ips) == 0 {
		return "", fmt.Errorf("resolve %q: the name has no address", addr)
	}
	pick := ips[0].IP
	for _, ip := range ips {
		if ip.IP.To4() != nil {
			pick = ip.IP
			break
		}
	}
	return net.JoinHostPort(pick.String(), port), nil
}

// SetAddrs fills in where the pool binds (bind, "host:port"), what it
// advertises (advertise, already chosen by Endpoint.Advertised; equal to
// bind when nothing else is advertised) and the seeds it joins. memberlist
// binds and advertises IPs, so both are resolved here; seeds stay names
// (memberlist resolves them at every join, so a seed that moves is found
// again) but must resolve now, so a typo fails at start. advFlag names the
// advertise flag in errors.
func (c *GossipConfig) SetAddrs(ctx context.Context, bind, advertise, advFlag string, seeds []string) error {
	bindIP, err := ResolveAddr(ctx, bind)
	if err != nil {
		return fmt.Errorf("--gossip: %w", err)
	}
	advIP, err := ResolveAddr(ctx, advertise)
	if err != nil {
		return fmt.Errorf("%s: %w", advFlag, err)
	}
	for _, s := range seeds {
		if _, err := ResolveAddr(ctx, s); err != nil {
			return fmt.Errorf("seed (--join): %w", err)
		}
	}
	if c.BindAddr, c.BindPort, err = ParseGossipAddr(bindIP); err != nil {
		return err
	}
	c.AdvertiseAddr, c.AdvertisePort = "", 0
	if advIP != bindIP {
		if c.AdvertiseAddr, c.AdvertisePort, err = ParseGossipAddr(advIP); err != nil {
			return err
		}
	}
	c.Seeds = seeds
	return nil
}
