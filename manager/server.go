package manager

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/fsm"
	"github.com/cube-orch/cube/security"
	"github.com/cube-orch/cube/ui"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// ServerConfig configures a Server: one manager node.
type ServerConfig struct {
	// ID is the manager's raft server ID; keep it across restarts.
	ID string
	// HTTPAddr is where the manager API listens ("HOST:PORT"; a wildcard
	// host such as 0.0.0.0 binds every interface and then needs an
	// advertised address).
	HTTPAddr string
	// RaftAddr is where the raft transport listens; keep it across restarts.
	RaftAddr string
	// GossipAddr is where this manager's gossip endpoint listens.
	GossipAddr string
	// Advertise, if set, is the host (an IP or a name) of every address this
	// manager advertises, with the ports of the bind addresses above; the
	// three fields below override it one address at a time. Nomad's
	// advertise block works the same way.
	Advertise string
	// HTTPAdvertise is the API address other nodes and clients dial: it goes
	// into X-Cube-Leader, forwarded writes and gossip metadata. Default: the
	// Advertise host with HTTPAddr's port, else HTTPAddr.
	HTTPAdvertise string
	// RaftAdvertise is the raft address the other managers dial, and the one
	// Peers must list for this manager; keep it across restarts. Default: as
	// for HTTPAdvertise. A host name is resolved once, at start.
	RaftAdvertise string
	// GossipAdvertise is the gossip address the other nodes dial. Default: as
	// for HTTPAdvertise. A host name is resolved once, at start.
	GossipAdvertise string
	// DataDir holds the raft log, stable store and snapshots (in raft/).
	DataDir string
	// Peers are the initial voters, this manager included (at its
	// RaftAdvertise address), to bootstrap a new cluster with; host names
	// are resolved at start. Empty: wait to be added, asking the managers gossip
	// finds (see cluster.Joiner).
	Peers []cluster.Peer
	// Seeds are gossip addresses (IPs or host names) of other nodes to join.
	Seeds []string
	// SourceIP, if set, is the local address every outgoing connection
	// (raft, gossip, calls to workers, forwarded requests) leaves from.
	SourceIP string
	// TLS names the CA, this manager's certificate (role manager) and key.
	// Set, it turns on mutual TLS for the manager API, raft and calls to
	// workers; empty, everything runs in clear text and open (cube dev, unit
	// tests). cube manager refuses to start without it unless --insecure.
	TLS security.Files
	// GossipKeys are base64 gossip encryption keys, the first one used to
	// encrypt (the others only accepted: a rotation in progress). A keyring
	// persisted in DataDir by an earlier rotation takes precedence. Empty:
	// gossip in clear text.
	GossipKeys []string
	// BootstrapTokenHash, if set, is security.HashToken of the operator
	// token the cluster starts with: the first leader stores it when the
	// replicated state holds no token yet (later starts ignore it).
	BootstrapTokenHash string
	// Raft, Gossip, Manager and Join are the profiles of each part (their
	// Default or Fast constructors); the server fills in the identities,
	// addresses, data dir and logger from the fields above.
	Raft    cluster.RaftConfig
	Gossip  cluster.GossipConfig
	Manager Config
	Join    cluster.JoinConfig
	// Logger is the root logger.
	Logger hclog.Logger
}

// DefaultServerConfig returns production timings; set the identity,
// addresses and data dir.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{
		Raft:    cluster.DefaultRaftConfig(),
		Gossip:  cluster.DefaultGossipConfig(),
		Manager: DefaultConfig(),
		Join:    cluster.DefaultJoinConfig(),
	}
}

// FastServerConfig returns the tight timings of `make cluster`, `cube dev`
// and the tests: failover and crash detection in about a second.
func FastServerConfig() ServerConfig {
	c := DefaultServerConfig()
	c.Raft, c.Gossip, c.Manager = cluster.FastRaftConfig(), cluster.FastGossipConfig(), FastConfig()
	return c
}

// Validate checks the fields the server itself needs; each part validates
// its own profile when it starts.
func (c ServerConfig) Validate() error {
	if c.ID == "" || c.DataDir == "" || c.HTTPAddr == "" || c.RaftAddr == "" || c.GossipAddr == "" {
		return errors.New("a manager needs an ID, a data dir, and HTTP, raft and gossip addresses")
	}
	if err := c.TLS.Validate(); err != nil {
		return err
	}
	if c.BootstrapTokenHash != "" && !isTokenHash(c.BootstrapTokenHash) {
		return errors.New("BootstrapTokenHash must be the 64 lowercase hex digits of security.HashToken(secret), not the secret itself")
	}
	for _, a := range c.addrs() {
		if _, err := a.Advertised(c.Advertise); err != nil {
			return err
		}
	}
	return nil
}

// addrs are the manager's three addresses, each with its bind and advertise
// forms and the flags that set them (for error messages).
func (c ServerConfig) addrs() []cluster.Endpoint {
	return []cluster.Endpoint{
		{Bind: c.HTTPAddr, BindFlag: "--http", Advertise: c.HTTPAdvertise, AdvertiseFlag: "--advertise-http"},
		{Bind: c.RaftAddr, BindFlag: "--raft", Advertise: c.RaftAdvertise, AdvertiseFlag: "--advertise-raft"},
		{Bind: c.GossipAddr, BindFlag: "--gossip", Advertise: c.GossipAdvertise, AdvertiseFlag: "--advertise-gossip"},
	}
}

// resolvedAddrs are a manager's addresses as NewServer uses them: advertised
// ones chosen, and those raft and memberlist take resolved to IPs.
type resolvedAddrs struct {
	httpAdv           string // as given (clients resolve it); port 0 until the listener opens
	raftBind, raftAdv string
	gossip            cluster.GossipConfig // cfg.Gossip with its addresses and seeds set
	peers             []cluster.Peer
}

// resolve chooses the advertised addresses and resolves the host names raft
// and memberlist need as IPs (the raft and gossip addresses and the peers),
// before anything starts, so a typo fails at once.
func (c ServerConfig) resolve(ctx context.Context) (resolvedAddrs, error) {
	var r resolvedAddrs
	ep := c.addrs()
	adv := make([]string, len(ep))
	for i, a := range ep {
		var err error
		if adv[i], err = a.Advertised(c.Advertise); err != nil {
			return r, err
		}
	}
	r.httpAdv = adv[0]
	var err error
	for _, x := range []struct {
		dst  *string
		addr string
		flag string
	}{
		{&r.raftBind, c.RaftAddr, "--raft"},
		{&r.raftAdv, adv[1], ep[1].AdvertiseFlag},
	} {
		if *x.dst, err = cluster.ResolveAddr(ctx, x.addr); err != nil {
			return r, fmt.Errorf("%s: %w", x.flag, err)
		}
	}
	r.gossip = c.Gossip
	if err := r.gossip.SetAddrs(ctx, c.GossipAddr, adv[2], ep[2].AdvertiseFlag, c.Seeds); err != nil {
		return r, err
	}
	for _, p := range c.Peers {
		addr, err := cluster.ResolveAddr(ctx, p.Addr)
		if err != nil {
			return r, fmt.Errorf("peer %s: %w", p.ID, err)
		}
		r.peers = append(r.peers, cluster.Peer{ID: p.ID, Addr: addr})
	}
	return r, nil
}

// Server is a running manager node: the replicated state (raft and the
// FSM), the gossip pool, the Manager (the API's service and, on the leader,
// the control loop), the HTTP API, and while it is not yet a member the
// joiner. NewServer starts everything; Close stops it in order.
type Server struct {
	cfg  ServerConfig
	fsm  *fsm.FSM
	raft *cluster.Raft
	pool *cluster.Pool
	mgr  *Manager
	tls  *security.Bundle // nil when TLS is off
	srv  *http.Server
	addr string // where the API listens
	api  string // the API address advertised (X-Cube-Leader, gossip)
	errc chan error
	log  hclog.Logger
	// managerTLS is the TLS config of calls to the other managers (nil
	// with TLS off): forwarding to the leader, the joiner's requests.
	managerTLS *tls.Config

	stopJoin  context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// NewServer starts a manager node. The HTTP listener is opened first, so a
// port in use fails before any raft state is touched. On error nothing is
// left running.
func NewServer(cfg ServerConfig) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	addrs, err := cfg.resolve(context.Background())
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, fsm: fsm.NewWith(fsm.Options{Logger: cfg.Logger.Named("fsm")}), errc: make(chan error, 1), log: cfg.Logger}
	// The TLS material is read once, before any port is opened, so that
	// wrong files fail the start at once, naming them; raft, the API and
	// the calls to other nodes all use it.
	if cfg.TLS.Enabled() {
		if s.tls, err = loadManagerTLS(cfg.TLS); err != nil {
			return nil, err
		}
		s.managerTLS = s.tls.ClientConfig(security.RoleManager)
	}
	gossipKeys, err := cluster.DecodeGossipKeys(cfg.GossipKeys)
	if err != nil {
		return nil, err
	}
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	bundle := s.tls
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
	}
	undo = append(undo, func() { _ = ln.Close() })
	s.addr = ln.Addr().String()
	if bundle != nil {
		// A certificate is verified if given, not required: people and
		// scripts may present a token instead (see Authenticator).
		ln = tls.NewListener(ln, bundle.ServerConfig(false))
	}
	s.api = cluster.WithPort(addrs.httpAdv, ln.Addr())

	rcfg := cfg.Raft
	rcfg.ID, rcfg.BindAddr, rcfg.DataDir, rcfg.Peers = cfg.ID, addrs.raftBind, filepath.Join(cfg.DataDir, "raft"), addrs.peers
	if addrs.raftAdv != addrs.raftBind {
		rcfg.AdvertiseAddr = addrs.raftAdv
	}
	rcfg.Logger, rcfg.SourceIP, rcfg.TLS = cfg.Logger, cfg.SourceIP, s.tls
	rcfg.RecoveryFSM = func() raft.FSM { return fsm.New() } // peers.json recovery only
	if err := os.MkdirAll(rcfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	// s.fsm is a cluster.StateSizer: the snapshot threshold follows the
	// state's size (cluster/snapshotsize.go).
	var _ cluster.StateSizer = s.fsm
	if s.raft, err = cluster.NewRaft(rcfg, s.fsm); err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = s.raft.Shutdown() })

	g := addrs.gossip
	g.Name, g.Logger, g.SourceIP = "manager-"+cfg.ID, cfg.Logger, cfg.SourceIP
	g.Keys, g.KeyringFile = gossipKeys, filepath.Join(cfg.DataDir, cluster.KeyringFileName)
	g.Meta = cluster.Meta{Role: cluster.RoleManager, API: s.api, RaftID: cfg.ID, RaftAddr: s.raft.Addr(), MaxCommand: uint8(s.fsm.MaxCommand()), Version: cfg.Manager.Version}
	if s.pool, err = cluster.NewPool(g); err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = s.pool.Shutdown() })

	mcfg := cfg.Manager
	mcfg.ID, mcfg.API, mcfg.Logger, mcfg.SourceIP, mcfg.GossipChanges = cfg.ID, s.api, cfg.Logger, cfg.SourceIP, s.pool.Changes()
	mcfg.BootstrapTokenHash = cfg.BootstrapTokenHash
	hopts := api.ManagerHandlerOptions{SourceIP: cfg.SourceIP}
	if bundle != nil {
		mcfg.WorkerTLS = bundle.ClientConfig(security.RoleWorker)
		hopts.ForwardTLS, hopts.Authenticator = s.managerTLS, NewAuthenticator(s.fsm)
		// The leader asks joined managers for their progress (promotion)
		// with this manager's certificate, over https.
		mcfg.ManagerClient = api.ClientOptions{TLS: s.managerTLS, HTTP: api.NewHTTPClientTLS(cfg.SourceIP, s.managerTLS)}
	}
	if s.mgr, err = New(mcfg, s.raft, s.fsm, s.pool); err != nil {
		return nil, err
	}
	joinCtx, stopJoin := context.WithCancel(context.Background())
	s.stopJoin = stopJoin
	if len(cfg.Peers) == 0 {
		if err := s.startJoiner(joinCtx); err != nil {
			stopJoin()
			return nil, err
		}
	}
	if hopts.Metrics, err = cluster.MetricsHandler(s.mgr.Metrics(), cfg.Logger); err != nil {
		return nil, err
	}
	hopts.Ready = s.mgr.Ready
	// Every manager serves the web page, so that it can be opened on any
	// of them and keeps working through a leader change.
	hopts.UI = ui.Handler()
	s.mgr.Start()
	svc := apiService{Manager: s.mgr, keyring: newKeyring(s.pool, s.tls, cfg.SourceIP, cfg.Logger),
		snapshots: &snapshots{raft: s.raft, mgr: s.mgr, log: cfg.Logger.Named("snapshot")}}
	s.srv = api.NewHTTPServer(api.NewManagerHandler(svc, hopts))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.errc <- err
		}
	}()
	s.log.Info("manager started", "id", cfg.ID, "http", s.addr, "raft", cfg.RaftAddr, "gossip", cfg.GossipAddr,
		"advertise_http", s.api, "advertise_raft", s.raft.Addr(), "advertise_gossip", s.pool.LocalAddr(), "data", cfg.DataDir,
		"tls", bundle != nil)
	return s, nil
}

// startJoiner runs the joiner of a manager started without peers: it asks
// the managers gossip knows, through their HTTP API, to add this one.
func (s *Server) startJoiner(ctx context.Context) error {
	hc := api.NewHTTPClientTLS(s.cfg.SourceIP, s.managerTLS)
	ask := func(ctx context.Context, addrs []string, id, raftAddr string) error {
		if s.managerTLS != nil {
			addrs = httpsAddrs(addrs)
		}
		c, err := api.NewClient(addrs, api.ClientOptions{Timeout: 5 * time.Second, RetryFor: 5 * time.Second, HTTP: hc})
		if err != nil {
			return err
		}
		return c.AddManager(ctx, id, raftAddr)
	}
	jcfg := s.cfg.Join
	jcfg.ID, jcfg.RaftAddr, jcfg.Logger = s.cfg.ID, s.raft.Addr(), s.cfg.Logger
	j, err := cluster.NewJoiner(jcfg, s.raft, s.pool, ask)
	if err != nil {
		return err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = j.Run(ctx) // ends joined, or cancelled by Close
	}()
	return nil
}

// loadManagerTLS loads a manager's TLS material and checks that its
// certificate is a manager's: with another, every peer would refuse it.
func loadManagerTLS(f security.Files) (*security.Bundle, error) {
	b, err := security.Load(f)
	if err != nil {
		return nil, err
	}
	if b.Self.Role != security.RoleManager {
		return nil, fmt.Errorf("%s is a %s certificate (%s); a manager needs a manager certificate (cube tls cert create --manager)", f.Cert, b.Self.Role, b.Self.Name)
	}
	return b, nil
}

// httpsAddrs gives the addresses without a scheme the https one.
func httpsAddrs(addrs []string) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		if !strings.Contains(a, "://") {
			a = "https://" + a
		}
		out[i] = a
	}
	return out
}

// Addr is the address the manager API listens on.
func (s *Server) Addr() string { return s.addr }

// AdvertiseAddr is the manager API address the other nodes and clients are
// given (X-Cube-Leader, gossip metadata).
func (s *Server) AdvertiseAddr() string { return s.api }

// Raft, FSM, Pool and Manager are the server's parts, for tests and tools.
func (s *Server) Raft() *cluster.Raft { return s.raft }

// FSM is the server's replicated state machine.
func (s *Server) FSM() *fsm.FSM { return s.fsm }

// Pool is the server's gossip pool.
func (s *Server) Pool() *cluster.Pool { return s.pool }

// Manager is the server's manager service.
func (s *Server) Manager() *Manager { return s.mgr }

// Err receives the error of the API server if it stops on its own.
func (s *Server) Err() <-chan error { return s.errc }

// Close shuts the manager down: HTTP first so clients learn at once (as
// rqlite does), then the joiner and the control loop, then (a leader) hands
// leadership over so the others need not wait for an election timeout, then
// gossip with a graceful leave, then raft. Safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			s.log.Warn("http shutdown", "error", err)
		}
		s.stopJoin()
		s.wg.Wait()
		s.mgr.Shutdown()
		if s.raft.IsLeader() {
			// Best effort and bounded: with no follower reachable (the last
			// manager of a cluster going down) there is no one to hand over to.
			ok, err := within(2*time.Second, s.raft.LeadershipTransfer)
			switch {
			case !ok:
				s.log.Warn("leadership transfer did not finish in 2s; shutting down anyway")
			case err != nil:
				s.log.Warn("leadership transfer", "error", err)
			}
		}
		if err := s.pool.Leave(2 * time.Second); err != nil {
			s.log.Warn("gossip leave", "error", err)
		}
		if err := s.pool.Shutdown(); err != nil {
			s.log.Warn("gossip shutdown", "error", err)
		}
		s.shutdownRaft()
	})
	return nil
}

// Halt stops the manager as abruptly as a process can while still freeing
// its ports and files: no leadership transfer, no gossip leave, connections
// dropped. The in-process test cluster uses it to stand in for a crash. Safe
// to call more than once (and after Close, which it then does not repeat).
func (s *Server) Halt() error {
	var err error
	s.closeOnce.Do(func() {
		_ = s.srv.Close()
		s.stopJoin()
		s.wg.Wait()
		s.mgr.Shutdown()
		_ = s.pool.Shutdown()
		err = s.raft.Shutdown()
	})
	return err
}

// shutdownRaft shuts raft down, bounded: raft's shutdown waits for its
// goroutines, and on an overloaded machine one was seen to take more than
// 20 s (a CI run; the cause is not known yet, hence the goroutine dump).
// The process exits anyway: the bolt files are crash-safe, as every SIGKILL
// shows.
func (s *Server) shutdownRaft() {
	ok, err := within(raftShutdownBound, s.raft.Shutdown)
	switch {
	case !ok:
		var dump strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&dump, 1)
		s.log.Warn("raft shutdown did not finish; exiting anyway", "after", raftShutdownBound, "goroutines", dump.String())
	case err != nil:
		s.log.Warn("raft shutdown", "error", err)
	}
}

// raftShutdownBound is how long Close waits for raft to shut down.
const raftShutdownBound = 10 * time.Second

// within runs fn and waits at most d for it: ok is false if fn had not
// returned by then (it runs on; its result is dropped).
func within(d time.Duration, fn func() error) (ok bool, err error) {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return true, err
	case <-time.After(d):
		return false, nil
	}
}
