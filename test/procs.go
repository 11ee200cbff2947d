package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
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
	// Env is added to the process's environment (for example DOCKER_HOST).
	Env  []string
	args []string
	log  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
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

// NewProcCluster starts managers and workers as real processes with --fast
// timings, and waits until a leader is elected and every worker is alive.
func NewProcCluster(t *testing.T, managers, workers int) *ProcCluster {
	return newProcCluster(t, managers, workers, false)
}

// NewProcClusterOnIPs is NewProcCluster with every node on its own loopback
// address (managers 127.0.0.11…, workers 127.0.0.21…) and its outgoing
// connections leaving from it (--source-ip), so that firewall rules on
// source and destination can partition nodes as if they were machines.
func NewProcClusterOnIPs(t *testing.T, managers, workers int) *ProcCluster {
	return newProcCluster(t, managers, workers, true)
}

func newProcCluster(t *testing.T, managers, workers int, ips bool) *ProcCluster {
	t.Helper()
	requireImage(t)
	c := &ProcCluster{t: t, Bin: CubeBinary(t), Dir: t.TempDir(), Prefix: "e2e" + uuid.NewString()[:6] + "-", ips: ips}
	var peers, seeds []string
	for i := 1; i <= managers; i++ {
		ip := c.ipOf(10 + i)
		p := &Proc{Name: fmt.Sprintf("m%d", i), IP: ip, HTTPAddr: testkit.FreeAddrOn(t, ip), RaftAddr: testkit.FreeAddrOn(t, ip), GossipAddr: testkit.FreeAddrOn(t, ip)}
		peers = append(peers, p.Name+"="+p.RaftAddr)
		seeds = append(seeds, p.GossipAddr)
		c.Managers = append(c.Managers, p)
	}
	c.peers, c.seeds = strings.Join(peers, ","), strings.Join(seeds, ",")
	for _, p := range c.Managers {
		p.args = []string{"manager", "--id", p.Name, "--fast", "--http", p.HTTPAddr, "--raft", p.RaftAddr,
			"--gossip", p.GossipAddr, "--data", filepath.Join(c.Dir, p.Name), "--peers", c.peers, "--join", c.seeds}
		if ips {
			p.args = append(p.args, "--source-ip", p.IP)
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
	p.args = []string{"worker", "--name", p.Name, "--fast", "--http", p.HTTPAddr, "--gossip", p.GossipAddr,
		"--data", filepath.Join(c.Dir, p.Name), "--join", c.seeds, "--stop-grace", "2s"}
	if c.ips {
		p.args = append(p.args, "--source-ip", p.IP)
	}
	p.Env = env
	c.Workers = append(c.Workers, p)
	c.Start(p)
	return p
}

// Cube runs the cube CLI with -m set to every manager and returns its output.
func (c *ProcCluster) Cube(args ...string) (string, error) {
	var addrs []string
	for _, p := range c.Managers {
		addrs = append(addrs, p.HTTPAddr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, c.Bin, append(args, "-m", strings.Join(addrs, ","))...).CombinedOutput()
	return string(out), err
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
	cmd := exec.Command(c.Bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	if len(p.Env) > 0 {
		cmd.Env = append(os.Environ(), p.Env...)
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		c.t.Fatalf("start %s: %v", p.Name, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
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

// Client returns an API client of the given managers (all if none).
func (c *ProcCluster) Client(ps ...*Proc) *api.Client {
	c.t.Helper()
	if len(ps) == 0 {
		ps = c.Managers
	}
	var addrs []string
	for _, p := range ps {
		addrs = append(addrs, p.HTTPAddr)
	}
	cl, err := api.NewClient(addrs, api.ClientOptions{RetryFor: 20 * time.Second})
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

// WaitReady waits until a leader is elected and n workers are alive.
func (c *ProcCluster) WaitReady(n int) {
	c.t.Helper()
	c.LeaderProc()
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
	for _, p := range append(append([]*Proc{}, c.Workers...), c.Managers...) {
		if p.Running() {
			c.Stop(p)
		}
	}
	if c.t.Failed() {
		for _, p := range append(append([]*Proc{}, c.Managers...), c.Workers...) {
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
