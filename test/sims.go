package test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// SimProc is one `cube sim-workers` process: many real worker agents on the
// simulated runtime (worker/simrt), each with its own loopback address.
// Killing it loses all its workers at once, as machines dying.
type SimProc struct {
	*Proc
	Workers []SimWorker
}

// SimWorker is one simulated worker of a SimProc.
type SimWorker struct {
	Name     string
	IP       string
	HTTPAddr string
}

// simPorts are the ports every simulated worker of a cluster listens on,
// each on its own address; chosen once per cluster.
type simPorts struct {
	http, gossip int
}

// AddSimWorkers starts a `cube sim-workers` process running n more
// simulated workers, numbered after those of the cluster's earlier such
// processes, joined to the managers with the cluster's credentials (a
// certificate per worker, made from the cluster's CA by the process), and
// returns it at once; WaitReady waits for them. extra flags are added
// (--start-delay, --fail-rate, --log-level, --fast=false for memberlist's
// LAN timings instead of the fast ones, …). The process runs
// NoRaceBinary whatever the cluster's binary.
func (c *ProcCluster) AddSimWorkers(n int, extra ...string) *SimProc {
	c.t.Helper()
	if c.simBase == "" {
		// A /16 of its own in 127.100–199.x.x per cluster: two clusters (or
		// a leftover process of a killed run) never share an address.
		c.simBase = fmt.Sprintf("127.%d.%d.1", 100+rand.IntN(100), rand.IntN(250))
	}
	first := 1
	for _, s := range c.Sims {
		first += len(s.Workers)
	}
	ports := c.simPortsOf()
	ips, err := simAddrs(c.simBase, first-1, n)
	if err != nil {
		c.t.Fatal(err)
	}
	prefix := c.Prefix + "s"
	p := &SimProc{Proc: &Proc{Name: fmt.Sprintf("sims%d", len(c.Sims)+1), IP: ips[0]}}
	for i, ip := range ips {
		w := SimWorker{Name: fmt.Sprintf("%s%d", prefix, first+i), IP: ip, HTTPAddr: net.JoinHostPort(ip, strconv.Itoa(ports.http))}
		p.Workers = append(p.Workers, w)
	}
	p.HTTPAddr = p.Workers[0].HTTPAddr
	data := c.simData
	if data == "" {
		data = c.Dir
	}
	p.Data = filepath.Join(data, p.Name)
	p.args = []string{"sim-workers", "--count", strconv.Itoa(n), "--first", strconv.Itoa(first), "--ip-base", c.simBase,
		"--name-prefix", prefix, "--http-port", strconv.Itoa(ports.http), "--gossip-port", strconv.Itoa(ports.gossip),
		"--data", p.Data, "--join", c.seeds, "--fast", "--stop-grace", "2s"}
	if c.Sec == nil {
		p.args = append(p.args, "--insecure")
	} else {
		certs := filepath.Join(c.Sec.Dir, "sim")
		if err := os.MkdirAll(certs, 0o700); err != nil {
			c.t.Fatal(err)
		}
		p.args = append(p.args, "--ca-file", c.Sec.CA, "--ca-key-file", c.Sec.caKey, "--cert-dir", certs, "--encrypt", c.Sec.GossipKey)
	}
	p.args = append(p.args, extra...)
	p.Bin = NoRaceBinary(c.t)
	c.Sims = append(c.Sims, p)
	c.Start(p.Proc)
	return p
}

// simPortsOf picks the cluster's simulated-worker ports on first use: free
// on the first address (nothing else binds the cluster's own /16).
func (c *ProcCluster) simPortsOf() simPorts {
	c.t.Helper()
	if c.simPorts.http == 0 {
		for _, port := range []*int{&c.simPorts.http, &c.simPorts.gossip} {
			_, ps, err := net.SplitHostPort(testkit.FreeAddrOn(c.t, c.simBase))
			if err != nil {
				c.t.Fatal(err)
			}
			*port, _ = strconv.Atoi(ps)
		}
	}
	return c.simPorts
}

// simAddrs returns n loopback addresses from base after skipping skip,
// leaving out those ending in .0 or .255, as cube sim-workers numbers them.
func simAddrs(base string, skip, n int) ([]string, error) {
	ip := net.ParseIP(base).To4()
	if ip == nil || ip[0] != 127 {
		return nil, fmt.Errorf("simulated workers' base %q is not in 127.0.0.0/8", base)
	}
	v := uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
	var out []string
	for seen := 0; len(out) < n; v++ {
		if last := v & 0xFF; last == 0 || last == 255 {
			continue
		}
		if seen++; seen <= skip {
			continue
		}
		out = append(out, fmt.Sprintf("127.%d.%d.%d", v>>16&0xFF, v>>8&0xFF, v&0xFF))
	}
	return out, nil
}

// SimWorkers returns every simulated worker of the cluster's processes
// that still run.
func (c *ProcCluster) SimWorkers() []SimWorker {
	var out []SimWorker
	for _, s := range c.Sims {
		if s.Running() {
			out = append(out, s.Workers...)
		}
	}
	return out
}

// SimRecords asks every given simulated worker for its task records
// (GET /tasks, as a manager calls it) and returns them by worker name; 16
// workers are asked at once.
func (c *ProcCluster) SimRecords(ws []SimWorker) (map[string][]api.Task, error) {
	c.t.Helper()
	wc := c.WorkerClient(30 * time.Second)
	out := make(map[string][]api.Task, len(ws))
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	sem := make(chan struct{}, 16)
	for _, w := range ws {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			tasks, err := wc.Tasks(ctx, w.HTTPAddr)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("GET /tasks of %s (%s): %w", w.Name, w.HTTPAddr, err)
				}
				return
			}
			out[w.Name] = tasks
		}()
	}
	wg.Wait()
	return out, firstErr
}

// RunningCopies counts, per task, the Running records on the workers'
// own records (what their simulated runtimes run): a task must have
// exactly one.
func RunningCopies(records map[string][]api.Task) map[uuid.UUID][]string {
	out := make(map[uuid.UUID][]string)
	for name, tasks := range records {
		for _, t := range tasks {
			if t.State == api.Running {
				out[t.ID] = append(out[t.ID], name)
			}
		}
	}
	return out
}
