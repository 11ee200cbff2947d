package test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/testkit"
)

// The services CLI on real binaries: cube apply --dry-run shows the plan
// and changes nothing, cube service create/scale/ls -o json/inspect/rm
// drive the leader, cube status -o json shows the service's tasks.
func TestE2E_ServiceCLI(t *testing.T) {
	requireImage(t)
	c := NewProcCluster(t, 3, 2)
	file := t.TempDir() + "/web.yaml"
	writeFile(t, file, `# a service file as a person writes it
name: cli-web
count: 2
task:
  image: cube-echo:latest
  exposedPorts: {7777/tcp: {}}
update: {maxParallel: 1, minHealthyTime: 1s}
`)
	services := func() []api.ServiceStatus {
		t.Helper()
		out, err := c.Cube("service", "ls", "-o", "json")
		var list []api.ServiceStatus
		if err != nil || json.Unmarshal([]byte(out), &list) != nil {
			t.Fatalf("cube service ls -o json: %v\n%s", err, out)
		}
		return list
	}
	serviceTasks := func() []api.Task {
		t.Helper()
		out, err := c.Cube("status", "-o", "json")
		var tasks []api.Task
		if err != nil || json.Unmarshal([]byte(out), &tasks) != nil {
			t.Fatalf("cube status -o json: %v\n%s", err, out)
		}
		var mine []api.Task
		for _, task := range tasks {
			if task.Service == "cli-web" && task.State == api.Running && task.DesiredState == api.Running {
				mine = append(mine, task)
			}
		}
		return mine
	}
	waitRunningCount := func(n int) {
		t.Helper()
		testkit.Eventually(t, 60*time.Second, func() error {
			list := services()
			if len(list) != 1 || list[0].Count != n || list[0].Running != n {
				return fmt.Errorf("cube service ls -o json: %+v, want cli-web with %d running", list, n)
			}
			if got := len(serviceTasks()); got != n {
				return fmt.Errorf("cube status -o json: %d running task(s) of cli-web, want %d", got, n)
			}
			return nil
		})
	}

	if list := services(); len(list) != 0 {
		t.Fatalf("services before any: %+v", list)
	}
	out, err := c.Cube("apply", "-f", file, "--dry-run")
	if err != nil || !strings.Contains(out, "+ create service cli-web (2 × cube-echo:latest)\n") || !strings.Contains(out, "Dry run: nothing was changed.") {
		t.Fatalf("cube apply --dry-run: %v\n%s", err, out)
	}
	if list := services(); len(list) != 0 {
		t.Fatalf("cube apply --dry-run created %+v", list)
	}

	out, err = c.Cube("service", "create", "-f", file)
	if err != nil || !strings.Contains(out, "service cli-web created: version 1, 2 × cube-echo:latest") {
		t.Fatalf("cube service create: %v\n%s", err, out)
	}
	waitRunningCount(2)

	out, err = c.Cube("service", "scale", "cli-web", "3")
	if err != nil || !strings.Contains(out, "service cli-web scaled to 3") {
		t.Fatalf("cube service scale: %v\n%s", err, out)
	}
	waitRunningCount(3)
	workers := map[string]bool{}
	for _, task := range serviceTasks() {
		workers[task.Worker] = true
	}
	t.Logf("3 tasks of cli-web on %d worker(s)", len(workers))

	// The file says 2 and the cluster runs 3: the plan says so.
	out, err = c.Cube("apply", "-f", file, "--dry-run")
	if err != nil || !strings.Contains(out, "~ update service cli-web: Count 3 → 2 (scaled at once, no new version)\n") {
		t.Fatalf("cube apply --dry-run after a scale: %v\n%s", err, out)
	}
	// Another environment is a new version: the plan says it rolls, and
	// does not show the values.
	file2 := t.TempDir() + "/web2.json"
	writeFile(t, file2, `{"Name": "cli-web", "Count": 3, "Task": {"Image": "cube-echo:latest", "ExposedPorts": {"7777/tcp": {}},
  "Env": ["TOKEN=s3cret"]}, "Update": {"MaxParallel": 1, "MinHealthyTime": "1s"}}`)
	out, err = c.Cube("apply", "-f", file2, "--dry-run")
	if err != nil || !strings.Contains(out, "~ update service cli-web: Env changed (values not shown) (rolling, 1 at a time)\n") || strings.Contains(out, "s3cret") {
		t.Fatalf("cube apply --dry-run of a new environment: %v\n%s", err, out)
	}

	out, err = c.Cube("service", "inspect", "cli-web")
	if err != nil || !strings.Contains(out, "3 desired, 3 running") || !strings.Contains(out, "1 (current)") {
		t.Fatalf("cube service inspect: %v\n%s", err, out)
	}

	out, err = c.Cube("service", "rm", "cli-web")
	if err != nil || !strings.Contains(out, "service cli-web deleted") {
		t.Fatalf("cube service rm: %v\n%s", err, out)
	}
	testkit.Eventually(t, 60*time.Second, func() error {
		if n := len(serviceTasks()); n != 0 {
			return fmt.Errorf("%d task(s) of cli-web still running after rm", n)
		}
		if list := services(); len(list) != 0 {
			return fmt.Errorf("services after rm: %+v", list)
		}
		return nil
	})
}
