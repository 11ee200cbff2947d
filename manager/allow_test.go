package manager

import (
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
)

// allow makes worker name allow the tokens (api.Allowances.Tokens), in
// gossip and in the replicated record, as a worker started with the
// matching --allow-* flags is seen.
func allow(h *harness, name string, tokens ...string) {
	h.t.Helper()
	h.gossip.mu.Lock()
	for i := range h.gossip.members {
		if h.gossip.members[i].Name == name {
			h.gossip.members[i].Meta.Allows = tokens
		}
	}
	h.gossip.mu.Unlock()
	n, ok := h.f.Worker(name)
	if !ok {
		h.t.Fatalf("no worker %s", name)
	}
	n.Allows = tokens
	h.seed(fsm.UpsertWorker{Node: n})
}

// refusedReason is what a worker that does not allow the host network
// reports (worker.refusal).
const refusedReason = api.ReasonNotAllowed + "worker w1 does not allow host-network tasks, which the task asks for in NetworkMode (start the worker with --allow-host-network)"

// refused seeds worker's report that it refused the task it was given.
func refused(h *harness, name, worker string) {
	h.t.Helper()
	rec := h.task(name)
	rec.State, rec.FinishTime, rec.Reason = api.Failed, time.Now().UTC(), refusedReason
	h.seed(fsm.ReportTask{Task: rec})
	h.record(worker, rec)
}

// Placement of tasks that ask for more than an ordinary container, and the
// reason when none can be placed.
func TestPlace_Allowances(t *testing.T) {
	node := func(name string, allows ...string) api.Node {
		return api.Node{Name: name, State: api.NodeAlive, RuntimeAvailable: true, Cpu: 2, Memory: 1 << 30, Allows: allows}
	}
	privileged := api.Task{Image: "x", Privileged: true}
	cases := []struct {
		name   string
		task   api.Task
		nodes  []api.Node
		want   string // the node chosen, or the reason
		placed bool
	}{
		{"nothing asked: anywhere", api.Task{Image: "x"}, []api.Node{node("w1")}, "w1", true},
		{"asked, nowhere allowed", privileged, []api.Node{node("w1"), node("w2")},
			"no worker allows privileged tasks (start a worker with --allow-privileged)", false},
		{"asked, allowed on one", privileged, []api.Node{node("w1"), node("w2", "privileged")}, "w2", true},
		{"everything asked, nowhere allowed: every flag named", api.Task{Image: "x", Privileged: true, NetworkMode: "host",
			Mounts: []string{"/srv/a:/a"}, CapAdd: []string{"NET_ADMIN", "CHOWN"}}, []api.Node{node("w1")},
			"no worker allows privileged tasks or host-network tasks or binding host path /srv/a or capability NET_ADMIN " +
				"(start a worker with --allow-privileged --allow-host-network --allow-mount /srv/a --allow-cap NET_ADMIN)", false},
		{"allowed only on a dead worker", privileged, []api.Node{node("w1"), func() api.Node {
			n := node("w2", "privileged")
			n.State = api.NodeDead
			return n
		}()}, "no worker allows privileged tasks (start a worker with --allow-privileged)", false},
		{"allowed only on a full worker: the room is the reason", api.Task{Image: "x", Privileged: true, Cpu: 3},
			[]api.Node{node("w1"), node("w2", "privileged")}, "no worker has room for cpu 3.00, memory 0, disk 0 (w2: 2.00 cores free)", false},
		{"allowed only on a draining worker", privileged, []api.Node{node("w1"), func() api.Node {
			n := node("w2", "privileged")
			n.Drain = true
			return n
		}()}, "no worker has room for cpu 0.00, memory 0, disk 0 (w2: draining)", false},
		{"no live worker at all", privileged, nil, "waiting for a live worker", false},
		{"a token of a newer worker allows nothing", privileged, []api.Node{node("w1", "privileged:v2")},
			"no worker allows privileged tasks (start a worker with --allow-privileged)", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, ok, reason := Place(EPVM{}, tc.task, tc.nodes)
			got := reason
			if ok {
				got = n.Name
			}
			if ok != tc.placed || got != tc.want {
				t.Fatalf("placed %v %q, want %v %q", ok, got, tc.placed, tc.want)
			}
		})
	}
}
