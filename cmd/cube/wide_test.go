package main

import (
	"encoding/json"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
)

var outService = api.ServiceStatus{Service: api.Service{Name: "web", Count: 3, Version: 2,
	Task:        api.Task{Image: "cube-echo:latest", Cpu: 0.5, Memory: 64 << 20, ExposedPorts: api.PortSet{"7777/tcp": {}}, HealthCheck: "/health"},
	Constraints: []string{"zone==a"}, CreateTime: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)}, Running: 3, Healthy: 2}

// cells returns a table's text with the space between columns (two or
// more spaces) as " | ", so that expectations do not depend on widths.
func cells(table string) string {
	return regexp.MustCompile(` {2,}`).ReplaceAllString(table, " | ")
}

// headers returns the column names of a table's header line (names are
// separated by two spaces or more; a name may hold one space).
func headers(line string) []string {
	var out []string
	for _, f := range strings.Split(line, "  ") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// -o wide on every listing is the table with more columns: the table's
// columns in the same order, plus the listing's own; -o table and -o json
// print what they print without it.
func TestOutput_WideOnEveryListing(t *testing.T) {
	routes := listingRoutes(t, false)
	routes["GET /services"] = mustJSON(t, []api.ServiceStatus{outService})
	f := newRouteFake(t, routes)
	for _, tc := range []struct {
		args   []string
		header int // the line of the header that wide widens
		extra  []string
	}{
		{[]string{"status"}, 0, []string{"DESIRED", "HEALTH", "CONTAINER", "LAST WORKER", "GEN", "CPU", "MEMORY", "SERVICE", "SUBMITTED", "STARTED"}},
		{[]string{"node"}, 0, []string{"SINCE", "ALLOWS"}},
		{[]string{"token", "ls"}, 0, []string{"CREATED AT"}},
		{[]string{"operator", "raft", "list-peers"}, 0, []string{"API"}},
		{[]string{"service", "ls"}, 0, []string{"CPU", "MEMORY", "PORTS", "HEALTH CHECK", "CONSTRAINTS", "CREATED"}},
		{[]string{"members"}, 1, []string{"GOSSIP", "COMMANDS", "VERSION"}},
	} {
		name := strings.Join(tc.args, " ")
		table, err := cube(t, f.addr(), tc.args...)
		if err != nil {
			t.Fatalf("cube %s: %v\n%s", name, err, table)
		}
		wide, err := cube(t, f.addr(), append(tc.args, "-o", "wide")...)
		if err != nil {
			t.Fatalf("cube %s -o wide: %v\n%s", name, err, wide)
		}
		th, wh := headers(strings.Split(table, "\n")[tc.header]), headers(strings.Split(wide, "\n")[tc.header])
		var kept, added []string
		for _, h := range wh {
			if slices.Contains(th, h) {
				kept = append(kept, h)
			} else {
				added = append(added, h)
			}
		}
		// status's CONTAINERNAME (the short ID) becomes CONTAINER (whole).
		want := slices.DeleteFunc(slices.Clone(th), func(h string) bool { return name == "status" && h == "CONTAINERNAME" })
		if !reflect.DeepEqual(kept, want) || !reflect.DeepEqual(added, tc.extra) {
			t.Errorf("cube %s -o wide: columns %q; want the table's %q in order plus %q", name, wh, th, tc.extra)
		}
		if len(strings.Split(wide, "\n")) != len(strings.Split(table, "\n")) {
			t.Errorf("cube %s -o wide has other lines than the table:\n%s\n%s", name, table, wide)
		}
	}
	// What wide adds is the API's: the whole container ID, the service.
	task := outTask
	task.ContainerID = strings.Repeat("c", 64)
	task.HealthCheck, task.Healthy, task.DesiredState = "/health", true, api.Running
	routes["GET /tasks"] = mustJSON(t, []api.Task{task})
	f2 := newRouteFake(t, routes)
	wide, _ := cube(t, f2.addr(), "status", "-o", "wide")
	for _, want := range []string{task.ContainerID, "web v2", "| healthy |", "| Running | Running |"} {
		if !strings.Contains(cells(wide), want) {
			t.Errorf("cube status -o wide lacks %q:\n%s", want, wide)
		}
	}
	if table, _ := cube(t, f2.addr(), "status"); strings.Contains(table, task.ContainerID) || !strings.Contains(table, "cccccccccccc ") {
		t.Errorf("cube status shows the whole container ID, or not its first 12 characters:\n%s", table)
	}
	// gossip keyring list -o wide adds a table of the nodes.
	wide, err := cube(t, f.addr(), "gossip", "keyring", "list", "-o", "wide")
	if err != nil || !strings.Contains(wide, "NODE  ROLE    PRIMARY  KEYS  ERROR\nw1    worker  a2V5     1     -\n") {
		t.Errorf("cube gossip keyring list -o wide: %v\n%s", err, wide)
	}
	// Objects have no wide form.
	if _, err := cube(t, f.addr(), "service", "inspect", "web", "-o", "wide"); err == nil || !strings.Contains(err.Error(), "want table or json") {
		t.Errorf("cube service inspect -o wide: %v, want a usage error", err)
	}
}

// cube status ID shows the task's history, oldest first, each entry with
// its time, state, worker, generation, restarts and reason; -o json has it
// as the API's History.
func TestStatus_OneTaskShowsItsHistory(t *testing.T) {
	at := func(s int) time.Time { return time.Date(2026, 1, 2, 3, 4, s, 0, time.UTC) }
	task := outTask
	task.HealthCheck, task.Healthy, task.RestartCount, task.Generation = "/health", true, 1, 2
	task.History = []api.TaskTransition{
		{Time: at(0), State: api.Pending, DesiredState: api.Running, Reason: "submitted"},
		{Time: at(1), State: api.Scheduled, DesiredState: api.Running, Worker: "w1", Generation: 1},
		{Time: at(2), State: api.Running, DesiredState: api.Running, Worker: "w1", Generation: 1},
		{Time: at(3), State: api.Failed, DesiredState: api.Running, Worker: "w1", Generation: 1, ExitCode: 1, Reason: "exited with code 1"},
		{Time: at(4), State: api.Scheduled, DesiredState: api.Running, Worker: "w2", Generation: 2, RestartCount: 1, Reason: "restarted after: exited with code 1"},
		{Time: at(5), State: api.Running, DesiredState: api.Running, Worker: "w2", Generation: 2, RestartCount: 1},
		{Time: at(6), State: api.Running, DesiredState: api.Running, Worker: "w2", Generation: 2, RestartCount: 1, Healthy: true, Reason: "passed its health check"},
		{Time: at(7), State: api.Running, DesiredState: api.Completed, Worker: "w2", Generation: 2, RestartCount: 1, Healthy: true, Reason: "stop requested"},
	}
	f := newRouteFake(t, map[string]string{"GET /tasks/" + task.ID.String(): mustJSON(t, task)})
	out, err := cube(t, f.addr(), "status", task.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	ts := func(s int) string { return timeText(at(s)) }
	for _, want := range []string{
		"Health: | healthy\n",
		"\nHistory (oldest first; the last 20 changes are kept)\n",
		"TIME | STATE | WORKER | GEN | RESTARTS | REASON\n",
		ts(0) + " | Pending | - | 0 | 0 | submitted\n",
		ts(3) + " | Failed | w1 | 1 | 0 | exited with code 1\n",
		ts(4) + " | Scheduled | w2 | 2 | 1 | restarted after: exited with code 1\n",
		ts(6) + " | Running, healthy | w2 | 2 | 1 | passed its health check\n",
		ts(7) + " | Running, healthy → Completed | w2 | 2 | 1 | stop requested\n",
	} {
		if !strings.Contains(cells(out), want) {
			t.Errorf("cube status ID lacks %q:\n%s", want, out)
		}
	}
	out, err = cube(t, f.addr(), "status", task.ID.String(), "-o", "json")
	var got api.Task
	if err != nil || json.Unmarshal([]byte(out), &got) != nil || !reflect.DeepEqual(got.History, task.History) || !got.Healthy {
		t.Errorf("cube status ID -o json: %v, History %+v", err, got.History)
	}
}

// healthState words a task's health as docker ps does.
func TestHealthState(t *testing.T) {
	base := api.Task{HealthCheck: "/health", State: api.Running, Generation: 2}
	failed := base
	failed.History = []api.TaskTransition{{Generation: 2, Reason: "passed its health check", Healthy: true}, {Generation: 2, Reason: "health check failed: GET /health returned 500"}}
	older := base
	older.History = []api.TaskTransition{{Generation: 1, Reason: "health check failed: x"}, {Generation: 2}}
	healthy := base
	healthy.Healthy = true
	none := base
	none.HealthCheck = ""
	pending := base
	pending.State = api.Pending
	for _, tc := range []struct {
		name string
		t    api.Task
		want string
	}{
		{"no check", none, "-"}, {"not running", pending, "-"}, {"healthy", healthy, "healthy"},
		{"failed its check", failed, "unhealthy"}, {"an older placement failed", older, "starting"}, {"not checked yet", base, "starting"},
	} {
		if got := healthState(tc.t); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// cube members -o wide shows the build each manager gossips.
func TestOutput_MembersWideShowsVersions(t *testing.T) {
	f := newRouteFake(t, listingRoutes(t, false))
	out, err := cube(t, f.addr(), "members", "-o", "wide")
	if err != nil {
		t.Fatalf("cube members -o wide: %v\n%s", err, out)
	}
	if !strings.Contains(out, "v1.4.0 0123456789ab") {
		t.Errorf("cube members -o wide does not show m1's gossiped version:\n%s", out)
	}
}

// The version a node gossips is short and bounded: the release, the
// commit's first 12 characters, "+" for a modified tree.
func TestGossipVersion(t *testing.T) {
	for _, c := range []struct {
		in   versionInfo
		want string
	}{
		{versionInfo{Version: "v1.2.0", Commit: "0123456789abcdef0123"}, "v1.2.0 0123456789ab"},
		{versionInfo{Version: "dev", Commit: "0123456789abcdef", Modified: true}, "dev 0123456789ab+"},
		{versionInfo{Version: "dev"}, "dev"},
		{versionInfo{Version: strings.Repeat("v", 100)}, strings.Repeat("v", 64)},
	} {
		if got := gossipVersion(c.in); got != c.want {
			t.Errorf("gossipVersion(%+v) = %q; want %q", c.in, got, c.want)
		}
	}
}
