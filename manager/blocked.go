package manager

import (
	"encoding/binary"
	"hash/maphash"
	"math"
	"slices"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// A Pending task that fits no worker is blocked: placing it again costs a
// scan of every worker (and a reason naming them) and can only succeed
// once the workers change — one joins, frees room, changes its labels or
// allowances, stops draining. The loop therefore remembers, per blocked
// task, a fingerprint of what the workers offered when it was last tried,
// and tries it again only when that changes, as Nomad re-evaluates its
// blocked evaluations on capacity changes. With thousands of tasks that
// fit nowhere (the submit measure of bench/scale), every pass otherwise
// re-placed them all. Tasks asking static host ports are always tried
// (what holds a port is not in the fingerprint), and every blocked task
// is tried again after blockedRecheck in any case.
const blockedRecheck = 10 * time.Second

// blockedMark is when, at which generation and against which workers'
// fingerprint a task was last found to fit nowhere.
type blockedMark struct {
	gen uint64
	fp  uint64
	at  time.Time
}

// capacitySeed keys the fingerprints of one process.
var capacitySeed = maphash.MakeSeed()

// capacityPrint fingerprints what placement reads of the workers: who
// they are, their liveness, runtime, drain, capacity, allocation, labels
// and allowances.
func capacityPrint(nodes []api.Node) uint64 {
	var h maphash.Hash
	h.SetSeed(capacitySeed)
	var b [8]byte
	num := func(v uint64) {
		binary.LittleEndian.PutUint64(b[:], v)
		h.Write(b[:])
	}
	str := func(s string) {
		num(uint64(len(s)))
		h.WriteString(s)
	}
	flag := func(v bool) {
		if v {
			num(1)
		} else {
			num(0)
		}
	}
	for _, n := range nodes {
		str(n.Name)
		str(n.State)
		flag(n.RuntimeAvailable)
		flag(n.Drain)
		num(math.Float64bits(n.Cpu))
		num(uint64(n.Memory))
		num(uint64(n.Disk))
		num(math.Float64bits(n.AllocatedCpu))
		num(uint64(n.AllocatedMemory))
		num(uint64(n.AllocatedDisk))
		num(uint64(len(n.Allows)))
		for _, a := range n.Allows {
			str(a)
		}
		keys := make([]string, 0, len(n.Labels))
		for k := range n.Labels {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		num(uint64(len(keys)))
		for _, k := range keys {
			str(k)
			str(n.Labels[k])
		}
	}
	return h.Sum64()
}

// stillBlocked reports whether t was found to fit nowhere at its current
// generation against workers that have not changed since (fp), less
// than blockedRecheck ago: trying it again would find the same.
func (l *loop) stillBlocked(t *api.Task, fp uint64, now time.Time) bool {
	m, ok := l.blocked[t.ID]
	return ok && m.gen == t.Generation && m.fp == fp && now.Sub(m.at) < blockedRecheck && len(t.StaticHostPorts()) == 0
}

// noteBlocked records the tasks of a pass's placements that fit nowhere,
// against the workers as they are after the pass's placements (fp),
// and forgets the ones placed.
func (l *loop) noteBlocked(decisions []Placement, fp uint64, now time.Time) {
	for _, d := range decisions {
		if d.OK {
			delete(l.blocked, d.Task.ID)
			continue
		}
		l.blocked[d.Task.ID] = blockedMark{gen: d.Task.Generation, fp: fp, at: now}
	}
}

// pruneBlocked forgets the tasks that are no longer Pending.
func (l *loop) pruneBlocked(pending map[uuid.UUID]bool) {
	for id := range l.blocked {
		if !pending[id] {
			delete(l.blocked, id)
		}
	}
}
