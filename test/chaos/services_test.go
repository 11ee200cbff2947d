package chaos

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// svcOp builds a recorded service operation, [call, ret] on the
// Recorder's clock.
func svcOp(c int, kind Kind, name string, count int, version uint64, call, ret int64, outcome Outcome) Op {
	return Op{Client: c, Kind: kind, Service: name, Count: count, Version: version, Call: call, Return: ret, Outcome: outcome}
}

// svc is a service at version v whose history holds versions 1..newest.
func svc(name string, count int, v, newest uint64) api.Service {
	s := api.Service{Name: name, Count: count, Version: v, Task: api.Task{Image: "cube-echo:latest"}}
	for i := uint64(1); i <= newest; i++ {
		s.History = append(s.History, api.ServiceVersion{Version: i})
	}
	return s
}

// halted returns s with its rollout from the version before to its
// current one failed, with no version to roll back to.
func halted(s api.Service) api.Service {
	s.Rollout = &api.Rollout{From: s.Version - 1, To: s.Version, State: api.RolloutFailed, Reason: "task web.3 of version 2 failed"}
	return s
}

// rolling returns s with its rollout to its current version running.
func rolling(s api.Service) api.Service {
	s.Rollout = &api.Rollout{From: s.Version - 1, To: s.Version, State: api.RolloutRunning}
	return s
}

// svcTasks returns n Running tasks of the service's version v in slots
// 1..n.
func svcTasks(name string, v uint64, n int) []api.Task {
	var out []api.Task
	for i := 1; i <= n; i++ {
		out = append(out, api.Task{ID: uuid.NewSHA1(uuid.Nil, fmt.Appendf(nil, "%s/%d/%d", name, v, i)), Name: fmt.Sprintf("%s.%d", name, i),
			Image: "cube-echo:latest", Service: name, ServiceVersion: v, DesiredState: api.Running, State: api.Running, RestartPolicy: "always"})
	}
	return out
}

// TestCheck_DoctoredServices feeds doctored final states and histories of
// services to Check: each defect is caught by the service checks (and by
// no other check), and the correct runs pass.
func TestCheck_DoctoredServices(t *testing.T) {
	create := svcOp(0, SvcCreate, "web", 3, 1, 0, 10, OK)
	update := svcOp(1, SvcUpdate, "web", 3, 2, 20, 30, OK)
	v1 := svcTasks("web", 1, 3)
	v2 := svcTasks("web", 2, 3)
	stopped := v1[0]
	stopped.DesiredState, stopped.State = api.Completed, api.Completed
	tests := []struct {
		name     string
		ops      []Op
		services []api.Service
		final    []api.Task
		running  map[string]int // nil: what a correct cluster runs for final
		want     []string       // failed checks
		wantLine string         // a violation line must contain it
	}{
		// Defects.
		{
			name: "2 tasks for Count 3", ops: []Op{create},
			services: []api.Service{svc("web", 3, 1, 1)}, final: v1[:2],
			want: []string{"service state violations"}, wantLine: "service web: 2 live task(s), want Count 3",
		},
		{
			name: "4 tasks for Count 3", ops: []Op{create},
			services: []api.Service{svc("web", 3, 1, 1)}, final: append(slices.Clone(v1), svcTasks("web", 1, 4)[3]),
			want: []string{"service state violations"}, wantLine: "4 live task(s), want Count 3",
		},
		{
			name: "two versions", ops: []Op{create, update},
			services: []api.Service{svc("web", 3, 2, 2)}, final: append(slices.Clone(v2[:2]), v1[2]),
			want: []string{"service state violations"}, wantLine: "live tasks of 2 versions [1 2]",
		},
		{
			name: "all tasks of an old version", ops: []Op{create, update},
			services: []api.Service{svc("web", 3, 2, 2)}, final: v1,
			want: []string{"service state violations"}, wantLine: "is of version 1, the service's is 2",
		},
		{
			name: "a task in two containers", ops: []Op{create},
			services: []api.Service{svc("web", 3, 1, 1)}, final: v1,
			running: map[string]int{v1[0].ID.String(): 2, v1[1].ID.String(): 1, v1[2].ID.String(): 1},
			want:    []string{"duplicates", "service state violations"}, wantLine: "runs in 2 containers",
		},
		{
			name: "lost acknowledged service", ops: []Op{create},
			services: nil, final: nil,
			want: []string{"lost service changes"}, wantLine: "service web: lost: its service-create",
		},
		{
			name: "lost acknowledged scale", ops: []Op{svcOp(0, SvcCreate, "web", 3, 0, 0, 10, Unknown), svcOp(1, SvcScale, "web", 2, 1, 20, 30, OK)},
			services: nil, final: nil,
			want: []string{"lost service changes"}, wantLine: "lost: its service-scale",
		},
		{
			name: "lost acknowledged update", ops: []Op{create, update},
			services: []api.Service{svc("web", 3, 1, 1)}, final: v1,
			want: []string{"lost service changes"}, wantLine: "lost update: version 2 was acknowledged, but the service's newest version is 1",
		},
		{
			name: "resurrected after an acknowledged delete", ops: []Op{create, svcOp(1, SvcDelete, "web", 0, 0, 20, 30, OK)},
			services: []api.Service{svc("web", 3, 1, 1)}, final: v1,
			want: []string{"lost service changes"}, wantLine: "resurrected",
		},
		{
			name: "a deleted service's task still to run", ops: []Op{create, svcOp(1, SvcDelete, "web", 0, 0, 20, 30, OK)},
			final: v1[:1],
			want:  []string{"service state violations"}, wantLine: "service web does not exist, but its task web.1",
		},
		{
			name: "a deleted service's container still runs", ops: []Op{create, svcOp(1, SvcDelete, "web", 0, 0, 20, 30, OK)},
			final: []api.Task{stopped}, running: map[string]int{stopped.ID.String(): 1},
			want: []string{"orphans", "service state violations"}, wantLine: "runs in 1 container(s)",
		},
		{
			name: "a halted rollout with fewer tasks than Count", ops: []Op{create, update},
			services: []api.Service{halted(svc("web", 3, 2, 2))}, final: append(slices.Clone(v2[:1]), v1[1]),
			want: []string{"service state violations"}, wantLine: "service web: 2 live task(s), want Count 3",
		},
		{
			name: "a running rollout that never ends", ops: []Op{create, update},
			services: []api.Service{rolling(svc("web", 3, 2, 2))}, final: append(slices.Clone(v2[:1]), v1[1:]...),
			want: []string{"service state violations"}, wantLine: "live tasks of 2 versions [1 2] (rollout 1→2 running, 0 replaced)",
		},
		// Correct runs.
		{
			name: "halted: the rollout failed with no healthy version to go back to", ops: []Op{create, update},
			services: []api.Service{halted(svc("web", 3, 2, 2))}, final: append(slices.Clone(v2[:1]), v1[1:]...),
		},
		{
			name: "settled service", ops: []Op{create, update, svcOp(2, SvcScale, "web", 2, 2, 40, 50, OK)},
			services: []api.Service{svc("web", 2, 2, 2)}, final: append(slices.Clone(v2[:2]), stopped),
		},
		{
			name: "rolled back: an older version current, the newer in the history", ops: []Op{create, update},
			services: []api.Service{svc("web", 3, 1, 2)}, final: v1,
		},
		{
			name: "deleted, its stopped tasks kept", ops: []Op{create, svcOp(1, SvcDelete, "web", 0, 0, 20, 30, OK)},
			final: []api.Task{stopped},
		},
		{
			name: "absent after an unknown delete", ops: []Op{create, update, svcOp(1, SvcDelete, "web", 0, 0, 5, 8, Unknown)},
		},
		{
			name: "absent after a delete concurrent with the acknowledged update", ops: []Op{create, update, svcOp(2, SvcDelete, "web", 0, 0, 25, 40, OK)},
		},
		{
			name: "back after an acknowledged delete, made again by an unknown create", ops: []Op{create, svcOp(1, SvcDelete, "web", 0, 0, 20, 30, OK), svcOp(0, SvcCreate, "web", 3, 0, 5, 12, Unknown)},
			services: []api.Service{svc("web", 3, 1, 1)}, final: v1,
		},
		{
			name: "failed operations promise nothing", ops: []Op{svcOp(0, SvcCreate, "api", 1, 0, 0, 10, Fail), svcOp(0, SvcScale, "web", 1, 0, 0, 10, Fail)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			running := tt.running
			if running == nil {
				running = runningFor(tt.final)
			}
			r, _ := Check(Input{Ops: tt.ops, Final: tt.final, Running: running, Services: tt.services, Timeout: 10 * time.Second})
			if got := checkNames(r); !slices.Equal(got, tt.want) {
				t.Fatalf("failed checks %v, want %v\nservice state: %q\nlost: %q", got, tt.want, r.ServiceState, r.LostServices)
			}
			if tt.wantLine != "" {
				if all := strings.Join(append(slices.Clone(r.ServiceState), r.LostServices...), "\n"); !strings.Contains(all, tt.wantLine) {
					t.Fatalf("no violation says %q:\n%s", tt.wantLine, all)
				}
			}
			tab := r.Table(nil, time.Second)
			for _, row := range []string{"operations: service-create", "service state violations after convergence (must be 0)", "lost service changes (must be 0)"} {
				if !strings.Contains(tab, row) {
					t.Fatalf("the table has no row %q:\n%s", row, tab)
				}
			}
		})
	}
}

// The service operations are left out of the registry's history: they name
// no task, and porcupine would check them as operations on the zero ID.
func TestOperations_LeaveServicesOut(t *testing.T) {
	ops := []Op{svcOp(0, SvcCreate, "web", 1, 1, 0, 10, OK), svcOp(1, SvcDelete, "web", 0, 0, 5, 20, Unknown), submitOp(0, idA, 30, 40, true)}
	if h := operations(ops); len(h) != 1 {
		t.Fatalf("%d operations in the registry history, want 1: %+v", len(h), h)
	}
}

func TestRecorder_ServiceOps(t *testing.T) {
	rec := NewRecorder()
	rec.BeginService(0, SvcCreate, "web", 2).EndService(api.ServiceStatus{Service: api.Service{Name: "web", Version: 1}}, nil)
	rec.BeginService(1, SvcScale, "gone", 3).EndService(api.ServiceStatus{}, fmt.Errorf("scale service gone: %w", api.ErrNotFound))
	rec.BeginService(2, SvcUpdate, "web", 2).EndService(api.ServiceStatus{}, fmt.Errorf("put service web: %w", api.ErrUnavailable))
	ops := rec.Ops()
	if ops[0].Outcome != OK || ops[0].Version != 1 || ops[0].Service != "web" || ops[0].Count != 2 {
		t.Errorf("create: %+v", ops[0])
	}
	if ops[1].Outcome != Fail || ops[1].State != Absent {
		t.Errorf("scale of a missing service: %+v", ops[1])
	}
	if ops[2].Outcome != Unknown {
		t.Errorf("update answered 503: %+v", ops[2])
	}
}
