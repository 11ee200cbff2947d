package manager

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/cube-orch/cube/api"
)

// Placement by labels: a task's Constraints must all hold on a worker's
// labels (api.Node.Labels, gossiped from cube worker --label) for the task
// to go there; among the workers that meet them, those meeting more of its
// Prefer come first, then, for a task of a service, those running fewest
// tasks of that service, and only then does the scheduler (E-PVM, round
// robin) choose.

// rule is one parsed constraint as written. A constraint that does not
// parse (the API refuses them; one could only come from an older state)
// never holds, so that the task waits with a reason instead of being placed
// anywhere.
type rule struct {
	c    api.Constraint
	text string
	bad  bool
}

func (r rule) holds(labels map[string]string) bool {
	return !r.bad && r.c.Holds(labels)
}

func (r rule) String() string {
	if r.bad {
		return fmt.Sprintf("invalid constraint %q", r.text)
	}
	return r.c.String()
}

// parseRules parses a list of constraints; nil for none.
func parseRules(list []string) []rule {
	if len(list) == 0 {
		return nil
	}
	out := make([]rule, len(list))
	for i, s := range list {
		c, err := api.ParseConstraint(s)
		out[i] = rule{c: c, text: s, bad: err != nil}
	}
	return out
}

// meetsAll reports whether every rule holds on labels.
func meetsAll(rules []rule, labels map[string]string) bool {
	for _, r := range rules {
		if !r.holds(labels) {
			return false
		}
	}
	return true
}

// meets reports whether worker n's labels meet every constraint of t.
func meets(t api.Task, n api.Node) bool {
	return meetsAll(parseRules(t.Constraints), n.Labels)
}

// meeting keeps the nodes whose labels meet rules; nodes itself when there
// are none.
func meeting(rules []rule, nodes []api.Node) []api.Node {
	if len(rules) == 0 {
		return nodes
	}
	out := make([]api.Node, 0, len(nodes))
	for _, n := range nodes {
		if meetsAll(rules, n.Labels) {
			out = append(out, n)
		}
	}
	return out
}

// rank narrows the candidates of task t to those that come first: the ones
// meeting the most of prefer, and among them, for a task of a service, the
// ones with the fewest live tasks of that service (counting the decisions
// made earlier in the same pass, see allocate). The scheduler picks among
// what is left.
func rank(t api.Task, prefer []rule, cands []api.Node) []api.Node {
	if len(prefer) > 0 {
		cands = keepBest(cands, func(n api.Node) int {
			met := 0
			for _, r := range prefer {
				if r.holds(n.Labels) {
					met++
				}
			}
			return -met
		})
	}
	if t.Service != "" {
		cands = keepBest(cands, func(n api.Node) int { return n.ServiceTasks[t.Service] })
	}
	return cands
}

// keepBest keeps the nodes of the lowest cost, in their order.
func keepBest(nodes []api.Node, cost func(api.Node) int) []api.Node {
	if len(nodes) < 2 {
		return nodes
	}
	costs := make([]int, len(nodes))
	best := 0
	for i, n := range nodes {
		costs[i] = cost(n)
		if i == 0 || costs[i] < best {
			best = costs[i]
		}
	}
	out := make([]api.Node, 0, len(nodes))
	for i, n := range nodes {
		if costs[i] == best {
			out = append(out, n)
		}
	}
	return out
}

// countService counts one more task of service on node n (copy on write:
// the map may be shared with the caller's copy of the node).
func countService(n *api.Node, service string, delta int) {
	if service == "" {
		return
	}
	m := make(map[string]int, len(n.ServiceTasks)+1)
	maps.Copy(m, n.ServiceTasks)
	m[service] += delta
	if m[service] <= 0 {
		delete(m, service)
	}
	n.ServiceTasks = m
}

// unmetReason explains, when no live worker meets t's constraints, which
// ones nobody meets and what the live workers carry:
//
//	no worker meets zone==b (3 alive workers: zone=a ×2, no zone ×1)
//
// ok is false when some live worker meets them all (or there is no live
// worker, or no constraint): then something else is the reason.
func unmetReason(t api.Task, nodes []api.Node) (reason string, ok bool) {
	rules := parseRules(t.Constraints)
	if len(rules) == 0 {
		return "", false
	}
	var alive []api.Node
	for _, n := range nodes {
		if n.State != api.NodeAlive {
			continue
		}
		if meetsAll(rules, n.Labels) {
			return "", false
		}
		alive = append(alive, n)
	}
	if len(alive) == 0 {
		return "", false
	}
	// Name the constraints no live worker meets on its own; when each is
	// met somewhere but never all on one worker, name them all.
	var named []rule
	for _, r := range rules {
		met := false
		for _, n := range alive {
			met = met || r.holds(n.Labels)
		}
		if !met {
			named = append(named, r)
		}
	}
	what := "no worker meets "
	if len(named) == 0 {
		named, what = rules, "no worker meets all of "
	}
	texts := make([]string, len(named))
	var keys []string
	for i, r := range named {
		texts[i] = r.String()
		if !r.bad && !slices.Contains(keys, r.c.Key) {
			keys = append(keys, r.c.Key)
		}
	}
	return fmt.Sprintf("%s%s (%s)", what, strings.Join(texts, ", "), describeWorkers(alive, keys)), true
}

// describeWorkers sums up the workers' values of keys: "3 alive workers:
// zone=a ×2, no zone ×1", the most common first.
func describeWorkers(alive []api.Node, keys []string) string {
	noun := "workers"
	if len(alive) == 1 {
		noun = "worker"
	}
	head := fmt.Sprintf("%d alive %s", len(alive), noun)
	if len(keys) == 0 {
		return head
	}
	count := map[string]int{}
	for _, n := range alive {
		parts := make([]string, len(keys))
		for i, k := range keys {
			if v, ok := n.Labels[k]; ok {
				parts[i] = k + "=" + v
			} else {
				parts[i] = "no " + k
			}
		}
		count[strings.Join(parts, " ")]++
	}
	groups := make([]string, 0, len(count))
	for g := range count {
		groups = append(groups, g)
	}
	sort.Slice(groups, func(i, j int) bool {
		if count[groups[i]] != count[groups[j]] {
			return count[groups[i]] > count[groups[j]]
		}
		return groups[i] < groups[j]
	})
	for i, g := range groups {
		groups[i] = fmt.Sprintf("%s ×%d", g, count[g])
	}
	return head + ": " + strings.Join(groups, ", ")
}
