package test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// Workers started with --label are seen with their labels (GET /nodes, cube
// node); a task constrained to a label runs on the worker carrying it, one
// that no worker meets waits Pending with the reason, and the tasks of one
// service spread over the workers although the scheduler's own order (the
// emptiest worker) would stack them.
func TestLabels_ConstraintsAndSpread(t *testing.T) {
	start := time.Now()
	var c *ProcCluster
	t.Cleanup(func() {
		if c != nil {
			sweepContainers(t, c.Prefix)
		}
	})
	c = NewProcClusterWith(t, 3, 3, ProcOptions{WorkerFlags: func(n int) []string {
		switch n {
		case 1:
			return []string{"--label", "zone=a", "--label", "disk=ssd"}
		case 2:
			return []string{"--label", "zone=b"}
		}
		return nil // w3: no labels
	}})
	t.Logf("cluster of 3 managers and 3 workers ready in %s", recSince(start))
	r := &recRT{t: t, c: c, cl: c.Client()}
	wa, wb, w3 := c.Workers[0].Name, c.Workers[1].Name, c.Workers[2].Name

	// The leader records the labels each worker gossips.
	want := map[string]string{wa: "disk=ssd,zone=a", wb: "zone=b", w3: ""}
	r.waitNodes(func(nodes []api.Node) error {
		for _, n := range nodes {
			if w, ok := want[n.Name]; ok && api.FormatLabels(n.Labels) != w {
				return fmt.Errorf("worker %s recorded with labels %q, want %q", n.Name, api.FormatLabels(n.Labels), w)
			}
		}
		return nil
	})
	out, err := c.Cube("node")
	if err != nil || !strings.HasSuffix(lineOf(out, wa), "disk=ssd,zone=a") || !strings.HasSuffix(lineOf(out, w3), "-") {
		t.Fatalf("cube node does not show the labels: %v\n%s", err, out)
	}

	// A constrained task runs on the worker meeting it.
	inB := echoTask("in-zone-b")
	inB.Constraints = []string{"zone==b"}
	idB := r.submit(inB)
	if got := r.waitRunning(idB)[idB]; got.Worker != wb {
		t.Fatalf("task constrained to zone==b runs on %s, want %s", got.Worker, wb)
	}

	// One that no worker meets waits with the reason.
	inC := echoTask("in-zone-c")
	inC.Constraints = []string{"zone==c"}
	idC := r.submit(inC)
	wantReason := "no worker meets zone==c (3 alive workers: no zone ×1, zone=a ×1, zone=b ×1)"
	r.waitTask(idC, recDeadline, func(x api.Task) error {
		if x.State != api.Pending || x.Reason != wantReason {
			return fmt.Errorf("%s on %q: %q, want Pending: %q", x.State, x.Worker, x.Reason, wantReason)
		}
		return nil
	})
	out, err = c.Cube("status")
	if err != nil || !strings.Contains(out, wantReason) {
		t.Fatalf("cube status does not show the reason: %v\n%s", err, out)
	}

	// A bad constraint is refused on submit, naming the field and entry.
	bad := echoTask("bad")
	bad.Prefer = []string{"zone=a"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := r.cl.SubmitTask(ctx, api.TaskEvent{ID: uuid.New(), State: api.Running, Timestamp: time.Now().UTC(), Task: bad}); err == nil ||
		!strings.Contains(err.Error(), `Prefer[0]: constraint "zone=a" must be key==value or key!=value`) {
		t.Fatalf("a bad Prefer entry: %v, want a 400 naming it", err)
	}

	// Load the disk=ssd worker with two tasks, so that the emptiest worker
	// is the unlabelled one: E-PVM alone would put two of the service's
	// three tasks there.
	var filler []uuid.UUID
	for i := range 2 {
		f := echoTask(fmt.Sprintf("filler-%d", i))
		f.Constraints = []string{"disk==ssd"}
		filler = append(filler, r.submit(f))
	}
	for id, x := range r.waitRunning(filler...) {
		if x.Worker != wa {
			t.Fatalf("filler %s runs on %s, want %s", id, x.Worker, wa)
		}
	}
	// A service of three: its tasks carry Service "web" (set by the
	// leader; a task submitted on its own cannot claim a service).
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	if _, err := r.cl.CreateService(cctx, api.Service{Name: "web", Count: 3, Task: echoTask("web")}); err != nil {
		t.Fatalf("create service web: %v", err)
	}
	var on []string
	testkit.Eventually(t, 90*time.Second, func() error {
		lctx, lcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer lcancel()
		tasks, err := r.cl.Tasks(lctx, true)
		if err != nil {
			return err
		}
		on = on[:0]
		for _, x := range tasks {
			if x.Service == "web" && x.DesiredState == api.Running {
				if x.State != api.Running {
					return fmt.Errorf("task %s of service web is %s", x.Name, x.State)
				}
				on = append(on, x.Worker)
			}
		}
		if len(on) != 3 {
			return fmt.Errorf("%d tasks of service web, want 3", len(on))
		}
		return nil
	})
	sort.Strings(on)
	if wantOn := []string{wa, wb, w3}; strings.Join(on, ",") != strings.Join(wantOn, ",") {
		t.Fatalf("the three tasks of service web run on %v, want one on each of %v", on, wantOn)
	}
	// The waiting task still waits, and every container is accounted for.
	if x := r.task(idC); x.State != api.Pending {
		t.Fatalf("task constrained to zone==c is %s on %q", x.State, x.Worker)
	}
	r.converged()
}

// waitNodes polls GET /nodes until cond accepts the workers.
func (r *recRT) waitNodes(cond func([]api.Node) error) {
	r.t.Helper()
	deadline := time.Now().Add(recDeadline)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		nodes, err := r.cl.Nodes(ctx, true)
		cancel()
		if err == nil {
			if err = cond(nodes); err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("nodes: after %s: %v", recDeadline, err)
		}
		time.Sleep(recPoll)
	}
}
