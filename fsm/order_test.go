package fsm

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// refsInOrder (keys sorted) orders tasks exactly as
// sortTasks does: by submission, ties by ID, a zero or far time included.
func TestInOrder_SameOrderAsSortTasks(t *testing.T) {
	base := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	times := []time.Time{{}, base, base.Add(time.Nanosecond), base.Add(-time.Hour), time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2300, 1, 1, 0, 0, 0, 5, time.UTC), base.In(time.FixedZone("x", 3600))}
	r := rand.New(rand.NewPCG(1, 2))
	ts := make([]api.Task, 2000)
	for i := range ts {
		ts[i] = api.Task{ID: uuid.New(), Name: "t", SubmitTime: times[r.IntN(len(times))]}
	}
	want := slices.Clone(ts)
	sortTasks(want)
	ps := make([]*api.Task, len(ts))
	for i := range ts {
		ps[i] = &ts[i]
	}
	got := values(refsInOrder(ps))
	for i := range want {
		if got[i].ID != want[i].ID {
			t.Fatalf("position %d: %s (%s), want %s (%s)", i, got[i].ID, got[i].SubmitTime, want[i].ID, want[i].SubmitTime)
		}
	}
}

// sortTasks is the order of tasks, written plainly: by submission, ties
// by ID (byte order, the order of their text form).
func sortTasks(ts []api.Task) {
	slices.SortFunc(ts, func(a, b api.Task) int {
		if c := a.SubmitTime.Compare(b.SubmitTime); c != 0 {
			return c
		}
		return bytes.Compare(a.ID[:], b.ID[:])
	})
}
