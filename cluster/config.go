package cluster

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/cube-orch/cube/security"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// Peer is one raft server: its stable ID and the raft TCP address it
// advertises.
type Peer struct {
	// ID is the server's stable raft ID (raft.ServerID).
	ID string
	// Addr is the server's raft TCP address, IP:port.
	Addr string
}

// RaftConfig configures NewRaft. Start from DefaultRaftConfig (production)
// or FastRaftConfig (`make cluster`, tests) and fill in the identity fields.
type RaftConfig struct {
	// SourceIP, if set, is the local address raft connections leave from
	// (see transport.go); empty lets the kernel choose.
	SourceIP string

	// TLS, if set, makes every raft connection mutual TLS: this server
	// presents its manager certificate and accepts, and dials, only peers
	// presenting a manager certificate of the same CA. Every server of a
	// cluster must agree: a server without TLS and one with it cannot talk.
	// Nil means plain TCP (cube dev, unit tests).
	TLS *security.Bundle

	// ID is this server's raft ID. It must be unique in the cluster and
	// stable across restarts: the caller passes the same ID at every start
	// (nothing else is persisted to recover it).
	ID string

	// BindAddr is the raft TCP listen address, a concrete IP:port such as
	// 127.0.0.1:7000. Port 0 picks a free port (see Raft.Addr); that is
	// only allowed when Peers is empty, since bootstrapped voters must
	// know each other's addresses in advance.
	BindAddr string

	// AdvertiseAddr is the address other servers dial, IP:port. It
	// defaults to BindAddr and is required when BindAddr is a wildcard
	// address (0.0.0.0). It must be stable across restarts: a server that
	// comes back on another address is unreachable until re-joined.
	AdvertiseAddr string

	// DataDir holds raft.db (raft-boltdb/v2 log and stable store) and
	// snapshots/. It is created if missing.
	DataDir string

	// Peers lists the initial voters, including this server. When the data
	// directory holds no raft state yet, the server bootstraps with this
	// list; every initial voter must be given the identical list. Empty
	// means "do not bootstrap": the server waits to be joined by a leader
	// (Raft.Join). Ignored once raft state exists.
	Peers []Peer

	// HeartbeatTimeout is how long a follower goes without hearing from
	// the leader before it starts an election (raft randomises it between
	// 1x and 2x). The leader heartbeats every HeartbeatTimeout/10.
	HeartbeatTimeout time.Duration

	// ElectionTimeout is how long a candidate waits for votes before it
	// starts another election. At least HeartbeatTimeout.
	ElectionTimeout time.Duration

	// LeaderLeaseTimeout is how long a leader keeps leading without
	// contact from a quorum before it steps down. At most HeartbeatTimeout.
	LeaderLeaseTimeout time.Duration

	// CommitTimeout is how long the leader waits without new commands
	// before it sends an AppendEntries so followers learn the commit index
	// (and apply) promptly.
	CommitTimeout time.Duration

	// SnapshotInterval is how often raft checks whether to snapshot
	// (randomised between 1x and 2x).
	SnapshotInterval time.Duration

	// SnapshotThreshold is how many log entries since the last snapshot
	// trigger a new one.
	SnapshotThreshold uint64

	// TrailingLogs is how many entries are kept after a snapshot, so a
	// briefly lagging follower catches up from the log instead of
	// receiving the whole snapshot.
	TrailingLogs uint64

	// OpenTimeout bounds the wait for the bolt file lock of DataDir. The
	// library default waits forever; a second process on the same data
	// directory must fail instead (ErrDataDirLocked).
	OpenTimeout time.Duration

	// ApplyTimeout bounds how long Apply, Barrier, Join and Remove wait for
	// raft to accept (enqueue) the operation. Waiting for the commit is
	// bounded by the caller's context, not by this.
	ApplyTimeout time.Duration

	// Logger receives raft's logs (as Logger.Named("raft")) and this
	// package's. Nil means hclog.Default().
	Logger hclog.Logger

	// RecoveryFSM returns a fresh, empty FSM of the kind NewRaft is given.
	// Only the recovery from a peers.json file uses it: raft.RecoverCluster
	// replays the log into it and leaves it unusable, so it cannot be the
	// FSM the server then runs. Nil refuses to start when a peers.json
	// file is found (see recover.go).
	RecoveryFSM func() raft.FSM
}

// DefaultRaftConfig returns the production profile: raft's own defaults
// (1 s heartbeat and election timeouts, 500 ms leader lease, 50 ms commit
// timeout). A crashed leader is replaced in about 2–3 s on a LAN.
func DefaultRaftConfig() RaftConfig {
	return RaftConfig{
		HeartbeatTimeout:   time.Second,
		ElectionTimeout:    time.Second,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
		SnapshotInterval:   120 * time.Second,
		SnapshotThreshold:  8192,
		TrailingLogs:       10240,
		OpenTimeout:        time.Second,
		ApplyTimeout:       5 * time.Second,
	}
}

// FastRaftConfig returns the profile used by `make cluster` and the tests:
// 200 ms heartbeat and election timeouts, a 100 ms leader lease and a
// 10 ms commit timeout. Measured on a 2-core machine under `go test -race`
// with both cores saturated by other processes (cluster/DESIGN.md), a
// killed leader is replaced and writes are accepted again after about
// 0.45 s median, 0.75 s at worst, with no spurious election among three
// healthy servers. 100 ms timeouts were also stable there and halve those
// numbers, but leave half the margin against pauses (GC, fsync, a burst of
// container starts); 200 ms keeps failover well under the 1 s goal.
func FastRaftConfig() RaftConfig {
	c := DefaultRaftConfig()
	c.HeartbeatTimeout = 200 * time.Millisecond
	c.ElectionTimeout = 200 * time.Millisecond
	c.LeaderLeaseTimeout = 100 * time.Millisecond
	c.CommitTimeout = 10 * time.Millisecond
	c.SnapshotInterval = 10 * time.Second
	c.SnapshotThreshold = 1024
	c.TrailingLogs = 1024
	c.ApplyTimeout = 2 * time.Second
	return c
}

// Validate reports the first problem with c. Its messages name the field
// and the bound it breaks, and wrap ErrInvalidConfig.
func (c RaftConfig) Validate() error {
	if c.ID == "" {
		return invalid("ID cannot be empty")
	}
	if c.BindAddr == "" {
		return invalid("BindAddr cannot be empty")
	}
	bindIP, bindPort, err := splitIPPort(c.BindAddr)
	if err != nil {
		return invalid("BindAddr %q must be a concrete IP:port: %v", c.BindAddr, err)
	}
	if bindPort == 0 && len(c.Peers) > 0 {
		return invalid("BindAddr %q needs a fixed port when Peers is set", c.BindAddr)
	}
	if c.AdvertiseAddr == "" {
		if bindIP.IsUnspecified() {
			return invalid("AdvertiseAddr is required when BindAddr (%s) is a wildcard address", c.BindAddr)
		}
	} else {
		ip, port, err := splitIPPort(c.AdvertiseAddr)
		if err != nil {
			return invalid("AdvertiseAddr %q must be a concrete IP:port: %v", c.AdvertiseAddr, err)
		}
		if ip.IsUnspecified() || port == 0 {
			return invalid("AdvertiseAddr %q must be a concrete IP and a non-zero port", c.AdvertiseAddr)
		}
	}
	if c.DataDir == "" {
		return invalid("DataDir cannot be empty")
	}
	if c.TLS != nil && c.TLS.Self.Role != security.RoleManager {
		return invalid("TLS holds a %s certificate (%q); raft needs a manager certificate", c.TLS.Self.Role, c.TLS.Self.Name)
	}
	if err := c.validatePeers(); err != nil {
		return err
	}
	const minTimeout = 5 * time.Millisecond
	if c.HeartbeatTimeout < minTimeout {
		return invalid("HeartbeatTimeout (%s) must be at least %s", c.HeartbeatTimeout, minTimeout)
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		return invalid("ElectionTimeout (%s) must be equal or greater than HeartbeatTimeout (%s)", c.ElectionTimeout, c.HeartbeatTimeout)
	}
	if c.LeaderLeaseTimeout < minTimeout {
		return invalid("LeaderLeaseTimeout (%s) must be at least %s", c.LeaderLeaseTimeout, minTimeout)
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		return invalid("LeaderLeaseTimeout (%s) cannot be larger than HeartbeatTimeout (%s)", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	if c.CommitTimeout < time.Millisecond {
		return invalid("CommitTimeout (%s) must be at least 1ms", c.CommitTimeout)
	}
	if c.SnapshotInterval < minTimeout {
		return invalid("SnapshotInterval (%s) must be at least %s", c.SnapshotInterval, minTimeout)
	}
	if c.SnapshotThreshold == 0 {
		return invalid("SnapshotThreshold must be positive")
	}
	if c.OpenTimeout <= 0 {
		return invalid("OpenTimeout (%s) must be positive: a zero timeout waits forever on the bolt file lock", c.OpenTimeout)
	}
	if c.ApplyTimeout <= 0 {
		return invalid("ApplyTimeout (%s) must be positive", c.ApplyTimeout)
	}
	return nil
}

// validatePeers checks that Peers has unique, well-formed entries and
// contains this server at its advertised address.
func (c RaftConfig) validatePeers() error {
	if len(c.Peers) == 0 {
		return nil
	}
	ids := make(map[string]bool, len(c.Peers))
	addrs := make(map[string]bool, len(c.Peers))
	self := false
	for i, p := range c.Peers {
		if p.ID == "" {
			return invalid("Peers[%d].ID cannot be empty", i)
		}
		ip, port, err := splitIPPort(p.Addr)
		if err != nil || ip.IsUnspecified() || port == 0 {
			return invalid("Peers[%d].Addr %q must be a concrete IP and a non-zero port", i, p.Addr)
		}
		if ids[p.ID] {
			return invalid("Peers[%d].ID %q is listed twice", i, p.ID)
		}
		if addrs[p.Addr] {
			return invalid("Peers[%d].Addr %q is listed twice", i, p.Addr)
		}
		ids[p.ID], addrs[p.Addr] = true, true
		if p.ID == c.ID {
			if p.Addr != c.advertiseAddr() {
				return invalid("Peers[%d].Addr %q must equal this server's advertised address %q", i, p.Addr, c.advertiseAddr())
			}
			self = true
		}
	}
	if !self {
		return invalid("Peers must include this server (ID %q)", c.ID)
	}
	return nil
}

// advertiseAddr returns AdvertiseAddr, defaulting to BindAddr.
func (c RaftConfig) advertiseAddr() string {
	if c.AdvertiseAddr != "" {
		return c.AdvertiseAddr
	}
	return c.BindAddr
}

// Role is the part a node plays in the cluster, carried in its gossip Meta.
type Role string

// Roles a node can play.
const (
	// RoleManager is a raft server that serves the manager API.
	RoleManager Role = "manager"
	// RoleWorker runs tasks.
	RoleWorker Role = "worker"
)

// GossipConfig configures NewPool. Start from DefaultGossipConfig
// (production) or FastGossipConfig (`make cluster`, tests).
type GossipConfig struct {
	// SourceIP, if set, is the local address gossip streams leave from.
	SourceIP string

	// Name is this node's name in the pool; it must be unique (memberlist
	// defaults to the hostname, which collides for local clusters).
	Name string

	// BindAddr is the IP memberlist listens on (UDP and TCP), e.g.
	// 127.0.0.1 locally.
	BindAddr string

	// BindPort is the UDP and TCP gossip port. Use a fixed port so seeds
	// can name it; 0 picks a free one (see Pool.LocalAddr).
	BindPort int

	// AdvertiseAddr is the IP other nodes use to reach this one; it
	// defaults to BindAddr (memberlist picks a private IP when BindAddr is
	// 0.0.0.0).
	AdvertiseAddr string

	// AdvertisePort is the port other nodes use; it defaults to the bound
	// port.
	AdvertisePort int

	// Seeds are the gossip addresses (host:port) of known nodes. The pool
	// joins all of them, retrying in the background with backoff until at
	// least one join succeeds or another node joins it, so a node may
	// start before its seeds. This node's own address is skipped.
	Seeds []string

	// Label isolates pools that share a host or network: packets with
	// another label are dropped. At most 255 bytes; empty means "cube".
	Label string

	// Keys are the gossip encryption keys (16, 24 or 32 bytes: AES-128,
	// -192, -256), the first one primary: it encrypts, and every key
	// decrypts. Set, every packet and stream is encrypted and
	// authenticated, and messages from nodes without a key of the ring are
	// dropped (see keyring.go). A keyring in KeyringFile takes precedence.
	// Empty, and with no keyring file: clear text.
	Keys [][]byte

	// KeyringFile, if set, is where the keyring is persisted (normally
	// KeyringFileName in the node's data directory): written at the first
	// start with Keys and after every change, and read at start in
	// preference to Keys, so a rotation survives restarts.
	KeyringFile string

	// Meta is this node's initial metadata; its JSON encoding must fit in
	// memberlist.MetaMaxSize (512) bytes.
	Meta Meta

	// ProbeInterval is the interval between failure probes of a random
	// peer.
	ProbeInterval time.Duration

	// ProbeTimeout is how long to wait for a probe's ack before trying
	// indirect probes; below ProbeInterval.
	ProbeTimeout time.Duration

	// GossipInterval is the interval between gossip rounds that spread
	// state changes.
	GossipInterval time.Duration

	// SuspicionMult scales how long a node stays suspect before it is
	// declared dead: SuspicionMult * max(1, log10(N)) * ProbeInterval.
	SuspicionMult int

	// DeadNodeReclaimTime is how long a dead node's name stays reserved
	// for its old address. After it, a node of that name announcing
	// itself from another address or port takes the name over; before
	// it, the newcomer is refused until the next push/pull sync (15–30 s).
	// Both profiles use 1 ms: names are unique node IDs, so a dead name
	// reappearing elsewhere is the node restarted or moved. A restart on
	// the same address needs no reclaim (the node refutes its death), and
	// a restart on a new port before the old entry is declared dead is
	// refused until that sync. Must be positive (zero in memberlist means
	// "never").
	DeadNodeReclaimTime time.Duration

	// StreamTimeout bounds a TCP exchange with another node (a join, a
	// push/pull sync, a fallback probe): memberlist's TCPTimeout.
	StreamTimeout time.Duration

	// PushPullInterval is the period of the full state sync with a random
	// node, the anti-entropy that repairs missed gossip.
	PushPullInterval time.Duration

	// BroadcastTimeout bounds how long UpdateMeta and Leave wait for their
	// message to be gossiped.
	BroadcastTimeout time.Duration

	// ReconnectInterval is how often the pool tries to reach again, by a
	// join, the seeds it does not see alive and otherwise one node it holds
	// dead (as serf does; memberlist alone never contacts a dead node
	// again). Without it, a node that saw every seed die (all managers
	// restarted at once) stays in a pool of its own: the restarted seeds
	// do not know it, and it does not look for them.
	ReconnectInterval time.Duration

	// NoCompression turns off memberlist's compression of gossip
	// messages (on by default, as in memberlist). Messages from members
	// that compress are still read. Compressing costs CPU on every packet
	// (LZW was a fifth of the CPU of a process simulating 180 workers,
	// bench/scale/SCALE.md) for bandwidth that a LAN rarely lacks.
	NoCompression bool

	// PollRoles, if set, limits the pool's polling of member states to
	// members of these roles. Memberlist signals some changes with no event
	// (a member suspected, or alive again after a suspicion), so the pool
	// re-reads the state of every member a few times a second: on each of
	// N members that is N reads per poll, N² in the pool. Joins, deaths,
	// departures and meta changes still arrive as events from every member
	// (a death or departure is then read once, to tell which it was); a
	// suspicion of a member not polled is not seen.
	// A worker polls only the managers: it never looks at another worker.
	PollRoles []Role

	// ReconnectTimeout is how long a dead node keeps being tried.
	ReconnectTimeout time.Duration

	// Logger receives memberlist's log lines (through a standard-library
	// adapter that keeps their level) and this package's. Nil means
	// hclog.Default().
	Logger hclog.Logger
}

// DefaultGossipConfig returns the production profile: memberlist's
// DefaultLANConfig timings (probe 1 s, probe timeout 500 ms, gossip
// 200 ms, suspicion multiplier 4, stream timeout 10 s, state sync 30 s),
// bound to 0.0.0.0:7946 with the advertised address picked by memberlist.
// A crashed node is declared dead in about 6 s, or about 13 s when fewer
// than three nodes survive to confirm the suspicion (see cluster/DESIGN.md).
func DefaultGossipConfig() GossipConfig {
	lan := memberlist.DefaultLANConfig()
	return GossipConfig{
		BindAddr:            "0.0.0.0",
		BindPort:            lan.BindPort,
		Label:               defaultLabel,
		ProbeInterval:       lan.ProbeInterval,
		ProbeTimeout:        lan.ProbeTimeout,
		GossipInterval:      lan.GossipInterval,
		SuspicionMult:       lan.SuspicionMult,
		DeadNodeReclaimTime: time.Millisecond,
		StreamTimeout:       lan.TCPTimeout,
		PushPullInterval:    lan.PushPullInterval,
		BroadcastTimeout:    5 * time.Second,
		ReconnectInterval:   10 * time.Second,
		ReconnectTimeout:    24 * time.Hour,
	}
}

// FastGossipConfig returns the profile used by `make cluster` and the
// tests: probe 200 ms, probe timeout 100 ms, gossip 50 ms, suspicion
// multiplier 2, with memberlist's local-network stream timeout (1 s) and
// state sync period (15 s), bound to 127.0.0.1. Measured under
// `go test -race` on a 2-core machine (cluster/DESIGN.md), both survivors
// of three declare a crashed node dead after 0.75–0.95 s (1.15 s at worst
// with the CPU saturated), with no false suspicion in steady state; a
// graceful Leave is seen in about 0.1 s.
func FastGossipConfig() GossipConfig {
	c := DefaultGossipConfig()
	c.BindAddr = "127.0.0.1"
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.GossipInterval = 50 * time.Millisecond
	c.SuspicionMult = 2
	local := memberlist.DefaultLocalConfig()
	c.StreamTimeout = local.TCPTimeout
	c.PushPullInterval = local.PushPullInterval
	c.BroadcastTimeout = 2 * time.Second
	c.ReconnectInterval = time.Second
	return c
}

// Validate reports the first problem with c. Its messages name the field
// and the bound it breaks, and wrap ErrInvalidConfig.
func (c GossipConfig) Validate() error {
	if c.Name == "" {
		return invalid("Name cannot be empty (memberlist's hostname default collides on one host)")
	}
	if net.ParseIP(c.BindAddr) == nil {
		return invalid("BindAddr %q must be an IP address", c.BindAddr)
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		return invalid("BindPort (%d) must be between 0 and 65535", c.BindPort)
	}
	if c.AdvertiseAddr != "" && net.ParseIP(c.AdvertiseAddr) == nil {
		return invalid("AdvertiseAddr %q must be an IP address", c.AdvertiseAddr)
	}
	if c.AdvertisePort < 0 || c.AdvertisePort > 65535 {
		return invalid("AdvertisePort (%d) must be between 0 and 65535", c.AdvertisePort)
	}
	if c.AdvertisePort != 0 && c.AdvertiseAddr == "" && net.ParseIP(c.BindAddr).IsUnspecified() {
		return invalid("AdvertisePort (%d) needs AdvertiseAddr when BindAddr (%s) is a wildcard address", c.AdvertisePort, c.BindAddr)
	}
	for i, s := range c.Seeds {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return invalid("Seeds[%d] %q must be host:port: %v", i, s, err)
		}
	}
	if len(c.Label) > memberlist.LabelMaxSize {
		return invalid("Label (%d bytes) cannot be longer than %d bytes", len(c.Label), memberlist.LabelMaxSize)
	}
	for i, k := range c.Keys {
		if err := memberlist.ValidateKey(k); err != nil {
			return invalid("Keys[%d] (%d bytes): %v", i, len(k), err)
		}
	}
	if err := c.Meta.validate(); err != nil {
		return invalid("Meta: %w", err)
	}
	if c.ProbeInterval <= 0 {
		return invalid("ProbeInterval (%s) must be positive", c.ProbeInterval)
	}
	if c.ProbeTimeout <= 0 || c.ProbeTimeout >= c.ProbeInterval {
		return invalid("ProbeTimeout (%s) must be positive and less than ProbeInterval (%s)", c.ProbeTimeout, c.ProbeInterval)
	}
	if c.GossipInterval <= 0 {
		return invalid("GossipInterval (%s) must be positive", c.GossipInterval)
	}
	if c.SuspicionMult < 1 {
		return invalid("SuspicionMult (%d) must be at least 1", c.SuspicionMult)
	}
	if c.DeadNodeReclaimTime <= 0 {
		return invalid("DeadNodeReclaimTime (%s) must be positive: zero never lets a restarted node reclaim its name", c.DeadNodeReclaimTime)
	}
	if c.StreamTimeout <= 0 {
		return invalid("StreamTimeout (%s) must be positive", c.StreamTimeout)
	}
	if c.PushPullInterval <= 0 {
		return invalid("PushPullInterval (%s) must be positive", c.PushPullInterval)
	}
	if c.ReconnectInterval <= 0 {
		return invalid("ReconnectInterval (%s) must be positive", c.ReconnectInterval)
	}
	if c.ReconnectTimeout <= 0 {
		return invalid("ReconnectTimeout (%s) must be positive", c.ReconnectTimeout)
	}
	if c.BroadcastTimeout <= 0 {
		return invalid("BroadcastTimeout (%s) must be positive", c.BroadcastTimeout)
	}
	return nil
}

// invalid formats a Validate error wrapping ErrInvalidConfig.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
}

// splitIPPort parses a concrete IP:port (no host names).
func splitIPPort(addr string) (net.IP, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, 0, err
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, 0, fmt.Errorf("%q is not an IP address", host)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, 0, fmt.Errorf("%q is not a port number", portStr)
	}
	return ip, port, nil
}
