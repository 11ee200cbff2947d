package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/cube-orch/cube/api"
)

// --label is repeatable and comma-separated, the file's labels list sets
// it, and bad labels stop the worker before it starts, naming the flag.
func TestWorkerLabels(t *testing.T) {
	clearEnv(t)
	cfg, err := workerConfig(t, "--data", "/tmp/w1", "--label", "zone=a", "--label", "disk=ssd,rack=r1")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"zone": "a", "disk": "ssd", "rack": "r1"}; !reflect.DeepEqual(cfg.Labels, want) {
		t.Fatalf("labels %v, want %v", cfg.Labels, want)
	}
	path := writeFile(t, `
data_dir = "/file"
labels   = ["zone=b"]
`)
	if cfg, err = workerConfig(t, "--config", path); err != nil || cfg.Labels["zone"] != "b" {
		t.Fatalf("labels from the file: %v, %v", cfg.Labels, err)
	}
	if cfg, err = workerConfig(t, "--data", "/tmp/w1"); err != nil || cfg.Labels != nil {
		t.Fatalf("no labels: %v, %v", cfg.Labels, err)
	}
	for _, tc := range []struct{ arg, want string }{
		{"zone", `--label: label "zone" must be key=value`},
		{"zone=a!", `must not contain '=', '!' or ','`},
		{"zone=a,zone=b", "given twice"},
		{"zo ne=a", `key "zo ne"`},
		{strings.Repeat("k", 60) + "=" + strings.Repeat("v", 60) + "," + strings.Repeat("l", 60) + "=" + strings.Repeat("v", 60) + "," + strings.Repeat("m", 60) + "=" + strings.Repeat("v", 60),
			"bytes of the worker's gossip metadata"},
	} {
		if _, err := workerConfig(t, "--data", "/tmp/w1", "--label", tc.arg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--label %s: %v, want an error containing %q", tc.arg, err, tc.want)
		}
	}
}

// cube run's --constraint and --prefer add to the task's lists, checked
// as the API checks them.
func TestRun_ConstraintFlags(t *testing.T) {
	ev := api.TaskEvent{Task: api.Task{Image: "x", Constraints: []string{"disk==ssd"}}}
	got, err := withPlacement(ev, []string{"zone==a"}, []string{"rack!=r1"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Task.Constraints, []string{"disk==ssd", "zone==a"}) || !reflect.DeepEqual(got.Task.Prefer, []string{"rack!=r1"}) {
		t.Fatalf("constraints %q prefer %q", got.Task.Constraints, got.Task.Prefer)
	}
	if len(ev.Task.Constraints) != 1 {
		t.Fatalf("the file's task changed: %q", ev.Task.Constraints)
	}
	if _, err := withPlacement(ev, []string{"zone=a"}, nil); err == nil || !strings.Contains(err.Error(), `--constraint: Constraints[1]: constraint "zone=a" must be key==value`) {
		t.Errorf("bad --constraint: %v", err)
	}
	if _, err := withPlacement(ev, nil, []string{"rack"}); err == nil || !strings.Contains(err.Error(), `--prefer: Prefer[0]: constraint "rack"`) {
		t.Errorf("bad --prefer: %v", err)
	}
}
