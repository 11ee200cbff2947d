package worker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/cube-orch/cube/security"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/hashicorp/go-hclog"
)

// AgentConfig configures an Agent: a Worker, the HTTP API it serves and, in a
// cluster, its gossip membership and its reports to the managers.
type AgentConfig struct {
	// Worker configures the worker itself (name, data dir, timings). Its
	// Logger and OnChange are set by the agent.
	Worker Config
	// HTTPAddr is where the worker API listens ("HOST:PORT"; port 0 picks
	// one; a wildcard host such as 0.0.0.0 binds every interface and then,
	// in a cluster, needs an advertised address).
	HTTPAddr string
	// GossipAddr is where this worker's gossip endpoint listens. Empty runs
	// the worker alone, without a cluster: it takes tasks from its API only.
	GossipAddr string
	// Advertise, if set, is the host (an IP or a name) of every address this
	// worker advertises, with the ports of the bind addresses; HTTPAdvertise
	// and GossipAdvertise override it one address at a time.
	Advertise string
	// HTTPAdvertise is the worker API address the managers dial (gossip
	// Meta.API). Default: the Advertise host with HTTPAddr's port, else
	// HTTPAddr.
	HTTPAdvertise string
	// GossipAdvertise is the gossip address the other nodes dial. Default:
	// as for HTTPAdvertise. A host name is resolved once, at start.
	GossipAdvertise string
	// Gossip is the gossip profile (cluster.DefaultGossipConfig or
	// FastGossipConfig). The agent fills in its name, addresses, seeds and
	// metadata from the fields here.
	Gossip cluster.GossipConfig
	// Seeds are gossip addresses (IPs or host names) of cluster nodes to
	// join; each must resolve at start.
	Seeds []string
	// Managers are manager HTTP addresses for reports. Empty: the managers
	// gossip sees alive.
	Managers []string
	// SourceIP, if set, is the local address outgoing connections (gossip,
	// reports) leave from.
	SourceIP string
	// TLS names the CA, this worker's certificate (role worker, named as
	// the worker) and key. Set, the worker API takes calls from managers
	// only and reports go to the managers over mutual TLS; empty, the API
	// is open and in clear text.
	TLS security.Files
	// GossipKeys are base64 gossip encryption keys, the first one used to
	// encrypt; a keyring persisted in the data dir by an earlier rotation
	// takes precedence. Empty: gossip in clear text.
	GossipKeys []string
	// Cpu, Memory and Disk are the capacity advertised to the scheduler;
	// zero means the machine's (all cores, total memory, the data dir's file
	// system).
	Cpu    float64
	Memory int64
	Disk   int64
	// Labels describe the worker ("zone": "a", "disk": "ssd"); they are
	// gossiped with its capacity, and the leader places a task only on a
	// worker whose labels meet the task's Constraints (api.Task). Bounded
	// by api.ValidateLabels, as the gossip metadata holds 512 bytes.
	Labels map[string]string
	// RuntimeCheckInterval is how often the agent pings the container engine
	// and advertises through gossip whether it answers.
	RuntimeCheckInterval time.Duration
	// ReportTimeout bounds one report to the managers (one HTTP request).
	ReportTimeout time.Duration
	// Runtime runs the containers. Nil means the local Docker Engine,
	// configured by Docker (its Logger and PullTimeout are set by the agent).
	Runtime Runtime
	Docker  DockerConfig
	// Logger is the root logger.
	Logger hclog.Logger
}

// DefaultAgentConfig returns production defaults (memberlist's LAN timings):
// set Worker.DataDir, and GossipAddr and Seeds to join a cluster.
func DefaultAgentConfig() AgentConfig {
	return AgentConfig{
		Worker:               DefaultConfig(),
		HTTPAddr:             "127.0.0.1:5555",
		Gossip:               cluster.DefaultGossipConfig(),
		RuntimeCheckInterval: 2 * time.Second,
		ReportTimeout:        5 * time.Second,
		Docker:               DefaultDockerConfig(),
	}
}

// FastAgentConfig is DefaultAgentConfig with the tight gossip timings of
// `make cluster` and the tests (a dead worker is noticed in about a second).
func FastAgentConfig() AgentConfig {
	c := DefaultAgentConfig()
	c.Gossip = cluster.FastGossipConfig()
	return c
}

// Validate checks the configuration, naming the field and its bound.
func (c AgentConfig) Validate() error {
	switch {
	case c.HTTPAddr == "":
		return errors.New("HTTPAddr is required")
	case c.Cpu < 0 || c.Memory < 0 || c.Disk < 0:
		return fmt.Errorf("Cpu (%g), Memory (%d) and Disk (%d) must not be negative (0 means the machine's)", c.Cpu, c.Memory, c.Disk)
	case c.RuntimeCheckInterval <= 0:
		return fmt.Errorf("RuntimeCheckInterval (%s) must be positive", c.RuntimeCheckInterval)
	case c.ReportTimeout <= 0:
		return fmt.Errorf("ReportTimeout (%s) must be positive", c.ReportTimeout)
	}
	if err := api.ValidateLabels(c.Labels); err != nil {
		return fmt.Errorf("Labels: %w", err)
	}
	// Alone, the worker advertises nothing: any bind will do.
	if c.GossipAddr != "" {
		for _, e := range c.endpoints() {
			if _, err := e.Advertised(c.Advertise); err != nil {
				return err
			}
		}
	}
	return c.Worker.Validate()
}

// endpoints are the worker's two addresses in a cluster.
func (c AgentConfig) endpoints() []cluster.Endpoint {
	return []cluster.Endpoint{
		{Bind: c.HTTPAddr, BindFlag: "--http", Advertise: c.HTTPAdvertise, AdvertiseFlag: "--advertise-http"},
		{Bind: c.GossipAddr, BindFlag: "--gossip", Advertise: c.GossipAdvertise, AdvertiseFlag: "--advertise-gossip"},
	}
}

// Agent is a running worker node: the Worker and its HTTP API, and in a
// cluster its gossip membership (through which the managers see it, its
// address and capacity, and whether its engine answers), its reporter and
// the monitor of its container engine. NewAgent starts everything; Close
// stops it in order.
type Agent struct {
	cfg      AgentConfig
	rt       Runtime
	ownsRT   bool // the agent created rt (Docker) and closes it
	w        *Worker
	pool     *cluster.Pool    // nil when alone
	reporter *Reporter        // nil when alone
	routes   *reportRoutes    // nil when alone
	tls      *security.Bundle // nil when security is off
	srv      *http.Server
	addr     string
	errc     chan error
	log      hclog.Logger

	meta    cluster.Meta // owned by the monitor goroutine after start
	metrics *agentMetrics
	timed   *timedRuntime // rt, timed: what the worker and the monitor call
	// runtimeErr says why the worker cannot run containers (its engine
	// does not answer, or its store refuses writes) at the last check; nil
	// when it can. For readiness and cube_worker_runtime_up.
	runtimeErr atomic.Pointer[error]
	stop       chan struct{}
	wg         sync.WaitGroup
	closeOnce  sync.Once
}

// NewAgent starts a worker node: the worker (adopting the containers it
// already runs), its API, and in a cluster its gossip membership, reporter
// and engine monitor. On error nothing is left running.
func NewAgent(cfg AgentConfig) (_ *Agent, err error) {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("worker agent config: %w", err)
	}
	a := &Agent{cfg: cfg, rt: cfg.Runtime, errc: make(chan error, 1), log: cfg.Logger, stop: make(chan struct{})}
	if cfg.TLS.Enabled() {
		if a.tls, err = security.Load(cfg.TLS); err != nil {
			return nil, err
		}
		if a.tls.Self.Role != security.RoleWorker {
			return nil, fmt.Errorf("%s is a %s certificate; a worker needs one made with cube tls cert create --worker", cfg.TLS.Cert, a.tls.Self.Role)
		}
	}
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	if a.rt == nil {
		dcfg := cfg.Docker
		dcfg.Logger, dcfg.PullTimeout = cfg.Logger, cfg.Worker.StartTimeout
		docker, err := NewDocker(dcfg)
		if err != nil {
			return nil, err
		}
		a.rt, a.ownsRT = docker, true
		undo = append(undo, func() { _ = docker.Close() })
	}
	// The worker's records are read at each scrape, once a.w exists.
	a.metrics = newAgentMetrics(func() []api.Task {
		if a.w == nil {
			return nil
		}
		return a.w.Tasks()
	}, func() bool { return a.runtimeErr.Load() == nil })
	a.timed = &timedRuntime{rt: a.rt, calls: a.metrics.calls}
	pctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := a.timed.Ping(pctx); err != nil {
		a.log.Warn("container engine does not answer; tasks will fail until it does", "error", err)
		why := fmt.Errorf("the container engine does not answer: %w", err)
		a.runtimeErr.Store(&why)
	}
	cancel()

	wcfg := cfg.Worker
	wcfg.Logger = cfg.Logger
	if cfg.GossipAddr != "" {
		a.reporter = NewReporter(a.sendReport, cfg.Logger)
		a.reporter.SendBatchesWith(a.sendReports)
		wcfg.OnChange = a.reporter.Enqueue
	}
	if a.w, err = New(wcfg, a.timed); err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = a.w.Shutdown() })
	if a.tls != nil && a.tls.Self.Name != a.w.Name() {
		// The managers accept this worker's reports only about tasks of the
		// worker its certificate names.
		return nil, fmt.Errorf("%s names worker %q, but this worker is %q; make its certificate with cube tls cert create --worker --name %s", cfg.TLS.Cert, a.tls.Self.Name, a.w.Name(), a.w.Name())
	}
	hopts := api.WorkerHandlerOptions{Logger: cfg.Logger.Named("api"), Ready: a.Ready}
	if hopts.Metrics, err = cluster.MetricsHandler(a.metrics.reg, cfg.Logger); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
	}
	undo = append(undo, func() { _ = ln.Close() })
	a.addr = ln.Addr().String()
	if cfg.GossipAddr != "" {
		if err := a.joinPool(ln.Addr()); err != nil {
			return nil, err
		}
	}
	a.w.Start()
	a.wg.Add(1)
	go func() { defer a.wg.Done(); a.monitorRuntime() }()
	if a.tls != nil {
		// Only managers may call a worker: the handshake asks every caller
		// for a certificate of the cluster's CA, and the handler lets only
		// a manager's through (a worker's or client's gets 403), but for
		// the probes and, to a client certificate, /metrics.
		//
		// HTTP/2 is offered (ALPN), so that a leader's calls to this
		// worker share one connection: over HTTP/1.1 each call in flight
		// took a connection of its own, and a new leader's first pass
		// (a dispatch, probe or question per task, tens per worker at
		// once) paid a TLS handshake per call, enough CPU at 200 workers
		// on two cores to starve raft and lose the leadership again
		// (bench/scale/SCALE.md). Callers that speak only HTTP/1.1 still
		// get it.
		scfg := a.tls.ServerConfig(true)
		scfg.NextProtos = []string{"h2", "http/1.1"}
		ln = tls.NewListener(ln, scfg)
		hopts.Authenticator = certAuthenticator{}
	}
	a.srv = api.NewHTTPServer(api.NewWorkerHandlerWith(a.apiService(), hopts))
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := a.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			a.errc <- err
		}
	}()
	a.log.Info("worker started", "name", a.w.Name(), "http", a.addr, "gossip", cfg.GossipAddr, "data", wcfg.DataDir)
	if allows := wcfg.AllowTokens(); len(allows) > 0 {
		// Each of these lets a task reach past its container: say so once.
		a.log.Warn("tasks on this worker may ask for more than an ordinary container", "allows", allows)
	}
	return a, nil
}

// joinPool joins the gossip pool with the worker's address and capacity,
// then starts the reporter and the engine monitor.
func (a *Agent) joinPool(httpBound net.Addr) error {
	ep := a.cfg.endpoints()
	httpAdv, err := ep[0].Advertised(a.cfg.Advertise)
	if err != nil {
		return err
	}
	gossipAdv, err := ep[1].Advertised(a.cfg.Advertise)
	if err != nil {
		return err
	}
	cpu, mem, disk := Capacity(a.cfg.Worker.DataDir)
	if a.cfg.Cpu > 0 {
		cpu = a.cfg.Cpu
	}
	if a.cfg.Memory > 0 {
		mem = a.cfg.Memory
	}
	if a.cfg.Disk > 0 {
		disk = a.cfg.Disk
	}
	g := a.cfg.Gossip
	if err := g.SetAddrs(context.Background(), a.cfg.GossipAddr, gossipAdv, ep[1].AdvertiseFlag, a.cfg.Seeds); err != nil {
		return err
	}
	g.Name, g.Logger, g.SourceIP = a.w.Name(), a.cfg.Logger, a.cfg.SourceIP
	if g.Keys, err = cluster.DecodeGossipKeys(a.cfg.GossipKeys); err != nil {
		return err
	}
	g.KeyringFile = filepath.Join(a.cfg.Worker.DataDir, cluster.KeyringFileName)
	// A worker looks only at the managers (Ready, reports' routes): it
	// polls no other worker's state (cluster.GossipConfig.PollRoles).
	g.PollRoles = []cluster.Role{cluster.RoleManager}
	g.Meta = cluster.Meta{Role: cluster.RoleWorker, API: cluster.WithPort(httpAdv, httpBound), Cpu: cpu, Memory: mem, Disk: disk,
		Allows: a.cfg.Worker.AllowTokens(), Labels: a.cfg.Labels}
	if a.pool, err = cluster.NewPool(g); err != nil {
		if errors.Is(err, cluster.ErrMetaTooLarge) {
			return fmt.Errorf("%w (the worker's address, capacity, %d allowance(s) and %d label(s) do not fit: use fewer --allow-mount/--allow-cap or --label)", err, len(g.Meta.Allows), len(g.Meta.Labels))
		}
		return err
	}
	a.meta = g.Meta
	a.routes = newReportRoutes(a.cfg.Managers, a.pool, a.cfg.SourceIP, a.cfg.ReportTimeout, a.tls)
	a.reporter.Start()
	return nil
}

// Name is the worker's name. Addr is the address its API listens on.
func (a *Agent) Name() string { return a.w.Name() }

// Addr is the address the worker API listens on.
func (a *Agent) Addr() string { return a.addr }

// Worker is the running worker.
func (a *Agent) Worker() *Worker { return a.w }

// Err receives the error of the API server if it stops on its own.
func (a *Agent) Err() <-chan error { return a.errc }

// Close stops the node: the API first (clients learn at once), then the
// engine monitor, then gossip with a graceful leave (the managers see the
// worker left, not failed), then reports and the worker, then the engine
// client. Containers keep running: a restarted worker re-adopts them. Safe
// to call more than once.
func (a *Agent) Close() error {
	a.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.srv.Shutdown(ctx); err != nil {
			a.log.Warn("http shutdown", "error", err)
		}
		close(a.stop)
		if a.pool != nil {
			if err := a.pool.Leave(2 * time.Second); err != nil {
				a.log.Warn("gossip leave", "error", err)
			}
			if err := a.pool.Shutdown(); err != nil {
				a.log.Warn("gossip shutdown", "error", err)
			}
		}
		a.wg.Wait()
		if a.reporter != nil {
			a.reporter.Shutdown()
		}
		if err := a.w.Shutdown(); err != nil {
			a.log.Warn("worker shutdown", "error", err)
		}
		if a.ownsRT {
			if c, ok := a.rt.(interface{ Close() error }); ok {
				_ = c.Close()
			}
		}
	})
	return nil
}

// runtimeDownAfter is how many engine checks in a row must fail before the
// worker tells the managers it cannot run containers (monitorRuntime).
const runtimeDownAfter = 2

// monitorRuntime pings the container engine every RuntimeCheckInterval,
// keeps the result for readiness, and in a cluster advertises a change
// (Meta.RuntimeDown) through gossip, so the leader places nothing new on a
// worker that cannot run containers, and knows its tasks are at risk. A
// worker whose store refuses writes (Worker.CheckStore) is advertised the
// same way: it could start containers but not record them, and an
// unrecorded container is one nobody accounts for.
func (a *Agent) monitorRuntime() {
	t := time.NewTicker(a.cfg.RuntimeCheckInterval)
	defer t.Stop()
	failed := 0 // checks failed in a row
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), a.cfg.RuntimeCheckInterval)
		err := a.timed.Ping(ctx)
		cancel()
		engineDown := err != nil
		if err == nil {
			err = a.w.CheckStore()
		}
		switch {
		case engineDown:
			why := fmt.Errorf("the container engine does not answer: %w", err)
			a.runtimeErr.Store(&why)
		case err != nil:
			why := fmt.Errorf("task records cannot be written: %w", err)
			a.runtimeErr.Store(&why)
		default:
			a.runtimeErr.Store(nil)
		}
		if err != nil {
			failed++
		} else {
			failed = 0
		}
		// Down is advertised after runtimeDownAfter checks in a row, up at
		// the first good one: the managers move every task of a worker
		// without its runtime, and one check that missed its deadline on
		// a starved machine is not an engine gone (bench/scale/SCALE.md:
		// at 5 managers and 100 simulated workers on 2 cores, single
		// missed pings moved hundreds of running tasks).
		down := failed >= runtimeDownAfter
		if down == a.meta.RuntimeDown {
			continue
		}
		a.meta.RuntimeDown = down
		switch {
		case engineDown:
			a.log.Error("container engine does not answer; telling the managers", "error", err)
		case down:
			a.log.Error("task records cannot be written; telling the managers this worker cannot run containers", "error", err)
		default:
			a.log.Info("worker can run containers again; telling the managers")
		}
		if a.pool == nil {
			continue
		}
		if err := a.pool.UpdateMeta(a.meta); err != nil {
			a.log.Warn("update gossip metadata", "error", err)
		}
	}
}

// sendReport delivers one task record to the managers.
func (a *Agent) sendReport(ctx context.Context, t api.Task) error {
	c, err := a.routes.client()
	if err == nil {
		err = c.ReportTask(ctx, t)
	}
	a.metrics.report(err)
	return err
}

// sendReports delivers a batch of records to the managers (POST
// /reports/batch).
func (a *Agent) sendReports(ctx context.Context, ts []api.Task) error {
	c, err := a.routes.client()
	if err == nil {
		err = c.ReportTasks(ctx, ts)
	}
	a.metrics.report(err)
	return err
}

// Ready reports whether the worker can run tasks (GET /health/ready): its
// container engine answered the last ping, its task records could be
// written at the last check and, in a cluster, gossip sees a manager alive (the managers see this worker, and its reports have
// somewhere to go).
func (a *Agent) Ready(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if p := a.runtimeErr.Load(); p != nil {
		return *p
	}
	if a.pool == nil {
		return nil
	}
	for _, m := range a.pool.Members() {
		if m.Meta.Role == cluster.RoleManager && m.State == cluster.StateAlive {
			return nil
		}
	}
	return errors.New("no manager alive in the gossip pool: not registered with the cluster")
}

// reportRoutes picks the managers reports go to: the fixed list, else the
// managers gossip sees alive. Every client it hands out shares one HTTP
// client, so connections are pooled across reports, and a new api.Client is
// built only when the set of managers changes (it remembers the leader).
type reportRoutes struct {
	fixed   *api.Client
	members cluster.MemberSource
	hc      *http.Client
	opts    api.ClientOptions

	mu    sync.Mutex
	addrs []string
	cur   *api.Client
}

func newReportRoutes(managers []string, members cluster.MemberSource, sourceIP string, timeout time.Duration, b *security.Bundle) *reportRoutes {
	r := &reportRoutes{members: members, hc: api.NewHTTPClient(sourceIP)}
	r.opts = api.ClientOptions{Timeout: timeout, RetryFor: 3 * time.Second, HTTP: r.hc}
	if b != nil {
		// Reports go to the managers over mutual TLS: the worker's
		// certificate is how a manager knows which worker reports.
		r.opts.TLS = b.ClientConfig(security.RoleManager)
		r.hc = &http.Client{Transport: api.NewTLSTransport(sourceIP, r.opts.TLS)}
		r.opts.HTTP = r.hc
	}
	if len(managers) > 0 {
		r.fixed, _ = api.NewClient(managers, r.opts) // nil on bad addresses: fall back to gossip
	}
	return r
}

// client returns the client of the current managers.
func (r *reportRoutes) client() (*api.Client, error) {
	if r.fixed != nil {
		return r.fixed, nil
	}
	var addrs []string
	for _, m := range r.members.Members() {
		if m.Meta.Role == cluster.RoleManager && m.State == cluster.StateAlive && m.Meta.API != "" {
			addrs = append(addrs, m.Meta.API)
		}
	}
	slices.Sort(addrs)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur != nil && slices.Equal(addrs, r.addrs) {
		return r.cur, nil
	}
	c, err := api.NewClient(addrs, r.opts)
	if err != nil {
		return nil, fmt.Errorf("no manager known yet: %w", err)
	}
	r.cur, r.addrs = c, addrs
	return c, nil
}
