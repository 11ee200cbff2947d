package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

const (
	// raftDBFile is the bolt file holding the raft log and stable store.
	raftDBFile = "raft.db"
	// logCacheSize is how many recent log entries are kept in memory in
	// front of bolt, so replication of recent entries skips the disk.
	logCacheSize = 512
	// snapshotsRetained is how many snapshots the file store keeps.
	snapshotsRetained = 2
	// transportMaxPool is the number of idle connections kept per peer.
	transportMaxPool = 3
	// transportTimeout is the I/O deadline of one raft RPC. Elections do
	// not wait for it: votes are requested from every peer concurrently.
	transportTimeout = 10 * time.Second
	// notifyBuffer is the buffer of raft's NotifyCh. raft blocks its main
	// loop on this channel, so it is drained at once by forwardLeadership.
	notifyBuffer = 16
	// waiterGrace bounds how long Shutdown waits for goroutines that wait
	// on raft futures (see Raft.wait).
	waiterGrace = time.Second
)

// Raft is a raft server: the hashicorp/raft node with its transport and
// stores. All methods are safe for concurrent use.
type Raft struct {
	cfg       RaftConfig
	log       hclog.Logger
	raft      *raft.Raft
	store     *raftboltdb.BoltStore
	snaps     raft.SnapshotStore
	transport *raft.NetworkTransport
	addr      string
	// started is when NewRaft started raft: LeaderContact counts from it
	// until a leader first makes contact.
	started time.Time

	// bootstrapped records whether this start bootstrapped the cluster
	// (first start with Peers); tests check restarts never do.
	bootstrapped bool

	notifyCh chan bool     // raft's Config.NotifyCh, drained by forwardLeadership
	leaderCh chan bool     // LeaderChanges, fed by forwardLeadership
	stopCh   chan struct{} // closed by Shutdown
	wg       sync.WaitGroup
	// waiters counts goroutines blocked on raft futures; waitMu orders
	// their Add against Shutdown's Wait (noWaiters set).
	waitMu    sync.Mutex
	noWaiters bool
	waiters   sync.WaitGroup

	// failedHeartbeat is, on the leader, when its last heartbeat to each
	// follower failed (cleared when heartbeats resume); see watchHeartbeats.
	hbMu            sync.Mutex
	failedHeartbeat map[raft.ServerID]time.Time

	shutdownOnce sync.Once
	shutdownErr  error
}

// Server is one entry of the raft configuration.
type Server struct {
	// ID is the server's raft ID.
	ID string
	// Addr is the server's raft address.
	Addr string
	// Voter is true for voting members; a server that joined is a
	// non-voter until the leader's Promoter promotes it.
	Voter bool
	// Leader is true for the server this node believes is the leader.
	Leader bool
}

// NewRaft starts a raft server for fsm as configured by cfg. On the first
// start with a non-empty cfg.Peers (no raft state in cfg.DataDir) it
// bootstraps the cluster with exactly that server list; later starts, and
// starts with empty Peers, never bootstrap. It returns once raft is
// running; a leader is elected in the background.
//
// It fails with an error wrapping ErrDataDirLocked when another server
// holds cfg.DataDir for longer than cfg.OpenTimeout, and with one wrapping
// ErrStoreDamaged, naming the file, the fault and the recovery steps, when
// raft.db is damaged.
func NewRaft(cfg RaftConfig, fsm raft.FSM) (_ *Raft, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if fsm == nil {
		return nil, fmt.Errorf("%w: fsm cannot be nil", ErrInvalidConfig)
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.Default()
	}
	r := &Raft{
		cfg:      cfg,
		started:  time.Now(),
		log:      cfg.Logger.Named("cluster"),
		notifyCh: make(chan bool, notifyBuffer),
		leaderCh: make(chan bool),
		stopCh:   make(chan struct{}),

		failedHeartbeat: map[raft.ServerID]time.Time{},
	}
	// Close whatever was opened if a later step fails, in reverse order.
	defer func() {
		if err == nil {
			return
		}
		if r.transport != nil {
			r.transport.Close()
		}
		if r.store != nil {
			r.store.Close()
		}
	}()

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create raft data dir: %w", err)
	}

	// The store is opened before the transport binds, so a second server
	// started on a data directory in use reports the lock, not the port.
	// It is checked first (boltcheck.go): a damaged page would otherwise
	// panic inside bbolt, at Open or later in raft's goroutines.
	dbPath := filepath.Join(cfg.DataDir, raftDBFile)
	opts := *bbolt.DefaultOptions
	opts.Timeout = cfg.OpenTimeout
	err = CheckBolt(dbPath, cfg.OpenTimeout)
	if err == nil {
		err = OpenBolt(dbPath, func() (oerr error) {
			r.store, oerr = raftboltdb.New(raftboltdb.Options{Path: dbPath, BoltOptions: &opts})
			return oerr
		})
	}
	if err != nil {
		switch {
		case errors.Is(err, bolterrors.ErrTimeout):
			return nil, fmt.Errorf("open %s: %w: its lock is held by another server (waited %s)", dbPath, ErrDataDirLocked, cfg.OpenTimeout)
		case errors.Is(err, ErrStoreDamaged):
			return nil, fmt.Errorf("raft store: %w; this manager cannot start on it. %s", err, raftStoreRecovery(cfg))
		}
		return nil, fmt.Errorf("open %s: %w", dbPath, err)
	}
	logs, err := raft.NewLogCache(logCacheSize, r.store)
	if err != nil {
		return nil, fmt.Errorf("create log cache: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, snapshotsRetained, cfg.Logger.Named("raft"))
	if err != nil {
		return nil, fmt.Errorf("create snapshot store: %w", err)
	}
	r.snaps = snaps

	var advertise net.Addr
	if cfg.AdvertiseAddr != "" {
		if advertise, err = net.ResolveTCPAddr("tcp", cfg.AdvertiseAddr); err != nil {
			return nil, fmt.Errorf("resolve AdvertiseAddr %q: %w", cfg.AdvertiseAddr, err)
		}
	}
	stream, err := newStreamLayer(cfg.BindAddr, advertise, cfg.SourceIP, cfg.TLS, r.log)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.BindAddr, err)
	}
	r.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: transportMaxPool,
		Timeout: transportTimeout,
		Logger:  cfg.Logger.Named("raft-net"),
	})
	r.addr = string(r.transport.LocalAddr())

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.NotifyCh = r.notifyCh
	rc.Logger = cfg.Logger.Named("raft")
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}

	// A peers.json left by an operator (a lost majority) is applied before
	// raft starts; raft then starts from the configuration it lists.
	recovered, rerr := recoverFromPeersFile(cfg, rc, logs, r.store, snaps, r.transport, r.addr)
	switch {
	case rerr != nil && !recovered:
		return nil, rerr
	case rerr != nil:
		r.log.Warn("recovered the raft configuration", "error", rerr)
	case recovered:
		r.log.Warn("recovered the raft configuration from peers.json; it was renamed so it applies once",
			"file", filepath.Join(cfg.DataDir, PeersFileName+appliedSuffix))
	}
	existing, err := raft.HasExistingState(logs, r.store, snaps)
	if err != nil {
		return nil, fmt.Errorf("check raft state: %w", err)
	}
	var raftSnaps raft.SnapshotStore = snaps
	if n, ok := fsm.(SnapshotNoter); ok {
		raftSnaps = notingSnapshots{SnapshotStore: snaps, note: n.RestoringSnapshot}
	}
	r.raft, err = raft.NewRaft(rc, fsm, logs, r.store, raftSnaps, r.transport)
	if err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}

	switch {
	case existing:
		r.log.Info("raft state found, not bootstrapping", "id", cfg.ID, "addr", r.addr)
	case len(cfg.Peers) == 0:
		r.log.Info("no raft state and no peers, waiting to be joined", "id", cfg.ID, "addr", r.addr)
	default:
		servers := make([]raft.Server, len(cfg.Peers))
		for i, p := range cfg.Peers {
			servers[i] = raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)}
		}
		// ErrCantBootstrap means state appeared after the check above; the
		// existing state wins, which is what bootstrapping wants anyway.
		berr := r.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
		switch {
		case berr == nil:
			r.bootstrapped = true
			r.log.Info("bootstrapped raft cluster", "id", cfg.ID, "addr", r.addr, "voters", len(servers))
		case errors.Is(berr, raft.ErrCantBootstrap):
			r.log.Info("raft state found, not bootstrapping", "id", cfg.ID, "addr", r.addr)
		default:
			r.raft.Shutdown().Error()
			return nil, fmt.Errorf("bootstrap raft cluster: %w", berr)
		}
	}

	r.wg.Add(2)
	go r.forwardLeadership()
	go r.watchHeartbeats()
	if s, ok := fsm.(StateSizer); ok {
		r.wg.Add(1)
		go r.followStateSize(s)
	}
	return r, nil
}

// forwardLeadership drains raft's NotifyCh into LeaderChanges. raft blocks
// its main loop on NotifyCh, so this goroutine never blocks on it: values
// wait in a queue until the consumer takes them (see collapseLeadership).
// A consumer that is behind still sees every lose-and-regain as false then
// true, so it restarts its leader work for the new term.
func (r *Raft) forwardLeadership() {
	defer r.wg.Done()
	var pending []bool
	for {
		var out chan bool
		var next bool
		if len(pending) > 0 {
			out, next = r.leaderCh, pending[0]
		}
		select {
		case v := <-r.notifyCh:
			pending = collapseLeadership(append(pending, v))
			r.log.Info("raft leadership changed", "id", r.cfg.ID, "leader", v)
		case out <- next:
			pending = pending[1:]
		case <-r.stopCh:
			return
		}
	}
}

// collapseLeadership shortens a queue of undelivered leadership values:
// a run x, !x, x means the same to a consumer that has not seen it as x
// alone, so such runs shrink until at most two values remain.
func collapseLeadership(pending []bool) []bool {
	for n := len(pending); n >= 3 && pending[n-1] == pending[n-3]; n = len(pending) {
		pending = pending[:n-2]
	}
	return pending
}

// raftStoreRecovery is what an operator does about a damaged raft.db.
func raftStoreRecovery(cfg RaftConfig) string {
	return fmt.Sprintf("To recover: if the other managers still elect a leader, remove this one from raft on a healthy manager "+
		"(cube operator raft remove-peer %s), move %s (this manager's raft state) aside, and start this manager again without --peers: "+
		"it joins as a new manager and the leader sends it the state. If no majority is left, restore the latest snapshot "+
		"(cube operator snapshot restore) into a fresh cluster", cfg.ID, cfg.DataDir)
}

// ID returns this server's raft ID.
func (r *Raft) ID() string { return r.cfg.ID }

// Addr returns the raft address this server advertises (the bound port
// when BindAddr asked for port 0).
func (r *Raft) Addr() string { return r.addr }

// Apply replicates cmd through the raft log and returns the FSM's response
// once the command is committed and applied on this (leader) server.
//
// It returns ErrNotLeader on a follower (nothing was written), an error
// wrapping ErrEnqueueTimeout if raft did not accept the command within
// ApplyTimeout (nothing was written), and an error wrapping
// ErrUnknownOutcome if ctx ended, leadership was lost or raft shut down
// after the command was handed over: it may still commit.
func (r *Raft) Apply(ctx context.Context, cmd []byte) (any, error) {
	if err := r.checkOpen(); err != nil {
		return nil, err
	}
	f := r.raft.Apply(cmd, r.enqueueTimeout(ctx))
	if err := r.wait(ctx, f); err != nil {
		return nil, r.futureErr("apply", err)
	}
	return f.Response(), nil
}

// Barrier waits until every command committed before it has been applied
// to the FSM of this (leader) server. A new leader calls it before acting
// on its FSM. It returns ErrNotLeader on a follower or when leadership is
// lost meanwhile.
func (r *Raft) Barrier(ctx context.Context) error {
	if err := r.checkOpen(); err != nil {
		return err
	}
	return r.fence(ctx, "barrier")
}

// ConsistentRead is a linearizable read fence: once it returns nil, this
// server was the leader after the call began and its FSM reflects every
// write acknowledged before the call, so a read of the FSM that follows
// is linearizable. It returns ErrNotLeader on a follower or when
// leadership is lost meanwhile.
//
// It is a raft Barrier (about 0.7 ms: one replicated log entry). The
// cheaper VerifyLeader-then-wait-for-AppliedIndex recipe is not used:
// raft's AppliedIndex counts entries handed to the FSM goroutine, not
// applied by it, and a new leader's commit index may lag until it commits
// in its own term; the barrier covers both.
func (r *Raft) ConsistentRead(ctx context.Context) error {
	if err := r.checkLeader(); err != nil {
		return err
	}
	return r.fence(ctx, "consistent read")
}

// fence runs a raft Barrier. A fence has no outcome to be unsure of, so
// losing leadership is reported as ErrNotLeader: the caller retries on the
// new leader.
func (r *Raft) fence(ctx context.Context, op string) error {
	err := r.wait(ctx, r.raft.Barrier(r.enqueueTimeout(ctx)))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return ErrNotLeader
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%s: %w", op, ErrShutdown)
	default:
		return fmt.Errorf("%s: %w", op, err)
	}
}

// IsLeader reports whether this server is currently the raft leader.
func (r *Raft) IsLeader() bool { return r.raft.State() == raft.Leader }

// Leader returns the ID and raft address of the leader as this server
// knows it, or empty strings when none is known.
func (r *Raft) Leader() (id, addr string) {
	a, i := r.raft.LeaderWithID()
	return string(i), string(a)
}

// LeaderChanges delivers true when this server becomes the leader and
// false when it stops being the leader, in order, starting from NewRaft.
// It has exactly one consumer (the manager's leader loop): values are
// delivered once, so two readers would each miss some. The channel is
// never closed; the consumer selects on its own context. Raft never
// blocks on a slow consumer: pending values queue, and a lose-and-regain
// the consumer has not seen yet is collapsed (see forwardLeadership). On
// true, call Barrier before acting as leader.
func (r *Raft) LeaderChanges() <-chan bool { return r.leaderCh }

// Servers returns the latest raft configuration (possibly not yet
// committed), sorted by ID, with the leader flagged.
func (r *Raft) Servers(ctx context.Context) ([]Server, error) {
	conf, err := r.configuration(ctx)
	if err != nil {
		return nil, err
	}
	leaderID, _ := r.Leader()
	out := make([]Server, 0, len(conf.Servers))
	for _, s := range conf.Servers {
		out = append(out, Server{
			ID:     string(s.ID),
			Addr:   string(s.Address),
			Voter:  s.Suffrage == raft.Voter,
			Leader: leaderID != "" && string(s.ID) == leaderID,
		})
	}
	slices.SortFunc(out, func(a, b Server) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// AppliedIndex returns the index of the last entry handed to the FSM.
func (r *Raft) AppliedIndex() uint64 { return r.raft.AppliedIndex() }

// LastIndex returns the index of the last entry in the log or snapshot.
func (r *Raft) LastIndex() uint64 { return r.raft.LastIndex() }

// CommitIndex returns the latest index this server knows to be committed.
func (r *Raft) CommitIndex() uint64 { return r.raft.CommitIndex() }

// State returns this server's raft state in lower case: "follower",
// "candidate", "leader" or "shutdown".
func (r *Raft) State() string { return strings.ToLower(r.raft.State().String()) }

// Term returns the current raft term.
func (r *Raft) Term() uint64 { return r.raft.CurrentTerm() }

// LeaderContact is how long this server has been out of touch with a
// leader, and so may not learn of new commits: 0 while it leads, else the
// time since a leader last contacted it (since NewRaft if none has).
//
// A leader is in touch by definition: raft steps it down once it has not
// heard from a quorum for LeaderLeaseTimeout, and counts stepping down as
// a contact, so a leader cut off from the others counts from then. A
// follower or candidate counts from the last AppendEntries, heartbeat,
// snapshot or vote it granted; a leader heartbeats every
// HeartbeatTimeout/10, so a few HeartbeatTimeouts out of touch means the
// server is cut off, or the cluster has no leader.
func (r *Raft) LeaderContact() time.Duration {
	if r.IsLeader() {
		return 0
	}
	last := r.raft.LastContact()
	if last.Before(r.started) { // zero: never contacted since it started
		last = r.started
	}
	return time.Since(last)
}

// LeadershipTransfer asks raft to hand leadership to the most up-to-date
// follower and waits (at most about an election timeout) for the result.
// It is best effort, for the graceful shutdown of a leader: the caller
// shuts down whatever it returns. ErrNotLeader on a follower.
func (r *Raft) LeadershipTransfer() error {
	if err := r.checkLeader(); err != nil {
		return err
	}
	if err := r.raft.LeadershipTransfer().Error(); err != nil {
		return r.futureErr("leadership transfer", err)
	}
	return nil
}

// Shutdown stops raft, then closes the bolt store (raft does not) and the
// transport. It is idempotent; later calls return the first result. A
// leader should call LeadershipTransfer first.
func (r *Raft) Shutdown() error {
	r.shutdownOnce.Do(func() {
		var errs []error
		if err := r.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("shut down raft: %w", err))
		}
		close(r.stopCh)
		r.wg.Wait()
		r.waitWaiters()
		if err := r.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft store: %w", err))
		}
		if err := r.transport.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft transport: %w", err))
		}
		r.shutdownErr = errors.Join(errs...)
		r.log.Info("raft shut down", "id", r.cfg.ID)
	})
	return r.shutdownErr
}

// waitWaiters gives goroutines blocked on raft futures a moment to see the
// futures resolved by raft's shutdown. raft drops (never resolves) entries
// that were committed but still queued for the FSM when it stopped; their
// waiters are abandoned rather than hanging Shutdown.
func (r *Raft) waitWaiters() {
	r.waitMu.Lock()
	r.noWaiters = true
	r.waitMu.Unlock()
	done := make(chan struct{})
	go func() {
		r.waiters.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(waiterGrace):
		r.log.Warn("raft futures left unresolved by shutdown", "id", r.cfg.ID)
	}
}

// wait blocks until f resolves, ctx ends or the Raft shuts down. raft
// futures have no channel, so a goroutine blocks in f.Error(); raft
// resolves every future it accepted when it commits it, loses leadership
// or shuts down, which bounds that goroutine's life (see waitWaiters).
func (r *Raft) wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	r.waitMu.Lock()
	if r.noWaiters {
		r.waitMu.Unlock()
		return raft.ErrRaftShutdown
	}
	r.waiters.Add(1)
	r.waitMu.Unlock()
	go func() {
		defer r.waiters.Done()
		done <- f.Error()
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-r.stopCh:
		return raft.ErrRaftShutdown
	}
}

// futureErr maps an error from a raft future (or from wait) to this
// package's errors, prefixed with op.
func (r *Raft) futureErr(op string, err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return ErrNotLeader
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%s: %w", op, ErrEnqueueTimeout)
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%s: %w: leadership lost", op, ErrUnknownOutcome)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%s: %w: %w", op, ErrUnknownOutcome, ErrShutdown)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w: %w", op, ErrUnknownOutcome, err)
	default:
		return fmt.Errorf("%s: %w", op, err)
	}
}

// enqueueTimeout is ApplyTimeout, shortened to ctx's deadline.
func (r *Raft) enqueueTimeout(ctx context.Context) time.Duration {
	t := r.cfg.ApplyTimeout
	if d, ok := ctx.Deadline(); ok {
		if left := time.Until(d); left < t {
			t = max(left, time.Millisecond)
		}
	}
	return t
}

// checkOpen returns ErrShutdown once Shutdown has begun.
func (r *Raft) checkOpen() error {
	select {
	case <-r.stopCh:
		return ErrShutdown
	default:
	}
	if r.raft.State() == raft.Shutdown {
		return ErrShutdown
	}
	return nil
}

// checkLeader returns ErrShutdown or ErrNotLeader unless this server leads.
func (r *Raft) checkLeader() error {
	if err := r.checkOpen(); err != nil {
		return err
	}
	if !r.IsLeader() {
		return ErrNotLeader
	}
	return nil
}

// configuration returns the latest raft configuration.
func (r *Raft) configuration(ctx context.Context) (raft.Configuration, error) {
	f := r.raft.GetConfiguration()
	if err := r.wait(ctx, f); err != nil {
		return raft.Configuration{}, r.futureErr("get configuration", err)
	}
	return f.Configuration(), nil
}
