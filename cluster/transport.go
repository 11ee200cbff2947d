package cluster

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// A node may be given a SourceIP: every connection it opens then leaves from
// that address. On separate machines the kernel picks the right one anyway;
// on one machine, with each node on its own loopback address (127.0.0.11,
// 127.0.0.12, …), it lets a firewall rule on source and destination cut one
// node off from another — raft, gossip (UDP too) and HTTP alike — which is
// how the chaos tests partition a cluster.

// localAddr returns the dialer's local address for sourceIP, nil if unset.
func localAddr(sourceIP string) *net.TCPAddr {
	if ip := net.ParseIP(sourceIP); ip != nil {
		return &net.TCPAddr{IP: ip}
	}
	return nil
}

// tcpStreamLayer is raft's TCP stream layer (as raft.NewTCPTransport builds
// it), dialing from a chosen source address.
type tcpStreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	source    *net.TCPAddr
}

var _ raft.StreamLayer = (*tcpStreamLayer)(nil)

func newTCPStreamLayer(bind string, advertise net.Addr, sourceIP string) (*tcpStreamLayer, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	if advertise == nil {
		advertise = ln.Addr()
	}
	if a, ok := advertise.(*net.TCPAddr); !ok || a.IP == nil || a.IP.IsUnspecified() {
		_ = ln.Close()
		return nil, errors.New("local bind address is not advertisable; set AdvertiseAddr")
	}
	return &tcpStreamLayer{ln: ln, advertise: advertise, source: localAddr(sourceIP)}, nil
}

// Dial opens a connection to another raft server.
func (l *tcpStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	if l.source != nil {
		d.LocalAddr = l.source
	}
	return d.Dial("tcp", string(address))
}

// Accept waits for the next connection.
func (l *tcpStreamLayer) Accept() (net.Conn, error) { return l.ln.Accept() }

// Close stops listening.
func (l *tcpStreamLayer) Close() error { return l.ln.Close() }

// Addr is the advertised address.
func (l *tcpStreamLayer) Addr() net.Addr { return l.advertise }

// sourceTransport is memberlist's NetTransport with stream dials leaving from
// a chosen source address (its UDP packets already leave from the bound one).
type sourceTransport struct {
	*memberlist.NetTransport
	source *net.TCPAddr
}

var _ memberlist.NodeAwareTransport = (*sourceTransport)(nil)

func newSourceTransport(bindAddr string, bindPort int, sourceIP string, mc *memberlist.Config) (*sourceTransport, error) {
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{bindAddr},
		BindPort:  bindPort,
		Logger:    mc.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("gossip transport on %s:%d: %w", bindAddr, bindPort, err)
	}
	return &sourceTransport{NetTransport: nt, source: localAddr(sourceIP)}, nil
}

// DialTimeout opens a stream to addr from the source address.
func (t *sourceTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout, LocalAddr: t.source}
	return d.Dial("tcp", addr)
}

// DialAddressTimeout opens a stream to a.Addr from the source address.
func (t *sourceTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}
