package fsm

import (
	"math"
	"math/bits"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// What the leader's loop needs without reading every task: which tasks
// changed since it last looked (TakeChanges), and what each worker's
// placed tasks add up to (Nodes). Both are kept up to date where tasks are
// stored and removed (putLocked, deleteLocked) and rebuilt by Restore, so a
// pass that handles a change costs the change, not the state: with 100,000
// live tasks a full pass takes about 170 ms, most of it reading and
// summing them (bench/scale/SCALE.md).

// maxChanges bounds the changed task IDs held for TakeChanges. A manager
// that is not the leader never takes them; past the bound it stops
// counting and the next TakeChanges says "everything" instead.
const maxChanges = 1 << 16

// changes is the set of tasks changed since the last TakeChanges, or all.
type changes struct {
	ids map[uuid.UUID]struct{}
	all bool
}

func (c *changes) task(id uuid.UUID) {
	if c.all {
		return
	}
	if len(c.ids) >= maxChanges {
		c.everything()
		return
	}
	if c.ids == nil {
		c.ids = make(map[uuid.UUID]struct{})
	}
	c.ids[id] = struct{}{}
}

// everything notes a change that is not one task's nor one worker's: a
// service, a removed worker, a whole state restored.
func (c *changes) everything() {
	c.all, c.ids = true, nil
}

// workerChangedLocked notes a change of worker name's record as a change
// of each task placed on it: what a pass decides differently after a
// worker dies, loses its engine or is drained is about those tasks (they
// are lost, or moved off). What it may change for the others (room for a
// task that fitted nowhere) the leader sees in the workers' capacity,
// which it compares at every pass.
func (f *FSM) workerChangedLocked(name string) {
	a := f.alloc[name]
	if a == nil {
		return
	}
	for id := range a.ids {
		f.changes.task(id)
	}
}

// TakeChanges returns the IDs of the tasks changed (stored, replaced or
// removed) since the previous call, and forgets them, a changed worker
// record counting as a change of the tasks placed on it; all is true when
// something else changed too (a service, a removed worker, a restored state) or
// too many tasks changed to list, and then ids is nil: read everything.
// The leader's loop is its one caller; the first call on an FSM returns
// all.
func (f *FSM) TakeChanges() (ids []uuid.UUID, all bool) {
	f.mu.Lock()
	c := f.changes
	f.changes = changes{}
	f.mu.Unlock()
	if c.all {
		return nil, true
	}
	ids = make([]uuid.UUID, 0, len(c.ids))
	for id := range c.ids {
		ids = append(ids, id)
	}
	return ids, false
}

// LiveTaskRefsOf is LiveTaskRefs for the given IDs only: those of them
// that are stored and not Finished, oldest submission first. The caller
// must only read them.
func (f *FSM) LiveTaskRefsOf(ids []uuid.UUID) []*api.Task {
	f.mu.RLock()
	got := make([]*api.Task, 0, len(ids))
	for _, id := range ids {
		if _, ok := f.live[id]; ok {
			got = append(got, f.tasks[id])
		}
	}
	f.mu.RUnlock()
	return refsInOrder(got)
}

// allocation sums what the tasks placed on one worker (Scheduled or
// Running) asked for. Sums are exact whatever the order of additions and
// removals: CPU in nanocores, bytes in 128 bits (Nodes saturates them the
// way api.AddBytes does), so a worker whose tasks all ended is back at
// zero, not at a rounding error.
//
// It also holds the IDs of those tasks: a change of the worker's record
// (its liveness, its drain) is then a change of those tasks alone
// (workerChangedLocked), read by the leader's next pass without reading
// the others.
type allocation struct {
	nanoCPU    int64
	mem, disk  wide
	ids        map[uuid.UUID]struct{}
	perService map[string]int
}

// wide is a 128-bit unsigned sum of non-negative int64 values.
type wide struct{ hi, lo uint64 }

func (w *wide) add(v int64) {
	var c uint64
	w.lo, c = bits.Add64(w.lo, uint64(v), 0)
	w.hi += c
}

func (w *wide) sub(v int64) {
	var b uint64
	w.lo, b = bits.Sub64(w.lo, uint64(v), 0)
	w.hi -= b
}

func (w wide) int64() int64 {
	if w.hi != 0 || w.lo > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(w.lo)
}

func nanoCores(cpu float64) int64 { return api.NanoCPU(cpu) }

// placed reports whether t counts in its worker's allocation.
func placed(t *api.Task) bool {
	return t.Worker != "" && (t.State == api.Scheduled || t.State == api.Running)
}

// allocLocked counts t in (sign 1) or out of (sign -1) its worker's
// allocation, if it is placed.
func (f *FSM) allocLocked(t *api.Task, sign int) {
	if t == nil || !placed(t) {
		return
	}
	a := f.alloc[t.Worker]
	if a == nil {
		if sign < 0 {
			return // never counted in
		}
		a = &allocation{ids: make(map[uuid.UUID]struct{})}
		f.alloc[t.Worker] = a
	}
	if sign > 0 {
		a.nanoCPU += nanoCores(t.Cpu)
		a.mem.add(t.Memory)
		a.disk.add(t.Disk)
		a.ids[t.ID] = struct{}{}
		if t.Service != "" {
			if a.perService == nil {
				a.perService = map[string]int{}
			}
			a.perService[t.Service]++
		}
		return
	}
	a.nanoCPU -= nanoCores(t.Cpu)
	a.mem.sub(t.Memory)
	a.disk.sub(t.Disk)
	delete(a.ids, t.ID)
	if t.Service != "" {
		if a.perService[t.Service]--; a.perService[t.Service] <= 0 {
			delete(a.perService, t.Service)
		}
	}
	if len(a.ids) == 0 {
		delete(f.alloc, t.Worker)
	}
}

// rebuildLocked recomputes the allocations from the stored tasks (Restore).
func (f *FSM) rebuildAllocLocked() {
	f.alloc = make(map[string]*allocation)
	for id := range f.live {
		f.allocLocked(f.tasks[id], 1)
	}
}

// fill writes the allocation into n.
func (a *allocation) fill(n *api.Node) {
	if a == nil {
		return
	}
	n.AllocatedCpu = float64(a.nanoCPU) / 1e9
	n.AllocatedMemory = a.mem.int64()
	n.AllocatedDisk = a.disk.int64()
	n.TaskCount = len(a.ids)
	if len(a.perService) > 0 {
		n.ServiceTasks = make(map[string]int, len(a.perService))
		for s, c := range a.perService {
			n.ServiceTasks[s] = c
		}
	}
}
