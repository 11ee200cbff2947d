package manager

import (
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
)

// A task that fits nowhere is tried once, then not again while the
// workers stay the same; a worker joining gets it placed at the next pass,
// and a task blocked for blockedRecheck is tried again anyway.
func TestLoop_BlockedTaskTriedAgainOnlyWhenWorkersChange(t *testing.T) {
	h := newHarness(t, nil)
	h.worker("w1")
	h.submit("t1", func(t *api.Task) { t.Cpu = 4 })
	h.submit("t2", func(t *api.Task) { t.Cpu = 8 })
	h.pass()
	id := h.id("t1")
	first, ok := h.l.blocked[id]
	if !ok {
		t.Fatalf("t1 fits nowhere but is not marked blocked (%s)", h.task("t1").Reason)
	}

	h.pass()
	h.pass()
	if again := h.l.blocked[id]; again != first {
		t.Fatalf("t1 was tried again with the workers unchanged: mark %+v, then %+v", first, again)
	}

	// Room elsewhere: a worker of 4 cores joins.
	h.worker("w2")
	h.gossip.mu.Lock()
	for i := range h.gossip.members {
		if h.gossip.members[i].Name == "w2" {
			h.gossip.members[i].Meta.Cpu = 4
		}
	}
	h.gossip.mu.Unlock()
	h.pass()
	h.pass()
	if got := h.task("t1"); got.Worker != "w2" || got.State == api.Pending {
		t.Fatalf("t1 after a worker with room joined: %s on %q (%s), want placed on w2", got.State, got.Worker, got.Reason)
	}
	if _, ok := h.l.blocked[id]; ok {
		t.Fatal("t1 was placed but is still marked blocked")
	}

	// t2 (8 cores) still fits nowhere; once its mark is blockedRecheck
	// old, it is tried again although nothing changed.
	id2 := h.id("t2")
	m, ok := h.l.blocked[id2]
	if !ok {
		t.Fatal("t2 fits nowhere but is not marked blocked")
	}
	h.pass()
	if h.l.blocked[id2] != m {
		t.Fatal("t2 was tried again with the workers unchanged")
	}
	m.at = m.at.Add(-blockedRecheck)
	h.l.blocked[id2] = m
	h.pass()
	if got := h.l.blocked[id2]; !got.at.After(m.at.Add(blockedRecheck - time.Second)) {
		t.Fatalf("t2 blocked for blockedRecheck was not tried again: mark %+v", got)
	}
}

// Every property placement reads of a worker changes the fingerprint.
func TestCapacityPrint_ChangesWithWhatPlacementReads(t *testing.T) {
	base := api.Node{Name: "w1", State: api.NodeAlive, RuntimeAvailable: true, Cpu: 2, Memory: 1 << 30, Disk: 1 << 30,
		Labels: map[string]string{"zone": "a"}, Allows: []string{"privileged"}}
	for name, edit := range map[string]func(*api.Node){
		"name":      func(n *api.Node) { n.Name = "w2" },
		"state":     func(n *api.Node) { n.State = api.NodeDead },
		"runtime":   func(n *api.Node) { n.RuntimeAvailable = false },
		"drain":     func(n *api.Node) { n.Drain = true },
		"cpu":       func(n *api.Node) { n.Cpu = 4 },
		"memory":    func(n *api.Node) { n.Memory = 2 << 30 },
		"disk":      func(n *api.Node) { n.Disk = 2 << 30 },
		"alloc cpu": func(n *api.Node) { n.AllocatedCpu = 1 },
		"alloc mem": func(n *api.Node) { n.AllocatedMemory = 1 },
		"alloc dsk": func(n *api.Node) { n.AllocatedDisk = 1 },
		"label":     func(n *api.Node) { n.Labels = map[string]string{"zone": "b"} },
		"label key": func(n *api.Node) { n.Labels = map[string]string{"zonf": "a"} },
		"allows":    func(n *api.Node) { n.Allows = nil },
	} {
		n := base
		edit(&n)
		if capacityPrint([]api.Node{n}) == capacityPrint([]api.Node{base}) {
			t.Errorf("%s changed, the fingerprint did not", name)
		}
	}
	if capacityPrint([]api.Node{base}) != capacityPrint([]api.Node{base}) {
		t.Error("the same workers give different fingerprints")
	}
}
