package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/cube-orch/cube/security"
	"github.com/hashicorp/go-hclog"
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

// handshakeTimeout bounds the TLS handshake of a raft connection a peer
// opened to this server. raft's NetworkTransport reads an incoming
// connection without any deadline (a heartbeat connection idles between
// heartbeats), so without this a stranger that connects and says nothing
// would hold a goroutine and a socket for ever. A manager on a LAN completes
// the handshake in milliseconds; the bound only has to be far above that.
const handshakeTimeout = 5 * time.Second

// tcpStreamLayer is raft's TCP stream layer (as raft.NewTCPTransport builds
// it), dialing from a chosen source address, and with tls set, speaking
// mutual TLS in both directions: only a peer presenting a manager
// certificate of the cluster's CA is served, and only a peer presenting one
// is dialed (see newStreamLayer).
type tcpStreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	// dialer is the one dialer of every outgoing connection, plain or TLS,
	// so that whatever it sets (the source address) holds on both paths.
	dialer net.Dialer
	// server and client are the TLS configs of accepted and dialed
	// connections; both nil when TLS is off.
	server, client *tls.Config
	// handshake bounds the TLS handshake of an accepted connection.
	handshake time.Duration
	log       hclog.Logger
}

var _ raft.StreamLayer = (*tcpStreamLayer)(nil)

// newStreamLayer listens on bind for raft. With bundle set, every
// connection is mutual TLS between manager certificates of the bundle's CA
// (the server side verifies the caller's role; the dialing side verifies
// the peer under security.ServerName(RoleManager), whatever address it
// dialed); with bundle nil, plain TCP.
func newStreamLayer(bind string, advertise net.Addr, sourceIP string, bundle *security.Bundle, log hclog.Logger) (*tcpStreamLayer, error) {
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
	l := &tcpStreamLayer{ln: ln, advertise: advertise, handshake: handshakeTimeout, log: log}
	if src := localAddr(sourceIP); src != nil {
		l.dialer.LocalAddr = src
	}
	if bundle != nil {
		l.server = bundle.ServerConfig(true, security.RoleManager)
		l.client = bundle.ClientConfig(security.RoleManager)
	}
	log.Info("raft transport listening", "bind", ln.Addr().String(), "advertise", advertise.String(), "tls", bundle != nil)
	return l, nil
}

// Dial opens a connection to another raft server. With TLS, timeout bounds
// the connect and the handshake together: raft passes its I/O timeout, and
// a peer that accepts the TCP connection but never completes a handshake
// must fail the RPC like one that does not answer at all.
func (l *tcpStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if l.client == nil {
		d := l.dialer
		d.Timeout = timeout
		return d.Dial("tcp", string(address))
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d := tls.Dialer{NetDialer: &l.dialer, Config: l.client}
	c, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, fmt.Errorf("raft TLS connection to %s: %w", address, err)
	}
	return c, nil
}

// Accept waits for the next connection. A TLS connection is returned
// before its handshake, which runs on the connection's first Read or Write
// in the goroutine raft gives each connection, so that a slow or hostile
// peer never holds up the accept loop (see serverConn).
func (l *tcpStreamLayer) Accept() (net.Conn, error) {
	c, err := l.ln.Accept()
	if err != nil || l.server == nil {
		return c, err
	}
	return &serverConn{Conn: tls.Server(c, l.server), timeout: l.handshake, log: l.log}, nil
}

// Close stops listening.
func (l *tcpStreamLayer) Close() error { return l.ln.Close() }

// Addr is the advertised address.
func (l *tcpStreamLayer) Addr() net.Addr { return l.advertise }

// serverConn is an accepted raft TLS connection whose handshake runs, under
// a deadline, on first use.
type serverConn struct {
	*tls.Conn
	timeout time.Duration
	log     hclog.Logger

	once sync.Once
	err  error
}

// Read completes the handshake, then reads.
func (c *serverConn) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

// Write completes the handshake, then writes.
func (c *serverConn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// handshake runs the TLS handshake once, within c.timeout, and then lifts
// the deadline: raft sets none on the connections it serves, and a
// heartbeat connection legitimately idles between heartbeats.
//
// A refused peer (no certificate, another CA, a worker or client
// certificate, not TLS at all) is logged here, once, with its address and
// the reason, and the error handed to raft is io.EOF: raft closes the
// connection quietly on EOF and would otherwise log a second, less telling
// "failed to decode incoming command" line.
func (c *serverConn) handshake() error {
	c.once.Do(func() {
		_ = c.Conn.SetDeadline(time.Now().Add(c.timeout))
		if err := c.Conn.Handshake(); err != nil {
			c.log.Warn("raft connection refused", "remote", c.Conn.RemoteAddr().String(), "error", err)
			c.err = io.EOF
			return
		}
		_ = c.Conn.SetDeadline(time.Time{})
		if c.log.IsDebug() {
			cs := c.Conn.ConnectionState()
			id, _ := security.PeerIdentity(&cs)
			c.log.Debug("raft connection accepted", "remote", c.Conn.RemoteAddr().String(), "peer", id.Name)
		}
	})
	return c.err
}

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
