package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/security"
	"github.com/cube-orch/cube/worker"
	"github.com/cube-orch/cube/worker/simrt"
	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
)

// simFlags are what the flags of cube sim-workers fill: the worker flags
// they share with cube worker, and how many workers to run where.
type simFlags struct {
	w          *workerFlags
	count      int
	first      int
	ipBase     string
	prefix     string
	httpPort   int
	gossipPort int
	dataDir    string
	certDir    string
	caKey      string
	parallel   int
	compress   bool
	gcPercent  int
	gossipOnly bool
	rt         simrt.Config
}

// fdsPerSimWorker is the open files budgeted per simulated worker: its API
// listener, its gossip UDP socket and TCP listener, its worker.db, the
// connection its reports keep to the leader and the one the leader's calls
// keep to it, and a gossip stream now and then. make scale measured 5 to 6
// against 3 managers (bench/scale/SCALE.md); twice that leaves room for
// connections opened during a burst.
const fdsPerSimWorker = 12

func newSimWorkersCmd() *cobra.Command {
	s := &simFlags{w: &workerFlags{o: worker.DefaultAgentConfig()}}
	cmd := &cobra.Command{
		Use:    "sim-workers",
		Hidden: true,
		Short:  "Run many simulated workers in one process, for the control-plane benchmark",
		Long: `Run --count real worker agents in this process (each with its own worker API,
task records, reporter and gossip member, as cube worker runs one) on a
simulated container runtime: containers live in memory, start after
--start-delay, and --fail-rate of them exit with --fail-code --fail-after
they started. No Docker engine is needed. make scale uses it to measure
the managers against hundreds of workers on one machine.

Worker i (i from --first) is named <--name-prefix><i> and listens on an
address of its own: the i-th usable address from --ip-base in 127.0.0.0/8
(Linux routes all of it to the loopback interface), with --http-port and
--gossip-port on each, and its outgoing connections leave from it. Its
records are in <--data>/<name>.

Security is on by default, as for cube worker: --ca-file, --encrypt, and
a certificate per worker in --cert-dir named as cube tls cert create
--worker --name <name> --dir <--cert-dir> writes it (worker-<name>.pem,
worker-<name>-key.pem); with --ca-key-file, those missing are made with
that CA key. Or --insecure.

On SIGTERM or SIGINT every worker leaves the gossip pool and stops, and
the process exits once all of them have. SIGKILL is how a benchmark loses
all of this process's workers at once, as machines dying.`,
		Example: `  cube sim-workers --count 100 --ip-base 127.0.1.1 --data /dev/shm/sim \
      --join 127.0.0.1:6557 --fast --insecure --start-delay 50ms`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := s.w.config()
			if err != nil {
				return err
			}
			return runUntilSignal(cmd.Context(), cfg.Logger, s.w.pprofAddr, func() (node, error) {
				fl, err := s.start(cfg)
				if err != nil {
					return nil, err
				}
				return fl, nil
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&s.count, "count", 10, "number of simulated workers in this process")
	f.IntVar(&s.first, "first", 1, "number of the first worker: its name's suffix and its address's place after --ip-base (several processes take consecutive ranges)")
	f.StringVar(&s.ipBase, "ip-base", "127.0.1.1", "first loopback address (127.0.0.0/8); addresses ending in .0 or .255 are skipped")
	f.StringVar(&s.prefix, "name-prefix", "sim-w", "worker names are this prefix followed by the worker's number")
	f.IntVar(&s.httpPort, "http-port", 5555, "port of every worker's API, each on its own address")
	f.IntVar(&s.gossipPort, "gossip-port", 6555, "port of every worker's gossip endpoint, each on its own address")
	f.StringVar(&s.dataDir, "data", "", "directory holding one data directory per worker (required; a tmpfs such as /dev/shm spares the disk hundreds of fsyncs per placement burst)")
	f.StringVar(&s.certDir, "cert-dir", "", "directory of the workers' certificates, worker-<name>.pem and worker-<name>-key.pem (with TLS)")
	f.StringVar(&s.caKey, "ca-key-file", "", "CA key: make the certificates missing from --cert-dir with it (a benchmark's convenience; keep CA keys off real nodes)")
	f.IntVar(&s.parallel, "start-parallel", 8, "workers started at once (each joins gossip with a full state exchange)")
	f.BoolVar(&s.gossipOnly, "gossip-only", false, "run each simulated worker as its gossip member alone: no API, no records, no runtime (it advertises no API and no container runtime, so managers place nothing on it and call nothing); make scale MODE=gossip measures gossip with a thousand members this way")
	f.BoolVar(&s.compress, "gossip-compression", false, "compress gossip messages as cube worker does; off by default here: with hundreds of members in one process, compressing every packet costs a fifth of its CPU")
	f.IntVar(&s.gcPercent, "gc-percent", 400, "the Go collector's GOGC for this process unless GOGC is set (hundreds of gossip members allocate per packet; fewer collections trade memory for CPU)")
	f.DurationVar(&s.rt.StartDelay, "start-delay", 0, "simulated time from a container's start call to its process running (the real engine's is about 230 ms)")
	f.DurationVar(&s.rt.Jitter, "start-jitter", 0, "up to this much more start delay, drawn uniformly per start")
	f.Float64Var(&s.rt.FailRate, "fail-rate", 0, "fraction (0..1) of starts whose process exits with --fail-code --fail-after it started")
	f.DurationVar(&s.rt.FailAfter, "fail-after", time.Second, "how long a failing process runs (below the worker's 250 ms start-up window: a start-up failure)")
	f.IntVar(&s.rt.FailCode, "fail-code", 1, "exit code of a failing process")
	f.Uint64Var(&s.rt.Seed, "seed", 0, "seed of the draws (worker i draws from seed+i); 0: random")
	s.w.register(f)
	f.StringVar(&s.w.pprofAddr, "pprof", "", "serve Go profiles (/debug/pprof/) of this process on this address; default: off")
	s.w.sec.registerShared(f)
	_ = cmd.MarkFlagRequired("data")
	return cmd
}

// simSpec is one simulated worker's identity and addresses.
type simSpec struct {
	name string
	ip   string
}

// specs returns the names and addresses of the workers to run.
func (s *simFlags) specs() ([]simSpec, error) {
	switch {
	case s.count < 1:
		return nil, fmt.Errorf("--count (%d) must be at least 1", s.count)
	case s.first < 1:
		return nil, fmt.Errorf("--first (%d) must be at least 1", s.first)
	case s.httpPort < 1 || s.httpPort > 65535 || s.gossipPort < 1 || s.gossipPort > 65535:
		return nil, fmt.Errorf("--http-port (%d) and --gossip-port (%d) must be ports (1-65535)", s.httpPort, s.gossipPort)
	case s.httpPort == s.gossipPort:
		return nil, fmt.Errorf("--http-port and --gossip-port must differ (both %d)", s.httpPort)
	case s.parallel < 1:
		return nil, fmt.Errorf("--start-parallel (%d) must be at least 1", s.parallel)
	}
	ips, err := loopbackRange(s.ipBase, s.first-1, s.count)
	if err != nil {
		return nil, err
	}
	out := make([]simSpec, s.count)
	for i := range out {
		out[i] = simSpec{name: fmt.Sprintf("%s%d", s.prefix, s.first+i), ip: ips[i]}
	}
	return out, nil
}

// loopbackRange returns n IPv4 addresses of 127.0.0.0/8 from base, skipping
// the first skip usable ones and every address ending in .0 or .255 (legal
// on the loopback interface, but the odd tool treats them as network or
// broadcast addresses).
func loopbackRange(base string, skip, n int) ([]string, error) {
	ip := net.ParseIP(base).To4()
	if ip == nil || ip[0] != 127 {
		return nil, fmt.Errorf("--ip-base %q must be an IPv4 address in 127.0.0.0/8", base)
	}
	v := uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
	var out []string
	for seen := 0; len(out) < n; v++ {
		if v > 0xFFFFFE {
			return nil, fmt.Errorf("--ip-base %s: %d workers from number %d run past 127.255.255.254", base, n, skip+1)
		}
		last := v & 0xFF
		if last == 0 || last == 255 {
			continue
		}
		if seen++; seen <= skip {
			continue
		}
		out = append(out, fmt.Sprintf("127.%d.%d.%d", v>>16&0xFF, v>>8&0xFF, last))
	}
	return out, nil
}

// credentials returns the TLS files and gossip keys of the worker named
// name, making its certificate first if --ca-key-file allows; none with
// --insecure.
func (s *simFlags) credentials(sp simSpec) (security.Files, []string, error) {
	sec := s.w.sec
	if sec.insecure {
		return security.Files{}, nil, nil
	}
	if s.certDir == "" {
		return security.Files{}, nil, fmt.Errorf("%w: pass --ca-file, --cert-dir (with a certificate per worker) and --encrypt, or --insecure to run open", errNoCredentials)
	}
	sec.files.Cert, sec.files.Key = security.CertFiles(s.certDir, security.RoleWorker, sp.name)
	if _, err := os.Stat(sec.files.Cert); errors.Is(err, os.ErrNotExist) && s.caKey != "" {
		if _, _, err := security.CreateCert(sec.files.CA, s.caKey, s.certDir, security.CertRequest{Role: security.RoleWorker, Name: sp.name, Hosts: []string{sp.ip}}); err != nil {
			return security.Files{}, nil, fmt.Errorf("make the certificate of %s: %w", sp.name, err)
		}
	}
	files, keys, _, err := sec.resolve("worker")
	if err != nil {
		return security.Files{}, nil, fmt.Errorf("worker %s: %w", sp.name, err)
	}
	return files, keys, nil
}

// checkFiles warns when the process may run out of file descriptors.
func checkFiles(n int, log hclog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	// Go raises the soft limit to the hard one at start (Go 1.19 and
	// later): lim.Cur is what this process may use.
	need := uint64(n)*fdsPerSimWorker + 64
	if lim.Cur < need {
		log.Warn("open file limit may be too low for this many simulated workers: raise the hard limit (ulimit -Hn) or run fewer per process",
			"workers", n, "limit", lim.Cur, "estimated_need", need)
	}
}

// start starts every simulated worker, --start-parallel at a time; on an
// error it stops those started and returns it.
func (s *simFlags) start(base worker.AgentConfig) (*simFleet, error) {
	sps, err := s.specs()
	if err != nil {
		return nil, err
	}
	if s.dataDir == "" {
		return nil, errors.New("--data is required")
	}
	if err := s.rt.Validate(); err != nil {
		return nil, err
	}
	if s.w.sec.insecure {
		// Checks the flags and says out loud, once, what runs open.
		if _, _, _, err := s.w.sec.resolve("sim-workers"); err != nil {
			return nil, err
		}
	}
	log := base.Logger
	checkFiles(len(sps), log)
	base.Gossip.NoCompression = !s.compress
	if _, set := os.LookupEnv("GOGC"); !set && s.gcPercent != 0 {
		debug.SetGCPercent(s.gcPercent)
	}
	fl := &simFleet{log: log, agents: make([]*worker.Agent, len(sps)), rts: make([]*simrt.Runtime, len(sps)),
		pools: make([]*cluster.Pool, len(sps)), errc: make(chan error, 1), stop: make(chan struct{})}
	begin := time.Now()
	var (
		mu      sync.Mutex
		firstEr error
		started int
	)
	sem := make(chan struct{}, s.parallel)
	var wg sync.WaitGroup
	for i, sp := range sps {
		mu.Lock()
		failed := firstEr != nil
		mu.Unlock()
		if failed {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var (
				a    *worker.Agent
				rt   *simrt.Runtime
				pool *cluster.Pool
				err  error
			)
			if s.gossipOnly {
				pool, err = s.startMember(base, sp)
			} else {
				a, rt, err = s.startOne(base, sp, i)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstEr == nil {
					firstEr = err
				}
				return
			}
			fl.agents[i], fl.rts[i], fl.pools[i] = a, rt, pool
			started++
			if step := max(len(sps)/10, 1); started%step == 0 || started == len(sps) {
				log.Info("simulated workers started", "started", started, "of", len(sps), "elapsed", time.Since(begin).Round(time.Millisecond))
			}
		}()
	}
	wg.Wait()
	if firstEr != nil {
		_ = fl.Close()
		return nil, firstEr
	}
	fl.watch()
	return fl, nil
}

// startOne starts worker number i of the process.
func (s *simFlags) startOne(base worker.AgentConfig, sp simSpec, i int) (*worker.Agent, *simrt.Runtime, error) {
	rcfg := s.rt
	if rcfg.Seed != 0 {
		rcfg.Seed += uint64(s.first + i)
	}
	rt, err := simrt.New(rcfg)
	if err != nil {
		return nil, nil, err
	}
	cfg := base
	cfg.Worker.Name = sp.name
	cfg.Worker.DataDir = filepath.Join(s.dataDir, sp.name)
	cfg.HTTPAddr = net.JoinHostPort(sp.ip, fmt.Sprint(s.httpPort))
	cfg.GossipAddr = net.JoinHostPort(sp.ip, fmt.Sprint(s.gossipPort))
	cfg.SourceIP = sp.ip
	cfg.Runtime = rt
	cfg.Logger = base.Logger.Named(sp.name)
	if cfg.TLS, cfg.GossipKeys, err = s.credentials(sp); err != nil {
		_ = rt.Close()
		return nil, nil, err
	}
	a, err := worker.NewAgent(cfg)
	if err != nil {
		_ = rt.Close()
		return nil, nil, fmt.Errorf("start simulated worker %s on %s: %w", sp.name, sp.ip, err)
	}
	return a, rt, nil
}

// startMember starts worker sp as its gossip member alone (--gossip-only):
// the role, name, address, encryption and timings of a worker's member, with
// no API and its container runtime advertised down, so that the managers
// record it, follow its liveness, and neither call it nor place on it.
func (s *simFlags) startMember(base worker.AgentConfig, sp simSpec) (*cluster.Pool, error) {
	g := base.Gossip
	addr := net.JoinHostPort(sp.ip, fmt.Sprint(s.gossipPort))
	if err := g.SetAddrs(context.Background(), addr, addr, "--gossip-port", base.Seeds); err != nil {
		return nil, err
	}
	g.Name, g.Logger, g.SourceIP = sp.name, base.Logger.Named(sp.name), sp.ip
	_, keys, err := s.credentials(sp)
	if err != nil {
		return nil, err
	}
	if g.Keys, err = cluster.DecodeGossipKeys(keys); err != nil {
		return nil, err
	}
	g.PollRoles = []cluster.Role{cluster.RoleManager} // as a worker's member
	g.Meta = cluster.Meta{Role: cluster.RoleWorker, RuntimeDown: true}
	p, err := cluster.NewPool(g)
	if err != nil {
		return nil, fmt.Errorf("start gossip member %s on %s: %w", sp.name, sp.ip, err)
	}
	return p, nil
}

// simFleet is the running simulated workers, one node to runUntilSignal.
type simFleet struct {
	log    hclog.Logger
	agents []*worker.Agent // nil where a start failed or with --gossip-only
	rts    []*simrt.Runtime
	pools  []*cluster.Pool // --gossip-only: the members; nil otherwise
	errc   chan error
	stop   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

// watch forwards the first error of any worker's API server to errc.
func (fl *simFleet) watch() {
	for _, a := range fl.agents {
		if a == nil {
			continue // --gossip-only: no API server
		}
		fl.wg.Add(1)
		go func() {
			defer fl.wg.Done()
			select {
			case err := <-a.Err():
				select {
				case fl.errc <- fmt.Errorf("worker %s: %w", a.Name(), err):
				default:
				}
			case <-fl.stop:
			}
		}()
	}
}

// Err receives the first error of a worker's API server.
func (fl *simFleet) Err() <-chan error { return fl.errc }

// closeParallel is how many workers Close stops at once. Stopping one is
// mostly waiting (its gossip leave is broadcast for up to 2 s, its API
// drains), so many at once: 32 at a time, 180 workers on a saturated
// machine took more than the 45 s the tests give a node to stop.
const closeParallel = 256

// Close stops every worker, closeParallel at a time (each leaves gossip,
// which waits for its broadcast), then their runtimes, and waits for every
// goroutine the fleet started. Safe to call more than once.
func (fl *simFleet) Close() error {
	fl.once.Do(func() {
		begin := time.Now()
		close(fl.stop)
		sem := make(chan struct{}, closeParallel)
		var wg sync.WaitGroup
		for i, a := range fl.agents {
			if a == nil && fl.pools[i] == nil {
				continue
			}
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if p := fl.pools[i]; p != nil {
					_ = p.Leave(2 * time.Second)
					_ = p.Shutdown()
					return
				}
				_ = a.Close()
				_ = fl.rts[i].Close()
			}()
		}
		wg.Wait()
		fl.wg.Wait()
		fl.log.Info("simulated workers stopped", "workers", len(fl.agents), "took", time.Since(begin).Round(time.Millisecond), "goroutines_left", runtime.NumGoroutine())
	})
	return nil
}
