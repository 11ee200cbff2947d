package cluster

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics/compat"
	"github.com/hashicorp/memberlist"
)

const (
	// defaultLabel is the memberlist label used when GossipConfig.Label is
	// empty.
	defaultLabel = "cube"
	// joinBackoffMin and joinBackoffMax bound the wait between rounds of
	// seed joins while no seed answers.
	joinBackoffMin = 100 * time.Millisecond
	joinBackoffMax = 2 * time.Second
	// pollMin and pollMax bound the interval at which the pool re-reads
	// memberlist's node states (suspicion fires no event): a quarter of the
	// probe interval, clamped to these.
	pollMin = 10 * time.Millisecond
	pollMax = 250 * time.Millisecond
)

// Meta is the metadata a node gossips about itself. It travels JSON
// encoded and must fit in memberlist.MetaMaxSize (512) bytes.
type Meta struct {
	// Role is the node's role.
	Role Role
	// API is the node's HTTP API address, host:port.
	API string
	// RaftID is a manager's raft server ID.
	RaftID string `json:",omitempty"`
	// RaftAddr is a manager's raft address.
	RaftAddr string `json:",omitempty"`
	// Cpu is the node's capacity in cores.
	Cpu float64 `json:",omitempty"`
	// Memory is the node's memory capacity in bytes.
	Memory int64 `json:",omitempty"`
	// Disk is the node's disk capacity in bytes.
	Disk int64 `json:",omitempty"`
	// RuntimeDown is set by a worker whose container engine does not answer;
	// the leader places nothing new there.
	RuntimeDown bool `json:",omitempty"`
	// Allows is what a worker lets tasks ask for beyond an ordinary
	// container (api.Allowances.Tokens: "privileged", "host-network",
	// "mount:/srv/data", "cap:NET_ADMIN"), so the leader places such a task
	// only where it may run. It counts against the 512 bytes.
	Allows []string `json:",omitempty"`
	// Labels are a worker's own (cube worker --label zone=a), which tasks'
	// constraints are matched to. They count against the 512 bytes too
	// (api.ValidateLabels bounds them to api.MaxLabelBytes).
	Labels map[string]string `json:",omitempty"`
	// MaxCommand is, for a manager, the highest replicated command type its
	// state machine applies (fsm.MaxCommand): the leader proposes a command
	// only when every voter advertises at least its type, so that managers
	// can be upgraded one at a time. 0: a manager from before it was
	// advertised.
	MaxCommand uint8 `json:",omitempty"`
	// Version is the build the node runs (cube version: "v1.2.0" or "dev
	// (abc1234)"), so `cube members -o wide` shows a rolling upgrade's
	// progress. At most MaxVersionBytes: it counts against the 512 bytes.
	Version string `json:",omitempty"`
}

// MaxVersionBytes bounds Meta.Version.
const MaxVersionBytes = 64

// encode returns m's wire form, checking it fits memberlist's limit.
func (m Meta) encode() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode node metadata: %w", err)
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("%w: %d bytes encoded, the limit is %d", ErrMetaTooLarge, len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

// validate checks m's fields and encoded size.
func (m Meta) validate() error {
	if m.Role != RoleManager && m.Role != RoleWorker {
		return fmt.Errorf("Role %q must be %q or %q", m.Role, RoleManager, RoleWorker)
	}
	if m.Cpu < 0 || m.Memory < 0 || m.Disk < 0 {
		return fmt.Errorf("Cpu (%g), Memory (%d) and Disk (%d) cannot be negative", m.Cpu, m.Memory, m.Disk)
	}
	if len(m.Version) > MaxVersionBytes {
		return fmt.Errorf("Version %q is %d bytes; at most %d", m.Version, len(m.Version), MaxVersionBytes)
	}
	_, err := m.encode()
	return err
}

// MemberState is a node's liveness as seen by the local node.
type MemberState string

// Member states.
const (
	// StateAlive means the node answers probes.
	StateAlive MemberState = "alive"
	// StateSuspect means a probe failed: the node is declared dead unless
	// it refutes the suspicion in time.
	StateSuspect MemberState = "suspect"
	// StateDead means the node stopped answering (crash, partition).
	StateDead MemberState = "dead"
	// StateLeft means the node left gracefully (Pool.Leave).
	StateLeft MemberState = "left"
)

// Member is a node of the gossip pool as the local node sees it.
type Member struct {
	// Name is the node's unique name.
	Name string
	// Addr is the node's gossip address, ip:port.
	Addr string
	// State is the node's liveness.
	State MemberState
	// Meta is the node's latest metadata.
	Meta Meta
	// Since is when the node entered State, by the local clock.
	Since time.Time
}

// member is the pool's record of one node.
type member struct {
	addr  string
	meta  Meta
	state MemberState
	since time.Time
	// gen counts event-delegate updates, so a refresh that read
	// memberlist before an event does not overwrite it.
	gen uint64
	// down: memberlist reported the node dead or left (NotifyLeave) and
	// it has not come back; classified: refresh has since read which.
	down, classified bool
	// gone: memberlist reaped the entry; it is not queried again until
	// the node rejoins.
	gone bool
}

// Pool is this node's membership in the gossip pool of managers and
// workers. All methods are safe for concurrent use.
type Pool struct {
	cfg  GossipConfig
	log  hclog.Logger
	ml   *memberlist.Memberlist
	poll time.Duration

	metaMu sync.Mutex
	meta   []byte // encoded local Meta, served to memberlist

	// refreshMu serialises refresh. Lock order: refreshMu, then
	// memberlist's node lock (taken and released inside nodeState), then
	// mu. memberlist callbacks take mu while holding its node lock, so mu
	// is never held while calling into memberlist.
	refreshMu sync.Mutex

	mu        sync.Mutex
	members   map[string]*member
	version   uint64 // bumped on every change visible in Members
	signalled uint64 // version subscribers were last told about
	subs      map[uint64]chan struct{}
	nextSub   uint64
	changes   <-chan struct{}

	// joinRounds counts rounds of seed joins, for tests; refreshes and
	// polled count refreshes and the member states they read.
	joinRounds        atomic.Int64
	refreshes, polled atomic.Int64

	kick   chan struct{} // capacity 1: wakes watch
	stopCh chan struct{}
	wg     sync.WaitGroup

	// ring is memberlist's keyring; nil when gossip is not encrypted.
	// keyMu serialises keyring changes with their persistence.
	ring  *memberlist.Keyring
	keyMu sync.Mutex

	stateMu  sync.Mutex // orders Leave, UpdateMeta and Shutdown
	left     bool
	shutdown bool
}

// NewPool creates this node's gossip member, bound to cfg.BindAddr and
// cfg.BindPort, and starts joining cfg.Seeds in the background. It
// returns before any seed has answered.
func NewPool(cfg GossipConfig) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.Default()
	}
	meta, err := cfg.Meta.encode()
	if err != nil {
		return nil, err
	}
	p := &Pool{
		cfg:     cfg,
		log:     cfg.Logger.Named("gossip"),
		poll:    min(max(cfg.ProbeInterval/4, pollMin), pollMax),
		meta:    meta,
		members: make(map[string]*member),
		subs:    make(map[uint64]chan struct{}),
		kick:    make(chan struct{}, 1),
		stopCh:  make(chan struct{}),
	}
	p.changes, _ = p.Subscribe()

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = cfg.BindPort
	}
	if mc.AdvertiseAddr == "" && cfg.AdvertisePort != 0 {
		// memberlist ignores AdvertisePort without AdvertiseAddr.
		mc.AdvertiseAddr = cfg.BindAddr
	}
	mc.Label = cfg.Label
	if mc.Label == "" {
		mc.Label = defaultLabel
	}
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.GossipInterval = cfg.GossipInterval
	mc.SuspicionMult = cfg.SuspicionMult
	mc.DeadNodeReclaimTime = cfg.DeadNodeReclaimTime
	mc.TCPTimeout = cfg.StreamTimeout
	// Memberlist's metrics (metrics.go) carry the node's name: several
	// nodes in one process (the tests) then keep apart in /metrics.
	mc.MetricLabels = []metrics.Label{{Name: "node", Value: cfg.Name}}
	mc.PushPullInterval = cfg.PushPullInterval
	mc.EnableCompression = !cfg.NoCompression
	mc.Delegate = (*poolDelegate)(p)
	mc.Events = (*poolEvents)(p)
	mc.Logger = p.log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	keys, err := startKeys(cfg, p.log)
	if err != nil {
		return nil, err
	}
	if len(keys) > 0 {
		if p.ring, err = memberlist.NewKeyring(keys, keys[0]); err != nil {
			return nil, fmt.Errorf("gossip keyring: %w", err)
		}
		// Both directions verified: a node never accepts a clear-text
		// message, nor sends one, once it holds a key.
		mc.Keyring, mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = p.ring, true, true
	}

	if cfg.SourceIP != "" {
		tr, err := newSourceTransport(cfg.BindAddr, cfg.BindPort, cfg.SourceIP, mc)
		if err != nil {
			return nil, err
		}
		mc.Transport = tr
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("create gossip member %s on %s:%d: %w", cfg.Name, cfg.BindAddr, cfg.BindPort, err)
	}
	p.ml = ml
	p.log.Info("gossip member started", "name", cfg.Name, "addr", p.LocalAddr(), "label", mc.Label, "encrypted", p.ring != nil, "keys", len(keys))

	p.wg.Add(3)
	go p.watch()
	go p.joinSeeds(p.seedsExceptSelf())
	go p.reconnect()
	return p, nil
}

// LocalName returns this node's name.
func (p *Pool) LocalName() string { return p.cfg.Name }

// LocalAddr returns this node's advertised gossip address, ip:port; give
// it to other nodes as a seed.
func (p *Pool) LocalAddr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m, ok := p.members[p.cfg.Name]; ok {
		return m.addr
	}
	return ""
}

// Members returns every node this node has seen, including itself, with
// its current state, sorted by name. Dead and left nodes are kept (with
// Since) so the consumer can act on them; a node that comes back is alive
// again.
func (p *Pool) Members() []Member {
	p.refresh()
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Member, 0, len(p.members))
	for _, name := range slices.Sorted(maps.Keys(p.members)) {
		m := p.members[name]
		out = append(out, Member{Name: name, Addr: m.addr, State: m.state, Meta: m.meta, Since: m.since})
	}
	return out
}

// Changes returns the pool's default change signal: a capacity-1 channel
// that receives a value (without blocking memberlist) whenever Members
// would return something new: a join, a state change, a metadata update.
// Signals coalesce; the consumer calls Members after each. The channel
// belongs to one consumer; others use Subscribe.
func (p *Pool) Changes() <-chan struct{} { return p.changes }

// Subscribe returns a new change signal like Changes, for an additional
// consumer, and a function that unsubscribes it. The channel is never
// closed.
func (p *Pool) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	p.mu.Lock()
	id := p.nextSub
	p.nextSub++
	p.subs[id] = ch
	p.mu.Unlock()
	return ch, func() {
		p.mu.Lock()
		delete(p.subs, id)
		p.mu.Unlock()
	}
}

// UpdateMeta replaces this node's metadata and gossips it, waiting at most
// BroadcastTimeout for the broadcast. Metadata whose encoding exceeds 512
// bytes is refused with ErrMetaTooLarge.
func (p *Pool) UpdateMeta(m Meta) error {
	if err := m.validate(); err != nil {
		return fmt.Errorf("update node metadata: %w", err)
	}
	b, err := m.encode()
	if err != nil {
		return err
	}
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	if p.shutdown || p.left {
		return fmt.Errorf("update node metadata: %w", ErrShutdown)
	}
	p.metaMu.Lock()
	p.meta = b
	p.metaMu.Unlock()
	if err := p.ml.UpdateNode(p.cfg.BroadcastTimeout); err != nil {
		return fmt.Errorf("update node metadata: %w", err)
	}
	return nil
}

// Leave announces a graceful departure and waits at most timeout for the
// announcement to be gossiped: other nodes then see this one as StateLeft
// (not StateDead) at once. The node keeps gossiping until Shutdown, which
// should follow.
func (p *Pool) Leave(timeout time.Duration) error {
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	if p.shutdown {
		// memberlist panics on Leave after Shutdown.
		return fmt.Errorf("leave gossip pool: %w", ErrShutdown)
	}
	p.left = true
	if err := p.ml.Leave(timeout); err != nil {
		return fmt.Errorf("leave gossip pool: %w", err)
	}
	p.log.Info("left gossip pool", "name", p.cfg.Name)
	return nil
}

// Shutdown stops the seed joiner and the state watcher, waits for them,
// and stops gossiping without announcing it: others see this node dead
// after their suspicion timeout (call Leave first for a graceful exit).
// It is idempotent. A join in progress to an unreachable seed can delay
// it by up to StreamTimeout.
func (p *Pool) Shutdown() error {
	p.stateMu.Lock()
	if p.shutdown {
		p.stateMu.Unlock()
		return nil
	}
	p.shutdown = true
	p.stateMu.Unlock()

	close(p.stopCh)
	p.wg.Wait()
	if err := p.ml.Shutdown(); err != nil {
		return fmt.Errorf("shut down gossip member: %w", err)
	}
	p.log.Info("gossip member shut down", "name", p.cfg.Name)
	return nil
}

// joinSeeds joins every seed, in rounds with exponential backoff, until a
// round joins at least one or another node has joined this one. Seeds are
// joined one at a time so a stop request waits for one join at most.
func (p *Pool) joinSeeds(seeds []string) {
	defer p.wg.Done()
	if len(seeds) == 0 {
		return
	}
	backoff := joinBackoffMin
	for attempt := 1; ; attempt++ {
		p.joinRounds.Add(1)
		joined := 0
		var lastErr error
		for _, s := range seeds {
			if p.stopped() {
				return
			}
			n, err := p.ml.Join([]string{s})
			if err != nil {
				lastErr = err
				continue
			}
			joined += n
		}
		if joined > 0 {
			p.log.Info("joined gossip pool", "seeds", seeds, "joined", joined, "attempt", attempt)
			return
		}
		if p.ml.NumMembers() > 1 {
			p.log.Info("joined gossip pool by another node", "attempt", attempt)
			return
		}
		p.log.Warn("no gossip seed answered, retrying", "seeds", seeds, "attempt", attempt, "retry_in", backoff, "error", lastErr)
		t := time.NewTimer(backoff)
		select {
		case <-p.stopCh:
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, joinBackoffMax)
	}
}

// reconnect, every ReconnectInterval, joins the seeds this node does not
// see alive, or else one random node it has held dead for less than
// ReconnectTimeout. A join is a full state exchange: the other side learns
// this node, this node learns the other's view, and a node wrongly held
// dead refutes it.
func (p *Pool) reconnect() {
	defer p.wg.Done()
	t := time.NewTicker(p.cfg.ReconnectInterval)
	defer t.Stop()
	for tick := 0; ; tick++ {
		select {
		case <-p.stopCh:
			return
		case <-t.C:
		}
		targets := p.reconnectTargets(time.Now(), tick)
		if len(targets) == 0 {
			continue
		}
		n, err := p.ml.Join(targets)
		if n > 0 {
			p.log.Info("reconnected to gossip nodes", "tried", targets, "reached", n)
		} else {
			p.log.Debug("reconnect to gossip nodes", "tried", targets, "error", err)
		}
	}
}

// reconnectTargets picks what reconnect joins at its tick-th tick: every
// seed not seen alive, else one random member dead for less than
// ReconnectTimeout, but only every reconnectScale(members)-th tick.
// Members that left gracefully are not tried: they said they were going.
//
// Every member reconnects, and a join is a full state exchange, so the
// pool's reconnect traffic grows with the members times their number; on a
// starved machine it revived falsely dead members and spread their state
// again until the pool flapped (bench/scale/SCALE.md, 100 members). The
// dead-member part is therefore spaced out as memberlist spaces out its
// own state syncs; the seeds are not: reaching them again is how a node
// finds a control plane that restarted.
func (p *Pool) reconnectTargets(now time.Time, tick int) []string {
	p.mu.Lock()
	alive := make(map[string]bool, len(p.members))
	var dead []string
	for name, m := range p.members {
		switch {
		case name == p.cfg.Name:
		case m.state == StateAlive || m.state == StateSuspect:
			alive[m.addr] = true
		case m.state == StateDead && now.Sub(m.since) < p.cfg.ReconnectTimeout:
			dead = append(dead, m.addr)
		}
	}
	p.mu.Unlock()
	var seeds []string
	for _, s := range p.seedsExceptSelf() {
		addr := s
		if a, err := net.ResolveTCPAddr("tcp", s); err == nil {
			addr = a.String() // as memberlist names members: IP:port
		}
		if !alive[addr] {
			seeds = append(seeds, s)
		}
	}
	if len(seeds) > 0 {
		return seeds
	}
	dead = slices.DeleteFunc(dead, func(a string) bool { return alive[a] })
	if len(dead) == 0 || tick%reconnectScale(len(alive)+len(dead)+1) != 0 {
		return nil
	}
	return []string{dead[rand.IntN(len(dead))]}
}

// reconnectScale is how many reconnect ticks apart a member tries one of
// its dead members in a pool of n: 1 up to 32 members, then one more for
// each doubling, as memberlist's pushPullScale (with 1,000 members: 6).
func reconnectScale(n int) int {
	const base = 32
	if n <= base {
		return 1
	}
	return int(math.Ceil(math.Log2(float64(n))-math.Log2(base))) + 1
}

// seedsExceptSelf returns cfg.Seeds without this node's own address:
// joining oneself succeeds and would end the retries while alone.
func (p *Pool) seedsExceptSelf() []string {
	self := p.LocalAddr()
	selfIP, selfPort, _ := splitIPPort(self)
	var out []string
	for _, s := range p.cfg.Seeds {
		if s == self {
			continue
		}
		if a, err := net.ResolveTCPAddr("tcp", s); err == nil && selfIP != nil && a.Port == selfPort &&
			(a.IP.Equal(selfIP) || (a.IP.IsLoopback() && selfIP.IsLoopback())) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// stopped reports whether Shutdown has begun.
func (p *Pool) stopped() bool {
	select {
	case <-p.stopCh:
		return true
	default:
		return false
	}
}

// watch refreshes member states when an event arrives and every poll
// interval (suspicion and its refutation fire no event).
func (p *Pool) watch() {
	defer p.wg.Done()
	t := time.NewTicker(p.poll)
	defer t.Stop()
	for {
		select {
		case <-p.stopCh:
			return
		case <-p.kick:
		case <-t.C:
		}
		p.refresh()
	}
}

// refresh reads memberlist's state of every node that may have changed
// without an event (alive and suspect nodes, and nodes reported down but
// not yet classified as dead or left), records changes and signals
// subscribers.
func (p *Pool) refresh() {
	p.refreshMu.Lock()
	defer p.refreshMu.Unlock()

	type query struct {
		name string
		gen  uint64
	}
	p.mu.Lock()
	queries := make([]query, 0, len(p.members))
	for name, m := range p.members {
		if !m.down && len(p.cfg.PollRoles) > 0 && !slices.Contains(p.cfg.PollRoles, m.meta.Role) {
			continue // not polled; a death or departure is still read once its event came
		}
		if !m.gone && (!m.down || !m.classified) {
			queries = append(queries, query{name, m.gen})
		}
	}
	p.mu.Unlock()

	type result struct {
		state memberlist.NodeStateType
		ok    bool
	}
	results := make([]result, len(queries))
	p.refreshes.Add(1)
	p.polled.Add(int64(len(queries)))
	for i, q := range queries {
		results[i].state, results[i].ok = nodeState(p.ml, q.name)
	}

	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, q := range queries {
		m := p.members[q.name]
		if m == nil || m.gen != q.gen {
			continue // an event arrived meanwhile; the next refresh reads again
		}
		state := StateDead
		if results[i].ok {
			state = memberState(results[i].state)
		} else {
			m.gone = true
		}
		if m.down {
			m.classified = true
		}
		if state != m.state {
			if state == StateDead || state == StateLeft || m.state == StateDead || m.state == StateLeft {
				p.log.Info("gossip member state changed", "name", q.name, "from", m.state, "to", state)
			} else {
				p.log.Debug("gossip member state changed", "name", q.name, "from", m.state, "to", state)
			}
			m.state, m.since = state, now
			p.version++
		}
	}
	p.signalLocked()
}

// signalLocked tells subscribers about a new version, without blocking.
func (p *Pool) signalLocked() {
	if p.version == p.signalled {
		return
	}
	p.signalled = p.version
	for _, ch := range p.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// memberState converts memberlist's node state.
func memberState(s memberlist.NodeStateType) MemberState {
	switch s {
	case memberlist.StateAlive:
		return StateAlive
	case memberlist.StateSuspect:
		return StateSuspect
	case memberlist.StateLeft:
		return StateLeft
	default:
		return StateDead
	}
}

// wake asks watch to refresh soon, without blocking.
func (p *Pool) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// poolDelegate serves this node's metadata to memberlist.
type poolDelegate Pool

// NodeMeta returns the encoded local Meta (validated to fit limit).
func (d *poolDelegate) NodeMeta(limit int) []byte {
	d.metaMu.Lock()
	defer d.metaMu.Unlock()
	if len(d.meta) > limit {
		return nil
	}
	return slices.Clone(d.meta)
}

// NotifyMsg ignores user messages; the pool sends none.
func (d *poolDelegate) NotifyMsg([]byte) {}

// GetBroadcasts returns no user broadcasts.
func (d *poolDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState returns no user state for push/pull.
func (d *poolDelegate) LocalState(join bool) []byte { return nil }

// MergeRemoteState ignores remote user state.
func (d *poolDelegate) MergeRemoteState(buf []byte, join bool) {}

// poolEvents records memberlist's join, leave and update events. memberlist
// calls it with its node lock held, one call at a time: it only copies
// what it needs into the pool's table and wakes the watcher.
type poolEvents Pool

// NotifyJoin records a node that joined or came back (also fired for the
// local node at start).
func (e *poolEvents) NotifyJoin(n *memberlist.Node) {
	p := (*Pool)(e)
	meta := p.decodeMeta(n)
	p.mu.Lock()
	m := p.members[n.Name]
	if m == nil {
		m = &member{}
		p.members[n.Name] = m
	}
	m.addr, m.meta = n.Address(), meta
	m.down, m.classified, m.gone = false, false, false
	if m.state != StateAlive {
		was := m.state
		if was == "" {
			was = "unknown"
		}
		p.log.Info("gossip member joined", "name", n.Name, "addr", m.addr, "role", meta.Role, "was", was)
		m.state, m.since = StateAlive, time.Now()
	}
	m.gen++
	p.version++
	p.mu.Unlock()
	p.wake()
}

// NotifyLeave records that a node is dead or has left; the watcher reads
// which from memberlist once the node lock is released.
func (e *poolEvents) NotifyLeave(n *memberlist.Node) {
	p := (*Pool)(e)
	p.mu.Lock()
	if m := p.members[n.Name]; m != nil {
		m.down, m.classified = true, false
		m.gen++
	}
	p.mu.Unlock()
	p.wake()
}

// NotifyUpdate records a node's new metadata.
func (e *poolEvents) NotifyUpdate(n *memberlist.Node) {
	p := (*Pool)(e)
	meta := p.decodeMeta(n)
	p.mu.Lock()
	if m := p.members[n.Name]; m != nil {
		m.addr, m.meta = n.Address(), meta
		m.gen++
		p.version++
	}
	p.mu.Unlock()
	p.wake()
}

// decodeMeta decodes a node's metadata; undecodable metadata (another
// program on the same label) is logged and left empty.
func (p *Pool) decodeMeta(n *memberlist.Node) Meta {
	var m Meta
	if len(n.Meta) == 0 {
		return m
	}
	if err := json.Unmarshal(n.Meta, &m); err != nil {
		p.log.Warn("undecodable gossip metadata", "name", n.Name, "error", err)
		return Meta{}
	}
	return m
}

// String returns the member as name@addr(state), for logs.
func (m Member) String() string { return fmt.Sprintf("%s@%s(%s)", m.Name, m.Addr, m.State) }
