package chaos

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/manager"
	"github.com/google/uuid"
)

var (
	idA = uuid.MustParse("aaaaaaaa-0000-4000-8000-000000000001")
	idB = uuid.MustParse("bbbbbbbb-0000-4000-8000-000000000002")
)

// Builders of recorded ops, [call, ret] on the Recorder's clock.
func submitOp(c int, id uuid.UUID, call, ret int64, created bool) Op {
	return Op{Client: c, Kind: Submit, TaskID: id, Call: call, Return: ret, Outcome: OK, Created: created}
}

func submitUnknown(c int, id uuid.UUID, call, ret int64) Op {
	return Op{Client: c, Kind: Submit, TaskID: id, Call: call, Return: ret, Outcome: Unknown, Err: "context deadline exceeded"}
}

func stopOp(c int, id uuid.UUID, call, ret int64) Op {
	return Op{Client: c, Kind: Stop, TaskID: id, Call: call, Return: ret, Outcome: OK}
}

func stopEnded(c int, id uuid.UUID, call, ret int64) Op {
	return Op{Client: c, Kind: Stop, TaskID: id, Call: call, Return: ret, Outcome: OK, Ended: true}
}

func stopUnknown(c int, id uuid.UUID, call, ret int64) Op {
	return Op{Client: c, Kind: Stop, TaskID: id, Call: call, Return: ret, Outcome: Unknown}
}

func stop404(c int, id uuid.UUID, call, ret int64) Op {
	return Op{Client: c, Kind: Stop, TaskID: id, Call: call, Return: ret, Outcome: Fail, State: Absent}
}

func readOp(c int, id uuid.UUID, call, ret int64, s TaskState) Op {
	return Op{Client: c, Kind: Read, TaskID: id, Call: call, Return: ret, Outcome: OK, State: s}
}

func task(id uuid.UUID, desired, state api.State) api.Task {
	return api.Task{ID: id, Name: "echo", Image: "cube-echo:latest", DesiredState: desired, State: state}
}

// runningFor returns the container counts a correct cluster shows for final:
// one container per task that should run.
func runningFor(final []api.Task) map[string]int {
	m := make(map[string]int)
	for _, t := range final {
		if shouldRun(t) {
			m[t.ID.String()] = 1
		}
	}
	return m
}

// checkNames returns the names of the failed checks, without their counts.
func checkNames(r Report) []string {
	var names []string
	for _, f := range r.Failed() {
		name, _, _ := strings.Cut(f, ":")
		names = append(names, name)
	}
	return names
}

// TestCheck_Doctored feeds doctored runs to Check and asserts that each
// defect is caught by the check meant for it, and only by it; the cases
// with no want are correct runs that must pass.
func TestCheck_Doctored(t *testing.T) {
	active := task(idA, api.Running, api.Running)
	stopped := task(idA, api.Completed, api.Completed)
	tests := []struct {
		name    string
		ops     []Op
		final   []api.Task
		running map[string]int // nil: what a correct cluster runs for final
		states  map[string][]api.Task
		leaders []LeaderObs
		logs    map[string]string
		want    []string // failed checks; "linearizability" means Illegal
	}{
		// Defects that must be caught.
		{
			name:  "lost acknowledged submit",
			ops:   []Op{submitOp(0, idA, 0, 10, true), submitOp(1, idB, 5, 15, true)},
			final: []api.Task{task(idB, api.Running, api.Running)},
			want:  []string{"lost"},
		},
		{
			name:  "lost submit acknowledged with 200",
			ops:   []Op{submitOp(0, idA, 0, 10, false)},
			final: nil,
			want:  []string{"lost"},
		},
		{
			name:  "stale read: absent after a completed acknowledged submit",
			ops:   []Op{submitOp(0, idA, 0, 10, true), readOp(1, idA, 20, 30, Absent)},
			final: []api.Task{active},
			want:  []string{"linearizability"},
		},
		{
			name:  "stale read: active after a completed stop",
			ops:   []Op{submitOp(0, idA, 0, 10, true), stopOp(0, idA, 20, 30), readOp(1, idA, 40, 50, Active)},
			final: []api.Task{stopped},
			want:  []string{"linearizability"},
		},
		{
			name:  "task disappears after an unknown submit was seen",
			ops:   []Op{submitUnknown(0, idA, 0, 10), readOp(1, idA, 20, 30, Active), readOp(2, idA, 40, 50, Absent)},
			final: []api.Task{active},
			want:  []string{"linearizability"},
		},
		{
			name:  "created twice",
			ops:   []Op{submitOp(0, idA, 0, 10, true), submitOp(1, idA, 20, 30, true)},
			final: []api.Task{active},
			want:  []string{"linearizability"},
		},
		{
			name:  "stop answered 404 after an acknowledged submit",
			ops:   []Op{submitOp(0, idA, 0, 10, true), stop404(1, idA, 20, 30)},
			final: []api.Task{active},
			want:  []string{"linearizability"},
		},
		{
			name:  "stop acknowledged, task still active",
			ops:   []Op{submitOp(0, idA, 0, 10, true), stopOp(1, idA, 20, 30)},
			final: []api.Task{active},
			want:  []string{"ineffective stops"},
		},
		{
			name:    "duplicate running instance",
			ops:     []Op{submitOp(0, idA, 0, 10, true)},
			final:   []api.Task{active},
			running: map[string]int{idA.String(): 2},
			want:    []string{"duplicates"},
		},
		{
			name:    "task that should run has no container",
			ops:     []Op{submitOp(0, idA, 0, 10, true)},
			final:   []api.Task{task(idA, api.Running, api.Pending)},
			running: map[string]int{},
			want:    []string{"duplicates"},
		},
		{
			name:    "orphan container of a stopped task",
			ops:     []Op{submitOp(0, idA, 0, 10, true), stopOp(0, idA, 20, 30)},
			final:   []api.Task{stopped},
			running: map[string]int{idA.String(): 1},
			want:    []string{"orphans"},
		},
		{
			name:    "orphan container of an unknown task",
			ops:     []Op{submitOp(0, idA, 0, 10, true)},
			final:   []api.Task{active},
			running: map[string]int{idA.String(): 1, idB.String(): 1},
			want:    []string{"orphans"},
		},
		{
			name:  "two leaders in one term",
			ops:   []Op{submitOp(0, idA, 0, 10, true)},
			final: []api.Task{active},
			leaders: []LeaderObs{
				{Manager: "m1", Term: 2, Leader: true},
				{Manager: "m2", Term: 3, Leader: true},
				{Manager: "m3", Term: 3, Leader: true},
			},
			want: []string{"terms with several leaders"},
		},
		{
			name:   "managers diverge",
			ops:    []Op{submitOp(0, idA, 0, 10, true)},
			final:  []api.Task{active},
			states: map[string][]api.Task{"m1": {active}, "m2": {active}, "m3": {task(idA, api.Running, api.Scheduled)}},
			want:   []string{"divergent managers"},
		},
		{
			name:  "panic in a worker log",
			ops:   []Op{submitOp(0, idA, 0, 10, true)},
			final: []api.Task{active},
			logs: map[string]string{
				"m1": "2025-01-01T00:00:00Z [INFO]  manager: leader elected\n",
				"w2": "goroutine 1 [running]:\npanic: runtime error: index out of range [3] with length 3\n",
			},
			want: []string{"panics"},
		},
		{
			name:  "data race report",
			ops:   []Op{submitOp(0, idA, 0, 10, true)},
			final: []api.Task{active},
			logs:  map[string]string{"m2": "==================\nWARNING: DATA RACE\nWrite at 0x00c000 by goroutine 7:\n"},
			want:  []string{"panics"},
		},
		{
			name:  "a leader found a placement stopped though the task was to run",
			ops:   []Op{submitOp(0, idA, 0, 10, true)},
			final: []api.Task{active},
			logs: map[string]string{"m1": "2025-01-01T00:00:00Z [ERROR] manager: " + manager.StoppedUnaskedLog +
				"; running it again, not counted: task_id=x worker=w1 generation=2\n"},
			want: []string{"stops nobody asked for"},
		},

		// Correct runs that must pass.
		{
			name: "concurrent submit and reads",
			ops: []Op{
				readOp(1, idA, 0, 20, Absent),
				submitOp(0, idA, 10, 50, true),
				readOp(2, idA, 30, 40, Active),
				readOp(1, idA, 60, 70, Active),
			},
			final: []api.Task{active},
		},
		{
			name: "reads overlapping a stop see either state",
			ops: []Op{
				submitOp(0, idA, 0, 10, true),
				stopOp(0, idA, 20, 60),
				readOp(1, idA, 30, 40, Active),
				readOp(2, idA, 45, 55, Stopped),
				readOp(1, idA, 70, 80, Stopped),
			},
			final: []api.Task{stopped},
		},
		{
			name:  "unknown submit applied after its client gave up",
			ops:   []Op{submitUnknown(0, idA, 0, 10), readOp(1, idA, 20, 30, Absent), readOp(1, idA, 40, 50, Active)},
			final: []api.Task{active},
		},
		{
			name:  "unknown submit never applied",
			ops:   []Op{submitUnknown(0, idA, 0, 10), readOp(1, idA, 20, 30, Absent)},
			final: nil,
		},
		{
			name: "resubmits answered 200",
			ops: []Op{
				submitOp(0, idA, 0, 10, true),
				submitOp(0, idA, 20, 30, false),
				submitOp(1, idA, 25, 35, false),
				readOp(2, idA, 40, 50, Active),
			},
			final: []api.Task{active},
		},
		{
			name:  "200 after a retried attempt created the task",
			ops:   []Op{readOp(1, idA, 0, 5, Absent), submitOp(0, idA, 10, 20, false), readOp(1, idA, 30, 40, Active)},
			final: []api.Task{active},
		},
		{
			name: "idempotent stop",
			ops: []Op{
				submitOp(0, idA, 0, 10, true),
				stopOp(0, idA, 20, 30),
				stopOp(1, idA, 40, 50),
				stopEnded(2, idA, 60, 70),
				readOp(0, idA, 80, 90, Stopped),
				submitOp(1, idA, 100, 110, false),
			},
			final: []api.Task{stopped},
		},
		{
			name: "409 after a retried attempt stopped the task",
			ops: []Op{
				submitOp(0, idA, 0, 10, true),
				stopEnded(0, idA, 20, 30),
				readOp(1, idA, 40, 50, Stopped),
			},
			final: []api.Task{stopped},
		},
		{
			name: "409 on a task the cluster gave up on",
			ops: []Op{
				submitOp(0, idA, 0, 10, true),
				stopEnded(1, idA, 20, 30),
				readOp(2, idA, 40, 50, Active),
			},
			final: []api.Task{task(idA, api.Failed, api.Failed)},
		},
		{
			name: "unknown stop, either way",
			ops: []Op{
				submitOp(0, idA, 0, 10, true), stopUnknown(0, idA, 20, 30), readOp(1, idA, 40, 50, Active),
				submitOp(0, idB, 0, 10, true), stopUnknown(0, idB, 20, 30), readOp(1, idB, 40, 50, Stopped),
			},
			final: []api.Task{active, task(idB, api.Completed, api.Running)},
		},
		{
			name:  "stop answered 404 before the submit",
			ops:   []Op{stop404(0, idA, 0, 10), submitOp(1, idA, 20, 30, true)},
			final: []api.Task{active},
		},
		{
			name: "failed operations have no effect",
			ops: []Op{
				{Client: 0, Kind: Submit, TaskID: idB, Call: 0, Return: 10, Outcome: Fail, Err: "invalid task (HTTP 400)"},
				{Client: 1, Kind: Read, TaskID: idB, Call: 20, Return: 30, Outcome: Fail, Err: "unavailable"},
				readOp(2, idB, 40, 50, Absent),
			},
			final: nil,
		},
		{
			name: "one leader per term, equal managers, quiet logs",
			ops:  []Op{submitOp(0, idA, 0, 10, true)},
			leaders: []LeaderObs{
				{Manager: "m1", Term: 2, Leader: true},
				{Manager: "m1", Term: 2, Leader: true},
				{Manager: "m2", Term: 2, Leader: false},
				{Manager: "m2", Term: 3, Leader: true},
			},
			final:  []api.Task{active},
			states: map[string][]api.Task{"m1": {active}, "m2": {active}, "m3": {active}},
			logs:   map[string]string{"m1": "[INFO]  manager: task stopped: task_id=x reason=\"panic button\"\n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			running := tt.running
			if running == nil {
				running = runningFor(tt.final)
			}
			in := Input{Ops: tt.ops, Final: tt.final, Running: running, States: tt.states, Leaders: tt.leaders, Logs: tt.logs, Timeout: 10 * time.Second}
			r, _ := Check(in)
			got := checkNames(r)
			wantLin := porcupine.Ok
			if slices.Contains(tt.want, "linearizability") {
				wantLin = porcupine.Illegal
			}
			if !slices.Equal(got, tt.want) || r.Linearizable != wantLin || r.OK() != (len(tt.want) == 0) {
				t.Errorf("ops %+v\nfinal %+v\ngot failed checks %q (linearizable %s, OK %t), want %q (linearizable %s)",
					tt.ops, tt.final, got, r.Linearizable, r.OK(), tt.want, wantLin)
			}
		})
	}
}

// TestCheckLinearizable_TimeoutIsInconclusive builds a history whose
// violation porcupine can only prove by trying every subset of 40
// concurrent unknown stops (2^40 orders), so a short timeout must come back
// Unknown, and a Report holding it must not pass.
func TestCheckLinearizable_TimeoutIsInconclusive(t *testing.T) {
	ops := []Op{submitOp(0, idA, 0, 1, true)}
	for i := range 40 {
		ops = append(ops, stopUnknown(1+i, idA, int64(2+i), int64(3+i)))
	}
	ops = append(ops, readOp(41, idA, 100, 101, Absent))

	start := time.Now()
	res, _ := CheckLinearizable(ops, 100*time.Millisecond)
	if res != porcupine.Unknown {
		t.Fatalf("CheckLinearizable with a 100ms timeout = %s after %s, want %s", res, time.Since(start), porcupine.Unknown)
	}
	r := Report{Linearizable: res}
	if r.OK() {
		t.Errorf("Report{Linearizable: Unknown}.OK() = true, want false")
	}
	if f := r.Failed(); len(f) != 1 || !strings.Contains(f[0], "inconclusive") {
		t.Errorf("Failed() = %q, want one entry saying inconclusive", f)
	}
}

// TestReport_ZeroValueFails guards the default: a report no check filled in
// is not a pass.
func TestReport_ZeroValueFails(t *testing.T) {
	if (Report{}).OK() {
		t.Error("Report{}.OK() = true, want false")
	}
}

func TestOperations_UnknownWritesReturnAtInfinity(t *testing.T) {
	ops := []Op{
		submitUnknown(0, idA, 5, 10),
		stopUnknown(0, idA, 20, 30),
		{Client: 0, Kind: Read, TaskID: idA, Call: 40, Return: 50, Outcome: Unknown},
		stop404(1, idB, 0, 1),
		{Client: 1, Kind: Stop, TaskID: idB, Call: 2, Return: 3, Outcome: Fail, Err: "bad request"},
	}
	hist := operations(ops)
	if len(hist) != 3 {
		t.Fatalf("operations kept %d ops, want 3 (two unknown writes, the 404 stop): %+v", len(hist), hist)
	}
	for i, want := range []int64{math.MaxInt64, math.MaxInt64, 1} {
		if hist[i].Return != want {
			t.Errorf("op %d (%v) Return = %d, want %d", i, hist[i].Input, hist[i].Return, want)
		}
	}
}

func TestCheckSameState_NamesTheOddManager(t *testing.T) {
	a, b := task(idA, api.Running, api.Running), task(idB, api.Running, api.Running)
	states := map[string][]api.Task{"m1": {b, a}, "m2": {a, b}, "m3": {a}}
	got := CheckSameState(states)
	if len(got) != 1 || !strings.HasPrefix(got[0], "m3 differs from m1") || !strings.Contains(got[0], idB.String()+" missing") {
		t.Errorf("CheckSameState(%v) = %q, want one line about m3 missing %s", states, got, idB)
	}
	if got := CheckSameState(map[string][]api.Task{"m1": nil, "m2": {}}); got != nil {
		t.Errorf("CheckSameState of a nil and an empty list = %q, want none", got)
	}
}

func TestCheckRunningOnce_Labels(t *testing.T) {
	final := []api.Task{
		task(idA, api.Running, api.Running),
		task(idB, api.Failed, api.Failed),
	}
	running := map[string]int{strings.ToUpper(idA.String()): 1, "not-a-uuid": 1, idB.String(): 0}
	dups, orphans := CheckRunningOnce(final, running)
	if len(dups) != 0 || !slices.Equal(orphans, []string{"not-a-uuid"}) {
		t.Errorf("CheckRunningOnce(%v, %v) = %v, %q; want no duplicates, orphan not-a-uuid", final, running, dups, orphans)
	}
}

func TestObserveLeader(t *testing.T) {
	at := time.Unix(100, 0)
	tests := []struct {
		name string
		info api.ClusterInfo
		want bool
	}{
		{"leader", api.ClusterInfo{Self: "m1", LeaderID: "m1", Term: 4}, true},
		{"follower", api.ClusterInfo{Self: "m2", LeaderID: "m1", Term: 4}, false},
		{"no leader", api.ClusterInfo{Self: "m2", Term: 4}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ObserveLeader(tt.info, at)
			if got.Leader != tt.want || got.Manager != tt.info.Self || got.Term != 4 || !got.At.Equal(at) {
				t.Errorf("ObserveLeader(%+v) = %+v, want Leader %t", tt.info, got, tt.want)
			}
		})
	}
}

func TestReport_Table(t *testing.T) {
	ops := []Op{submitOp(0, idA, 0, 10, true), submitUnknown(1, idB, 0, 10), readOp(2, idA, 20, 30, Active)}
	r, _ := Check(Input{Ops: ops, Final: []api.Task{task(idA, api.Running, api.Running)}, Running: map[string]int{idA.String(): 1}})
	out := r.Table(map[string]int{"kill-leader": 3, "partition": 2}, 4200*time.Millisecond)
	for _, want := range []string{
		"| faults: kill-leader", "| faults: total ", "| 5 ",
		"| operations: submit", "2 (ok 1, fail 0, unknown 1)",
		"| acknowledged submissions", "| lost (must be 0)", "| duplicates after convergence (must be 0)",
		"| time to converge after last fault", "4.2s", "| verdict", "PASS",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("Table() lacks %q:\n%s", want, out)
		}
	}
	r.Lost = []uuid.UUID{idB}
	if out := r.Table(nil, 0); !strings.Contains(out, "FAIL: lost: 1") {
		t.Errorf("Table() of a report with a lost task lacks the failing verdict:\n%s", out)
	}
}

func TestWriteArtifacts(t *testing.T) {
	ops := []Op{submitOp(0, idA, 0, 10, true), readOp(1, idA, 20, 30, Absent), submitUnknown(2, idB, 5, 15)}
	res, info := CheckLinearizable(ops, 10*time.Second)
	if res != porcupine.Illegal {
		t.Fatalf("CheckLinearizable = %s, want %s", res, porcupine.Illegal)
	}
	dir := filepath.Join(t.TempDir(), "run")
	logs := map[string]string{"m1": "manager log\n", "../w1": "worker log\n"}
	if err := WriteArtifacts(dir, ops, info, logs); err != nil {
		t.Fatalf("WriteArtifacts: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "history.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back []Op
	if err := json.Unmarshal(b, &back); err != nil || !slices.Equal(back, ops) {
		t.Errorf("history.json = %s (err %v), want the ops %+v", b, err, ops)
	}
	html, err := os.ReadFile(filepath.Join(dir, "linearizability.html"))
	if err != nil || !strings.Contains(string(html), "submit(aaaaaaaa)") {
		t.Errorf("linearizability.html: err %v, want a visualisation naming submit(aaaaaaaa)", err)
	}
	for name, want := range map[string]string{"m1.log": "manager log\n", ".._w1.log": "worker log\n"} {
		if got, err := os.ReadFile(filepath.Join(dir, "logs", name)); err != nil || string(got) != want {
			t.Errorf("logs/%s = %q (err %v), want %q", name, got, err, want)
		}
	}
}
