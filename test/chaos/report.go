package chaos

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/google/uuid"
)

// Counts counts operations of one kind by outcome.
type Counts struct {
	OK, Fail, Unknown int
}

// Report is the verdict of every check of one run. Its zero value is not a
// pass: Linearizable is neither Ok nor anything, so OK is false.
type Report struct {
	// Linearizable is porcupine's verdict on the history: Ok, Illegal, or
	// Unknown when the checker timed out (inconclusive, never a pass).
	Linearizable porcupine.CheckResult
	// Lost are tasks whose submission was acknowledged (201 or 200) but
	// which the final state lacks.
	Lost []uuid.UUID
	// IneffectiveStops are tasks whose stop was answered 200 but which are
	// not stopped in the final state.
	IneffectiveStops []uuid.UUID
	// Duplicates maps tasks that should run to their count of running
	// containers when it is not exactly 1.
	Duplicates map[uuid.UUID]int
	// Orphans are the cube.task labels of running containers whose task is
	// stopped, failed or unknown.
	Orphans []string
	// Divergent describes the managers whose state differs from the others'.
	Divergent []string
	// LeaderTerms maps every term with more than one leader to those leaders.
	LeaderTerms map[uint64][]string
	// Panics are the log lines that report a crash, prefixed by node.
	Panics []string
	// UnaskedStops are the leaders' log lines about a task to run whose
	// current placement was stopped on request (manager.StoppedUnaskedLog):
	// the leader runs it again, but no stop should reach a placement the
	// cluster wants.
	UnaskedStops []string
	// Events are the violations found in what the /events subscribers
	// received (CheckEvents) and in their final views; EventStats counts
	// what they received.
	Events     []string
	EventStats EventStats
	// ServiceState are the violations of the services' converged state
	// (CheckServiceState): a service not running exactly Count tasks of
	// its version, each in one container, or a deleted service's task
	// still running. LostServices are acknowledged service changes the
	// final state lacks (CheckServicesAcknowledged). ServiceStats counts
	// the services.
	ServiceState []string
	LostServices []string
	ServiceStats ServiceStats

	// Ops counts the recorded operations by kind and outcome.
	Ops map[Kind]Counts
	// Acknowledged counts the tasks whose submission was answered 201 or 200.
	Acknowledged int
}

// Failed names the checks the run failed, in a fixed order; empty for a pass.
func (r Report) Failed() []string {
	var f []string
	if r.Linearizable != porcupine.Ok {
		what := "linearizability: " + string(r.Linearizable)
		switch r.Linearizable {
		case porcupine.Unknown:
			what += " (checker timed out: inconclusive)"
		case "":
			what = "linearizability: not checked"
		}
		f = append(f, what)
	}
	add := func(n int, name string) {
		if n > 0 {
			f = append(f, fmt.Sprintf("%s: %d", name, n))
		}
	}
	add(len(r.Lost), "lost")
	add(len(r.IneffectiveStops), "ineffective stops")
	add(len(r.Duplicates), "duplicates")
	add(len(r.Orphans), "orphans")
	add(len(r.Divergent), "divergent managers")
	add(len(r.LeaderTerms), "terms with several leaders")
	add(len(r.Panics), "panics")
	add(len(r.UnaskedStops), "stops nobody asked for")
	add(len(r.Events), "event stream violations")
	add(len(r.ServiceState), "service state violations")
	add(len(r.LostServices), "lost service changes")
	return f
}

// OK reports whether every check passed; an inconclusive linearizability
// check is not a pass.
func (r Report) OK() bool { return len(r.Failed()) == 0 }

// Table renders the run's summary as a Markdown table: faults injected by
// kind (counted by the nemesis), operations by kind and outcome,
// acknowledged submissions, lost, duplicates and orphans after convergence,
// the time the cluster took to converge after the last fault (measured by
// the caller), the other checks and the verdict.
func (r Report) Table(faults map[string]int, converge time.Duration) string {
	var rows [][2]string
	add := func(k, v string) { rows = append(rows, [2]string{k, v}) }
	total := 0
	for _, kind := range slices.Sorted(maps.Keys(faults)) {
		add("faults: "+kind, strconv.Itoa(faults[kind]))
		total += faults[kind]
	}
	add("faults: total", strconv.Itoa(total))
	for _, kind := range []Kind{Submit, Stop, Read} {
		c := r.Ops[kind]
		add("operations: "+string(kind), fmt.Sprintf("%d (ok %d, fail %d, unknown %d)", c.OK+c.Fail+c.Unknown, c.OK, c.Fail, c.Unknown))
	}
	for _, kind := range ServiceKinds {
		c := r.Ops[kind]
		add("operations: "+string(kind), fmt.Sprintf("%d (ok %d, fail %d, unknown %d)", c.OK+c.Fail+c.Unknown, c.OK, c.Fail, c.Unknown))
	}
	add("acknowledged submissions", strconv.Itoa(r.Acknowledged))
	add("acknowledged service creates", strconv.Itoa(r.ServiceStats.Acknowledged))
	add("lost (must be 0)", strconv.Itoa(len(r.Lost)))
	add("ineffective stops (must be 0)", strconv.Itoa(len(r.IneffectiveStops)))
	add("duplicates after convergence (must be 0)", strconv.Itoa(len(r.Duplicates)))
	add("orphans after convergence (must be 0)", strconv.Itoa(len(r.Orphans)))
	add("services at end: services, tasks, rolled back, failed rollouts", fmt.Sprintf("%d, %d, %d, %d", r.ServiceStats.Services, r.ServiceStats.Tasks, r.ServiceStats.RolledBack, r.ServiceStats.Halted))
	add("service state violations after convergence (must be 0)", strconv.Itoa(len(r.ServiceState)))
	add("lost service changes (must be 0)", strconv.Itoa(len(r.LostServices)))
	add("time to converge after last fault", converge.Round(time.Millisecond).String())
	add("linearizable (porcupine)", string(r.Linearizable))
	add("divergent managers (must be 0)", strconv.Itoa(len(r.Divergent)))
	add("terms with >1 leader (must be 0)", strconv.Itoa(len(r.LeaderTerms)))
	add("panics in logs (must be 0)", strconv.Itoa(len(r.Panics)))
	add("placements stopped though to run (must be 0)", strconv.Itoa(len(r.UnaskedStops)))
	add("event streams: connections, changes, dropped", fmt.Sprintf("%d, %d, %d", r.EventStats.Conns, r.EventStats.Changes, r.EventStats.Dropped))
	add("event stream violations (must be 0)", strconv.Itoa(len(r.Events)))
	verdict := "PASS"
	if f := r.Failed(); len(f) > 0 {
		verdict = "FAIL: " + strings.Join(f, "; ")
	}
	add("verdict", verdict)

	w0, w1 := len("check"), len("value")
	for _, row := range rows {
		w0, w1 = max(w0, len(row[0])), max(w1, len(row[1]))
	}
	var b strings.Builder
	line := func(a, v string) { fmt.Fprintf(&b, "| %-*s | %-*s |\n", w0, a, w1, v) }
	line("check", "value")
	fmt.Fprintf(&b, "|%s|%s|\n", strings.Repeat("-", w0+2), strings.Repeat("-", w1+2))
	for _, row := range rows {
		line(row[0], row[1])
	}
	return b.String()
}

// WriteArtifacts keeps what a failed run needs for a post-mortem in dir:
// history.json (the recorded ops), linearizability.html (porcupine's
// visualisation of info, from CheckLinearizable or Check) and logs/<node>.log.
// The caller names dir in its output.
func WriteArtifacts(dir string, ops []Op, info porcupine.LinearizationInfo, logs map[string]string) error {
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return fmt.Errorf("write artifacts: %w", err)
	}
	hist, err := json.MarshalIndent(ops, "", "  ")
	if err != nil {
		return fmt.Errorf("write artifacts: encode history: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "history.json"), hist, 0o644); err != nil {
		return fmt.Errorf("write artifacts: %w", err)
	}
	if err := porcupine.VisualizePath(RegistryModel(), info, filepath.Join(dir, "linearizability.html")); err != nil {
		return fmt.Errorf("write artifacts: visualise: %w", err)
	}
	for node, text := range logs {
		name := safeName(node) + ".log"
		if err := os.WriteFile(filepath.Join(dir, "logs", name), []byte(text), 0o644); err != nil {
			return fmt.Errorf("write artifacts: log of %s: %w", node, err)
		}
	}
	return nil
}

// safeName turns a node name into a file name: every rune but letters,
// digits, '.', '-' and '_' becomes '_', so no name can leave the logs folder.
func safeName(node string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			return r
		}
		return '_'
	}, node)
}
