package test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// Firewall partitions nodes of a ProcCluster started with NewProcClusterOnIPs:
// it drops every packet between the loopback addresses of two groups, in both
// directions, TCP and UDP alike (raft, memberlist's UDP probes, HTTP). Its
// rules live in a chain of their own, hooked into INPUT, removed by Close.
// It needs iptables and the right to use it (root), which CI has.
type Firewall struct {
	t     *testing.T
	chain string
	mu    sync.Mutex
}

// NewFirewall creates the chain; the test fails if iptables cannot be used.
func NewFirewall(t *testing.T) *Firewall {
	t.Helper()
	f := &Firewall{t: t, chain: fmt.Sprintf("CUBE-CHAOS-%d", os.Getpid())}
	if err := f.run("-N", f.chain); err != nil {
		t.Fatalf("partitions need iptables as root: %v", err)
	}
	if err := f.run("-I", "INPUT", "-j", f.chain); err != nil {
		_ = f.run("-X", f.chain)
		t.Fatalf("hook the chaos chain into INPUT: %v", err)
	}
	t.Cleanup(f.Close)
	return f
}

func (f *Firewall) run(args ...string) error {
	out, err := exec.Command("iptables", append([]string{"-w"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Partition cuts every address in a off from every address in b.
func (f *Firewall) Partition(a, b []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			for _, pair := range [][2]string{{x, y}, {y, x}} {
				if err := f.run("-A", f.chain, "-s", pair[0], "-d", pair[1], "-j", "DROP"); err != nil {
					f.t.Errorf("partition: %v", err)
				}
			}
		}
	}
}

// Heal removes every partition.
func (f *Firewall) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.run("-F", f.chain); err != nil {
		f.t.Errorf("heal: %v", err)
	}
}

// Close removes the chain and its hook.
func (f *Firewall) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	_ = f.run("-D", "INPUT", "-j", f.chain)
	_ = f.run("-F", f.chain)
	_ = f.run("-X", f.chain)
}
