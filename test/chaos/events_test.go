package chaos

import (
	"strings"
	"testing"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// evs builds a connection receiving the given indexes, each a change of a
// task derived from its index (the same index always carries the same task).
func evs(manager string, seq int, end string, idx ...uint64) EventConn {
	c := EventConn{Manager: manager, Seq: seq, End: end}
	for _, i := range idx {
		c.Changes = append(c.Changes, NewEventChange(api.Change{Index: i, Task: taskAt(i)}))
	}
	return c
}

func taskAt(i uint64) api.Task {
	id := uuid.UUID{}
	id[15] = byte(i % 7)
	return api.Task{ID: id, Name: "t", Generation: i}
}

func TestCheckEvents_CleanStreamsPass(t *testing.T) {
	conns := []EventConn{
		evs("m1", 1, "error: EOF", 3, 5, 8),
		evs("m1", 2, "open", 1, 3, 5, 8, 9, 12), // a restart replays from the start
		evs("m2", 1, "dropped", 5, 8, 9),
		evs("m2", 2, "open", 12),
	}
	if v := CheckEvents(conns); v != nil {
		t.Fatalf("clean streams: %v", v)
	}
	if s := SumEvents(conns); s.Conns != 4 || s.Changes != 13 {
		t.Fatalf("stats %+v", s)
	}
}

func TestCheckEvents_FindsEachViolation(t *testing.T) {
	other := NewEventChange(api.Change{Index: 5, Task: api.Task{ID: uuid.New(), Name: "other"}})
	changed := NewEventChange(api.Change{Index: 8, Task: func() api.Task { x := taskAt(8); x.State = api.Failed; return x }()})
	for _, tc := range []struct {
		name  string
		conns []EventConn
		want  string
	}{
		{"twice", []EventConn{evs("m1", 1, "open", 3, 5, 5, 8)}, "index 5 (task"},
		{"out of order", []EventConn{evs("m1", 1, "open", 3, 8, 5)}, "arrived after index 8"},
		{"gap", []EventConn{evs("m1", 1, "open", 3, 5, 8, 9), evs("m2", 1, "open", 3, 8, 9)}, "stream m2#1 (indexes 3…9, ended open): 1 change(s) other streams received are missing, first index 5"},
		{"gap in a dropped stream", []EventConn{evs("m1", 1, "open", 3, 5, 8, 9), evs("m2", 1, "dropped", 3, 9)}, "stream m2#1 (indexes 3…9, ended dropped): 2 change(s)"},
		{"different task at one index", []EventConn{evs("m1", 1, "open", 3, 5, 8), {Manager: "m2", Seq: 1, Changes: []EventChange{evs("m2", 1, "", 3).Changes[0], other, evs("m2", 1, "", 8).Changes[0]}}}, "stream m2#1 (indexes 3…8, ended ): 1 change(s) other streams received are missing, first index 5"},
		{"same task changed differently", []EventConn{evs("m1", 1, "open", 8), {Manager: "m2", Seq: 1, Changes: []EventChange{changed}}}, "index 8: stream m1#1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := CheckEvents(tc.conns)
			if len(v) == 0 || !strings.Contains(strings.Join(v, "\n"), tc.want) {
				t.Fatalf("violations %q, want one containing %q", v, tc.want)
			}
		})
	}
}

// One entry may change several tasks (DeleteService stops the service's
// tasks with it): each arrives as a change of the entry's index, and a
// connection may start or end in the middle of them.
func TestCheckEvents_SeveralTasksOfOneEntry(t *testing.T) {
	multi := func(manager string, seq int, idx ...uint64) EventConn {
		c := EventConn{Manager: manager, Seq: seq, End: "open"}
		for _, i := range idx {
			for k := range 3 {
				id := uuid.UUID{}
				id[0], id[15] = byte(k), byte(i)
				c.Changes = append(c.Changes, NewEventChange(api.Change{Index: i, Task: api.Task{ID: id, Name: "svc.1"}}))
			}
		}
		return c
	}
	full := multi("m1", 1, 3, 5, 8)
	late := multi("m2", 1, 3, 5, 8)
	late.Changes = late.Changes[2:] // subscribed between two changes of entry 3
	if v := CheckEvents([]EventConn{full, late}); v != nil {
		t.Fatalf("several tasks per entry: %v", v)
	}
	short := multi("m3", 1, 3, 5, 8)
	short.Changes = append(short.Changes[:4], short.Changes[5:]...) // one of entry 5's changes missing
	if v := CheckEvents([]EventConn{full, short}); len(v) != 1 || !strings.Contains(v[0], "stream m3#1 (indexes 3…8, ended open): 1 change(s)") {
		t.Fatalf("a missing change of a multi-task entry: %v", v)
	}
}

// Only what lies inside a connection's range counts: changes before its
// first index (it connected later) or after its last (it ended, or was
// dropped and told) are not gaps.
func TestCheckEvents_OutsideTheRangeIsNoGap(t *testing.T) {
	conns := []EventConn{
		evs("m1", 1, "open", 1, 2, 3, 4, 5, 6, 7),
		evs("m2", 1, "dropped", 3, 4, 5),
		evs("m2", 2, "open", 7),
	}
	if v := CheckEvents(conns); v != nil {
		t.Fatalf("%v", v)
	}
}

func TestReport_EventViolationsFailTheRun(t *testing.T) {
	r := Report{Linearizable: "Ok", Events: []string{"stream m1#1: …"}, EventStats: EventStats{Conns: 1, Changes: 2}}
	if r.OK() {
		t.Fatal("a run with an event stream violation passed")
	}
	if tab := r.Table(nil, 0); !strings.Contains(tab, "FAIL: event stream violations: 1") || !strings.Contains(tab, "1, 2, 0") {
		t.Fatalf("table:\n%s", tab)
	}
}
