package test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/security"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/google/uuid"
)

// ProcCluster is a cluster of real `cube` processes, as `make cluster` runs
// them, on free ports, with unique worker names so that tests can count the
// containers of their own workers and remove them afterwards.
type ProcCluster struct {
	t        *testing.T
	Bin      string
	Dir      string
	Prefix   string // worker names are Prefix+"w1" …
	Managers []*Proc
	Workers  []*Proc
	peers    string
	seeds    string
	ips      bool
	// Sec is the cluster's identity (its Dir holds the files); nil when the
	// cluster runs with --insecure.
	Sec *Identity
	// dataDir is ProcOptions.DataDir; workerFlags ProcOptions.WorkerFlags.
	dataDir     func(name string) string
	workerFlags func(n int) []string
	// added counts the managers AddManager started.
	added int
	// clockJump: the nodes run ClockJumpBinary and follow their clock
	// files (ProcOptions.ClockJump, clock.go).
	clockJump bool
	// Sims are the cube sim-workers processes AddSimWorkers started;
	// simBase is their first loopback address, simData the directory of
	// their workers' data (ProcOptions.SimDataDir).
	Sims     []*SimProc
	simBase  string
	simData  string
	simPorts simPorts
	// managerFlags is ProcOptions.ManagerFlags.
	managerFlags func(n int) []string
}

// ProcOptions are the choices of NewProcClusterWith.
type ProcOptions struct {
	// IPs puts every node on its own loopback address (managers
	// 127.0.0.11…, workers 127.0.0.21…) with its outgoing connections
	// leaving from it (--source-ip), so that firewall rules on source and
	// destination can partition nodes as if they were machines.
	IPs bool
	// Insecure runs every node with --insecure (no TLS, no tokens, no gossip
	// encryption), as before issue 12: for the benchmark's comparison only.
	// By default a cluster makes its own identity and runs secure.
	Insecure bool
	// Identity, if set, is the cluster's identity instead of a new one: a
	// second cluster with the first one's CA, gossip key and operator
	// token, as when a cluster is rebuilt from a backup.
	Identity *Identity
	// DataDir, if set, names a node's data directory (--data) from its
	// name, before its first start; "" keeps the default, a directory named
	// as the node in the cluster's Dir. The chaos test mounts a small tmpfs
	// there to fill it.
	DataDir func(name string) string
	// WorkerFlags, if set, returns extra command-line flags for the n-th
	// worker (1-based), for example its labels (--label zone=a).
	WorkerFlags func(n int) []string
	// ClockJump runs every node on the clock-jump build (ClockJumpBinary)
	// instead of CubeBinary, following a clock file of its own, so that
	// SetClockOffset can step its wall clock (clock.go).
	ClockJump bool
	// Simulated: the cluster's workers are simulated (AddSimWorkers), so
	// neither the Docker engine nor the echo image is needed.
	Simulated bool
	// SimDataDir, if set, is where the simulated workers keep their data
	// (a tmpfs spares the disk their fsyncs); "" is the cluster's Dir.
	SimDataDir string
	// ManagerFlags, if set, returns extra command-line flags for the n-th
	// manager (1-based), for example --pprof.
	ManagerFlags func(n int) []string
}

// ipOf returns the loopback address of node slot n (127.0.0.n), or 127.0.0.1
// when the cluster does not give nodes their own addresses.
func (c *ProcCluster) ipOf(n int) string {
	if !c.ips {
		return "127.0.0.1"
	}
	return fmt.Sprintf("127.0.0.%d", n)
}

// Proc is one node process.
type Proc struct {
	Name       string
	IP         string // the node's own address
	HTTPAddr   string
	RaftAddr   string // managers only
	GossipAddr string
	// Data is the node's data directory (--data).
	Data string
	// Env is added to the process's environment (for example DOCKER_HOST).
	Env []string
	// Bin, if set, is the binary this node runs instead of the cluster's
	// (a manager one version behind, in the upgrade tests).
	Bin  string
	args []string
	log  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	// exitErr is how the last run ended (cmd.Wait's error; nil: exit 0).
	exitErr error
}

// ExitErr returns how the node's last run ended: nil for exit status 0,
// else the *exec.ExitError (or the error waiting for it). It is nil too
// while the node runs.
func (p *Proc) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// BuildCube builds bin/cube into a temp dir once per test binary.
var buildOnce struct {
	sync.Once
	path string
	dir  string // the temporary directory CubeBinary built into; TestMain removes it
	err  error
}

// CubeBinary returns the path of a freshly built cube binary.
func CubeBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cube-bin-")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.dir = dir
		buildOnce.path = filepath.Join(dir, "cube")
		out, err := exec.Command("go", "build", "-race", "-o", buildOnce.path, "github.com/cube-orch/cube/cmd/cube").CombinedOutput()
		if err != nil {
			buildOnce.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.path
}

// noRaceBuild is NoRaceBinary's build, like buildOnce.
var noRaceBuild struct {
	sync.Once
	path string
	dir  string
	err  error
}

// NoRaceBinary returns the path of a cube binary built without the race
// detector, once per test binary. The simulated workers run on it: one
// process stands in for many machines, and under the race detector twenty
// agents' gossip alone kept a core busy on a loaded 2-core machine, enough
// to miss 100 ms probe deadlines and flap the members (their code runs
// under the race detector in the worker package and every other test here).
func NoRaceBinary(t *testing.T) string {
	t.Helper()
	noRaceBuild.Do(func() {
		dir, err := os.MkdirTemp("", "cube-bin-")
		if err != nil {
			noRaceBuild.err = err
			return
		}
		noRaceBuild.dir = dir
		noRaceBuild.path = filepath.Join(dir, "cube")
		out, err := exec.Command("go", "build", "-o", noRaceBuild.path, "github.com/cube-orch/cube/cmd/cube").CombinedOutput()
		if err != nil {
			noRaceBuild.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if noRaceBuild.err != nil {
		t.Fatal(noRaceBuild.err)
	}
	return noRaceBuild.path
}

// NewProcCluster starts managers and workers as real processes with --fast
// timings and security on (see NewProcClusterWith), and waits until a
// leader is elected and every worker is alive.
func NewProcCluster(t *testing.T, managers, workers int) *ProcCluster {
	return NewProcClusterWith(t, managers, workers, ProcOptions{})
}

// NewProcClusterOnIPs is NewProcCluster with every node on its own loopback
// address (ProcOptions.IPs).
func NewProcClusterOnIPs(t *testing.T, managers, workers int) *ProcCluster {
	return NewProcClusterWith(t, managers, workers, ProcOptions{IPs: true})
}

// NewProcClusterWith is NewProcCluster with options. Unless opts.Insecure,
// the cluster makes its own identity in its Dir (NewIdentity: a CA, a
// certificate per node named as the node for its address, a client
// certificate, a gossip key, an operator token) and starts every node with
// the security flags, as `make cluster` does; ClientOptions, HTTPClient and
// Cube then carry the operator's credentials.
func NewProcClusterWith(t *testing.T, managers, workers int, opts ProcOptions) *ProcCluster {
	t.Helper()
	if !opts.Simulated {
		requireImage(t)
	}
	c := &ProcCluster{t: t, Dir: t.TempDir(), Prefix: "e2e" + uuid.NewString()[:6] + "-", ips: opts.IPs, dataDir: opts.DataDir, workerFlags: opts.WorkerFlags, clockJump: opts.ClockJump,
		simData: opts.SimDataDir, managerFlags: opts.ManagerFlags}
	if opts.ClockJump {
		c.Bin = ClockJumpBinary(t)
	} else {
		c.Bin = CubeBinary(t)
	}
	if !opts.Insecure {
		c.Sec = opts.Identity
		if c.Sec == nil {
			c.Sec = NewIdentity(t, filepath.Join(c.Dir, "identity"))
		}
	}
	var peers, seeds []string
	for i := 1; i <= managers; i++ {
		ip := c.ipOf(10 + i)
		p := &Proc{Name: fmt.Sprintf("m%d", i), IP: ip, HTTPAddr: testkit.FreeAddrOn(t, ip), RaftAddr: testkit.FreeAddrOn(t, ip), GossipAddr: testkit.FreeAddrOn(t, ip)}
		peers = append(peers, p.Name+"="+p.RaftAddr)
		seeds = append(seeds, p.GossipAddr)
		c.Managers = append(c.Managers, p)
	}
	c.peers, c.seeds = strings.Join(peers, ","), strings.Join(seeds, ",")
	for i, p := range c.Managers {
		p.Data = c.dataDirOf(p.Name)
		p.args = []string{"manager", "--id", p.Name, "--fast", "--http", p.HTTPAddr, "--raft", p.RaftAddr,
			"--gossip", p.GossipAddr, "--data", p.Data, "--peers", c.peers, "--join", c.seeds}
		p.args = append(p.args, c.securityFlags(security.RoleManager, p)...)
		if c.ips {
			p.args = append(p.args, "--source-ip", p.IP)
		}
		if c.managerFlags != nil {
			p.args = append(p.args, c.managerFlags(i+1)...)
		}
	}
	t.Cleanup(c.Close)
	for _, p := range c.Managers {
		c.Start(p)
	}
	for i := 0; i < workers; i++ {
		c.AddWorker()
	}
	c.WaitReady(len(c.Workers))
	return c
}

// AddWorker starts one more worker process and returns it; env is added to
// its environment.
func (c *ProcCluster) AddWorker(env ...string) *Proc {
	c.t.Helper()
	i := len(c.Workers) + 1
	ip := c.ipOf(20 + i)
	p := &Proc{Name: fmt.Sprintf("%sw%d", c.Prefix, i), IP: ip, HTTPAddr: testkit.FreeAddrOn(c.t, ip), GossipAddr: testkit.FreeAddrOn(c.t, ip)}
	p.Data = c.dataDirOf(p.Name)
	p.args = []string{"worker", "--name", p.Name, "--fast", "--http", p.HTTPAddr, "--gossip", p.GossipAddr,
		"--data", p.Data, "--join", c.seeds, "--stop-grace", "2s"}
	p.args = append(p.args, c.securityFlags(security.RoleWorker, p)...)
	if c.ips {
		p.args = append(p.args, "--source-ip", p.IP)
	}
	if c.workerFlags != nil {
		p.args = append(p.args, c.workerFlags(i)...)
	}
	p.Env = env
	c.Workers = append(c.Workers, p)
	c.Start(p)
	return p
}

// AddManager starts one more manager, as an operator adds one to a running
// cluster: `cube manager` without --peers, joining through the gossip
// seeds; its joiner asks the cluster to add it as a non-voter, and the
// leader promotes it once it has caught up (cluster/autopilot.go). It is
// appended to Managers and returned at once, not waited for. Its name is
// "a1", "a2" … and its address 127.0.0.(100+n) on a cluster with IPs.
// Flags in extra come last, so they override the defaults (--fast=false).
func (c *ProcCluster) AddManager(extra ...string) *Proc {
	c.t.Helper()
	c.added++
	ip := c.ipOf(100 + c.added)
	p := &Proc{Name: fmt.Sprintf("a%d", c.added), IP: ip, HTTPAddr: testkit.FreeAddrOn(c.t, ip), RaftAddr: testkit.FreeAddrOn(c.t, ip), GossipAddr: testkit.FreeAddrOn(c.t, ip)}
	p.Data = c.dataDirOf(p.Name)
	p.args = []string{"manager", "--id", p.Name, "--fast", "--http", p.HTTPAddr, "--raft", p.RaftAddr,
		"--gossip", p.GossipAddr, "--data", p.Data, "--join", c.seeds}
	p.args = append(p.args, c.securityFlags(security.RoleManager, p)...)
	if c.ips {
		p.args = append(p.args, "--source-ip", p.IP)
	}
	p.args = append(p.args, extra...)
	c.Managers = append(c.Managers, p)
	c.Start(p)
	return p
}

// dataDirOf returns the data directory of the node of the given name.
func (c *ProcCluster) dataDirOf(name string) string {
	if c.dataDir != nil {
		if d := c.dataDir(name); d != "" {
			return d
		}
	}
	return filepath.Join(c.Dir, name)
}

// securityFlags returns the security flags of node p of role r: its
// certificate (made on first use), the gossip key and, for a manager, the
// bootstrap token file; --insecure when the cluster runs open.
func (c *ProcCluster) securityFlags(r security.Role, p *Proc) []string {
	c.t.Helper()
	if c.Sec == nil {
		return []string{"--insecure"}
	}
	f := c.Sec.Node(r, p.Name, p.IP)
	flags := []string{"--ca-file", f.CA, "--cert-file", f.Cert, "--key-file", f.Key, "--encrypt", c.Sec.GossipKey}
	if r == security.RoleManager {
		flags = append(flags, "--bootstrap-token-file", c.Sec.TokenFile)
	}
	return flags
}

// Cube runs the cube CLI with -m set to every manager and returns its output.
func (c *ProcCluster) Cube(args ...string) (string, error) {
	var addrs []string
	for _, p := range c.Managers {
		addrs = append(addrs, p.HTTPAddr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := c.CubeCommand(ctx, append(args, "-m", strings.Join(addrs, ","))...).CombinedOutput()
	return string(out), err
}

// CubeCommand returns the command running the cube CLI with args (no -m
// added) and the operator's credentials in its environment.
func (c *ProcCluster) CubeCommand(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c.Bin, args...)
	cmd.Env = append(os.Environ(), c.CubeEnv()...)
	return cmd
}

// CubeEnv returns the environment that gives the CLI the operator's
// credentials (CUBE_TOKEN, CUBE_CACERT, CUBE_CLIENT_CERT, CUBE_CLIENT_KEY;
// all empty for an insecure cluster, overriding any the test process was
// started with). CUBE_ENV_FILE names a file that does not exist, so that
// the CLI never reads a developer's .cluster/env.
func (c *ProcCluster) CubeEnv() []string {
	var token, ca, cert, key string
	if c.Sec != nil {
		token, ca, cert, key = c.Sec.Token, c.Sec.Client.CA, c.Sec.Client.Cert, c.Sec.Client.Key
	}
	return []string{
		"CUBE_ENV_FILE=" + filepath.Join(c.Dir, "no-such-env-file"),
		"CUBE_MANAGERS=",
		"CUBE_TOKEN=" + token,
		"CUBE_CACERT=" + ca,
		"CUBE_CLIENT_CERT=" + cert,
		"CUBE_CLIENT_KEY=" + key,
	}
}

// ClientOptions returns opts with the operator's credentials (token and
// client certificate over TLS) filled in; opts unchanged for an insecure
// cluster. Every API client of a test against this cluster is built with it.
func (c *ProcCluster) ClientOptions(opts api.ClientOptions) api.ClientOptions {
	if c.Sec == nil {
		return opts
	}
	return c.Sec.ClientOptions(opts)
}

// HTTPClient returns a client for raw requests to the managers' API (see
// URL): over TLS with the operator token for a secure cluster, plain HTTP
// for an insecure one. It has no timeout of its own: requests carry their
// context.
func (c *ProcCluster) HTTPClient() *http.Client {
	if c.Sec == nil {
		return &http.Client{Transport: api.NewTLSTransport("", nil)}
	}
	return c.Sec.HTTPClient()
}

// WorkerClient returns a client of the workers' API, as a manager calls it:
// a worker admits only managers, so over TLS it presents a manager
// certificate made for the harness ("harness", not a raft member) and
// verifies the worker's; plain HTTP for an insecure cluster.
func (c *ProcCluster) WorkerClient(timeout time.Duration) *api.WorkerClient {
	c.t.Helper()
	if c.Sec == nil {
		return api.NewWorkerClient(timeout)
	}
	b, err := security.Load(c.Sec.Node(security.RoleManager, "harness"))
	if err != nil {
		c.t.Fatal(err)
	}
	return api.NewWorkerClientTLS(timeout, "", b.ClientConfig(security.RoleWorker))
}

// URL returns the URL of path on node p's API: https unless the cluster
// runs insecure.
func (c *ProcCluster) URL(p *Proc, path string) string {
	if c.Sec == nil {
		return "http://" + p.HTTPAddr + path
	}
	return "https://" + p.HTTPAddr + path
}

// Start starts (or restarts) a node process, appending to its log.
func (c *ProcCluster) Start(p *Proc) {
	c.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.log = filepath.Join(c.Dir, p.Name+".log")
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	bin := c.Bin
	if p.Bin != "" {
		bin = p.Bin
	}
	cmd := exec.Command(bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	env := p.Env
	if c.clockJump {
		env = append(slices.Clip(env), "CUBE_TEST_CLOCK_FILE="+c.clockFile(p))
	}
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		c.t.Fatalf("start %s: %v", p.Name, err)
	}
	p.cmd, p.done, p.exitErr = cmd, make(chan struct{}), nil
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		close(p.done)
	}()
}

// Kill sends SIGKILL to a node and waits for it to exit.
func (c *ProcCluster) Kill(p *Proc) { c.signal(p, syscall.SIGKILL) }

// Stop sends SIGTERM to a node and waits for it to exit.
func (c *ProcCluster) Stop(p *Proc) { c.signal(p, syscall.SIGTERM) }

func (c *ProcCluster) signal(p *Proc, sig syscall.Signal) {
	c.t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(45 * time.Second):
		// A node bounds its own shutdown (HTTP 5 s, leadership transfer
		// 2 s, gossip leave 2 s, raft 10 s); this only catches a hang.
		_ = cmd.Process.Kill()
		<-done
		c.t.Errorf("%s did not exit within 45 s of %v", p.Name, sig)
	}
	p.mu.Lock()
	p.cmd = nil
	p.mu.Unlock()
}

// Running reports whether the node process runs.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Client returns an API client of the given managers (all if none), with
// the operator's credentials.
func (c *ProcCluster) Client(ps ...*Proc) *api.Client {
	c.t.Helper()
	return c.ClientOf(api.ClientOptions{RetryFor: 20 * time.Second}, ps...)
}

// ClientOf returns an API client of the given managers (all if none) with
// opts and the operator's credentials added.
func (c *ProcCluster) ClientOf(opts api.ClientOptions, ps ...*Proc) *api.Client {
	c.t.Helper()
	if len(ps) == 0 {
		ps = c.Managers
	}
	var addrs []string
	for _, p := range ps {
		addrs = append(addrs, p.HTTPAddr)
	}
	cl, err := api.NewClient(addrs, c.ClientOptions(opts))
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// LeaderProc returns the manager process that leads, as the cluster says.
func (c *ProcCluster) LeaderProc() *Proc {
	c.t.Helper()
	var leader *Proc
	testkit.Eventually(c.t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		info, err := c.Client().Cluster(ctx)
		if err != nil {
			return err
		}
		for _, p := range c.Managers {
			if p.HTTPAddr == info.Leader && info.Leader != "" && p.Running() {
				leader = p
				return nil
			}
		}
		return fmt.Errorf("no running leader (cluster says %q)", info.Leader)
	})
	return leader
}

// WaitReady waits until a leader is elected, every running manager takes
// the operator token (the bootstrap token the first leader stored), and n
// workers are alive.
func (c *ProcCluster) WaitReady(n int) {
	c.t.Helper()
	c.LeaderProc()
	if c.Sec != nil {
		var running []string
		for _, p := range c.Managers {
			if p.Running() {
				running = append(running, p.HTTPAddr)
			}
		}
		waitToken(c.t, c.Sec, running)
	}
	// Generous: after every manager restarted at once (faster than gossip
	// notices a death), a worker still sees the managers alive and learns of
	// the new pool only through a push/pull sync (every 15 s with --fast, to
	// a random member); two rounds can miss the managers.
	testkit.Eventually(c.t, 90*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		nodes, err := c.Client().Nodes(ctx, true)
		if err != nil {
			return err
		}
		alive := 0
		for _, node := range nodes {
			if node.State == api.NodeAlive {
				alive++
			}
		}
		if alive < n {
			return fmt.Errorf("%d workers alive, want %d: %+v", alive, n, nodes)
		}
		return nil
	})
}

// Containers lists the running containers of this cluster's workers, counted
// from the Docker engine itself, by task ID.
func (c *ProcCluster) Containers() map[string][]string {
	c.t.Helper()
	return c.ContainersOn(c.Workers...)
}

// ContainersOn is Containers for the given workers only.
func (c *ProcCluster) ContainersOn(workers ...*Proc) map[string][]string {
	c.t.Helper()
	cli := dockerClient(c.t)
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := make(map[string][]string)
	for _, w := range workers {
		list, err := cli.ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(filters.Arg("label", "cube.worker="+w.Name), filters.Arg("status", "running"))})
		if err != nil {
			c.t.Fatalf("list containers: %v", err)
		}
		for _, ct := range list {
			out[ct.Labels["cube.task"]] = append(out[ct.Labels["cube.task"]], ct.ID)
		}
	}
	return out
}

// Close stops every process and removes the containers of its workers. Logs
// of a failed test are printed.
func (c *ProcCluster) Close() {
	var sims []*Proc
	for _, s := range c.Sims {
		sims = append(sims, s.Proc)
	}
	for _, p := range append(append(append([]*Proc{}, c.Workers...), sims...), c.Managers...) {
		if p.Running() {
			c.Stop(p)
		}
	}
	if c.t.Failed() {
		for _, p := range append(append(append([]*Proc{}, c.Managers...), c.Workers...), sims...) {
			data, _ := os.ReadFile(p.log)
			lines := strings.Split(string(data), "\n")
			if len(lines) > 60 {
				lines = lines[len(lines)-60:]
			}
			c.t.Logf("--- last lines of %s\n%s", p.Name, strings.Join(lines, "\n"))
		}
	}
	cli := dockerClient(c.t)
	defer cli.Close()
	for _, w := range c.Workers {
		removeWorkerContainers(c.t, cli, w.Name)
	}
}

// removeWorkerContainers force-removes every container of the named worker.
func removeWorkerContainers(t *testing.T, cli *client.Client, worker string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", "cube.worker="+worker))})
	cancel()
	if err != nil {
		t.Errorf("list containers of %s: %v", worker, err)
		return
	}
	// One deadline per container: a long run can leave hundreds, and a
	// loaded engine removes a few per second.
	for _, ct := range list {
		rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := cli.ContainerRemove(rctx, ct.ID, container.RemoveOptions{Force: true}); err != nil {
			t.Logf("remove container %s of %s: %v", ct.ID[:12], worker, err)
		}
		rcancel()
	}
}

func dockerClient(t *testing.T) *client.Client {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// requireImage fails (never skips) when the echo image is missing.
func requireImage(t *testing.T) {
	t.Helper()
	cli := dockerClient(t)
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.ImageInspect(ctx, "cube-echo:latest"); err != nil {
		t.Fatalf("image cube-echo:latest missing: run `make images` first (%v)", err)
	}
}
