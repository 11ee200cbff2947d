package manager

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cube-orch/cube/api"
)

// allowed reports whether worker n allows everything task t asks for beyond
// an ordinary container (privileged mode, the host network, host mounts,
// capabilities), as the worker gossips it (api.Node.Allows). The worker
// checks again before it creates a container; checking here keeps a task
// off the workers that would refuse it.
func allowed(t *api.Task, n *api.Node) bool {
	if t.Asks() == nil {
		return true
	}
	_, missing := api.ParseAllowances(n.Allows).Missing(*t)
	return !missing
}

// whyNotPlaced explains why no worker was chosen for t. When no live worker
// meets t's constraints, that is the reason (unmetReason). When no live
// worker of those that do allows everything t asks, that is the reason, with the flags that would
// allow it ("no worker allows privileged tasks (start a worker with
// --allow-privileged)"); otherwise it is noFitReason over the workers that
// allow it.
func whyNotPlaced(t api.Task, nodes []api.Node, ports HostPortUse) string {
	if len(t.Constraints) > 0 {
		// Constraints first: no live worker meeting them is the reason;
		// otherwise the reason is among the workers that do.
		if reason, ok := unmetReason(t, nodes); ok {
			return reason
		}
		nodes = meeting(parseRules(t.Constraints), nodes)
	}
	asks := t.Asks()
	if asks == nil {
		return noFitReason(t, nodes, ports)
	}
	var ok []api.Node
	var lacks [][]api.Ask // per live worker refusing t: every ask it refuses
	var names []string
	liveOK := false
	for _, n := range nodes {
		a := api.ParseAllowances(n.Allows)
		var refused []api.Ask
		for _, k := range asks {
			if !a.Allows(k) {
				refused = append(refused, k)
			}
		}
		switch {
		case len(refused) == 0:
			ok = append(ok, n)
			liveOK = liveOK || n.State == api.NodeAlive
		case n.State == api.NodeAlive:
			lacks = append(lacks, refused)
			names = append(names, n.Name)
		}
	}
	if liveOK || len(lacks) == 0 {
		return noFitReason(t, ok, ports)
	}
	same := true
	for _, l := range lacks[1:] {
		same = same && slices.Equal(l, lacks[0])
	}
	if same {
		what, flags := describeAsks(lacks[0])
		return fmt.Sprintf("no worker allows %s (start a worker with %s)", what, flags)
	}
	per := make([]string, len(lacks))
	for i, l := range lacks {
		_, flags := describeAsks(l)
		per[i] = names[i] + " needs " + flags
	}
	return fmt.Sprintf("no worker allows everything the task asks (%s)", listed(per))
}

// describeAsks names asks for a person ("privileged tasks or capability
// NET_ADMIN") and the worker flags that allow them.
func describeAsks(asks []api.Ask) (what, flags string) {
	w := make([]string, len(asks))
	f := make([]string, len(asks))
	for i, k := range asks {
		w[i], f[i] = k.String(), k.Flag()
	}
	return strings.Join(w, " or "), strings.Join(f, " ")
}
