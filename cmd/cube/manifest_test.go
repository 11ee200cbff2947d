package main

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// The same service and task in every form a file may take read the same.
func TestManifest_FormsReadTheSame(t *testing.T) {
	want := []manifestItem{
		{Service: &api.Service{Name: "web", Count: 3, Task: api.Task{Image: "cube-echo:latest", Memory: 64 << 20,
			ExposedPorts: api.PortSet{"7777/tcp": {}}, Env: []string{"A=1"}, HealthCheck: "/health"},
			Update: api.UpdatePolicy{MaxParallel: 2, MinHealthyTime: "2s", AutoRevert: true}, Constraints: []string{"zone==a"}}},
		{Task: &api.TaskEvent{ID: uuid.MustParse("266592cd-960d-4091-981c-8c25c44b1018"), State: api.Running,
			Task: api.Task{Name: "once", Image: "cube-echo:latest"}}},
		{Task: &api.TaskEvent{State: api.Running, Task: api.Task{Name: "bare", Image: "cube-echo:latest", Cmd: []string{"-crash"}}}},
	}
	forms := map[string]string{
		"json array": `[
	{"Name": "web", "Count": 3, "Task": {"Image": "cube-echo:latest", "Memory": 67108864,
	  "ExposedPorts": {"7777/tcp": {}}, "Env": ["A=1"], "HealthCheck": "/health"},
	 "Update": {"MaxParallel": 2, "MinHealthyTime": "2s", "AutoRevert": true}, "Constraints": ["zone==a"]},
	{"ID": "266592cd-960d-4091-981c-8c25c44b1018", "State": 2, "Task": {"Name": "once", "Image": "cube-echo:latest"}},
	{"Name": "bare", "Image": "cube-echo:latest", "Cmd": ["-crash"]}
]`,
		"json values one after the other": `{"Name": "web", "Count": 3, "Task": {"Image": "cube-echo:latest", "Memory": 67108864, "ExposedPorts": {"7777/tcp": {}}, "Env": ["A=1"], "HealthCheck": "/health"}, "Update": {"MaxParallel": 2, "MinHealthyTime": "2s", "AutoRevert": true}, "Constraints": ["zone==a"]}
{"ID": "266592cd-960d-4091-981c-8c25c44b1018", "State": 2, "Task": {"Name": "once", "Image": "cube-echo:latest"}}
{"Name": "bare", "Image": "cube-echo:latest", "Cmd": ["-crash"]}`,
		"json envelope": `{"Services": [{"Name": "web", "Count": 3, "Task": {"Image": "cube-echo:latest", "Memory": 67108864, "ExposedPorts": {"7777/tcp": {}}, "Env": ["A=1"], "HealthCheck": "/health"}, "Update": {"MaxParallel": 2, "MinHealthyTime": "2s", "AutoRevert": true}, "Constraints": ["zone==a"]}],
 "Tasks": [{"ID": "266592cd-960d-4091-981c-8c25c44b1018", "State": 2, "Task": {"Name": "once", "Image": "cube-echo:latest"}}, {"Name": "bare", "Image": "cube-echo:latest", "Cmd": ["-crash"]}]}`,
		"yaml documents, lower-case keys": `# the web tier
name: web
count: 3
task:
  image: cube-echo:latest
  memory: 67108864
  exposedPorts: {"7777/tcp": {}}
  env: [A=1]
  healthCheck: /health
update:
  maxParallel: 2
  minHealthyTime: 2s
  autoRevert: true
constraints: ["zone==a"]
---
id: 266592cd-960d-4091-981c-8c25c44b1018
state: 2
task: {name: once, image: "cube-echo:latest"}
---
kind: Task
name: bare
image: cube-echo:latest
cmd: [-crash]
`,
		"yaml list with anchors": `- Kind: Service
  Name: web
  Count: 3
  Task: &tmpl
    Image: cube-echo:latest
    Memory: 67108864
    ExposedPorts:
      7777/tcp: {}
    Env: [A=1]
    HealthCheck: /health
  Update: {MaxParallel: 2, MinHealthyTime: 2s, AutoRevert: true}
  Constraints: [zone==a]
- ID: 266592cd-960d-4091-981c-8c25c44b1018
  State: 2
  Task: {Name: once, Image: cube-echo:latest}
- Name: bare
  Image: cube-echo:latest
  Cmd: [-crash]
`,
		"yaml envelope": `services:
  - name: web
    count: 3
    task: {image: cube-echo:latest, memory: 67108864, exposedPorts: {7777/tcp: {}}, env: [A=1], healthCheck: /health}
    update: {maxParallel: 2, minHealthyTime: 2s, autoRevert: true}
    constraints: [zone==a]
tasks:
  - {id: 266592cd-960d-4091-981c-8c25c44b1018, state: 2, task: {name: once, image: cube-echo:latest}}
  - {name: bare, image: cube-echo:latest, cmd: [-crash]}
`,
	}
	for name, text := range forms {
		got, err := parseManifest("f", []byte(text))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		for i := range got {
			got[i].Line = 0
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: read\n%s\nwant\n%s", name, itemsText(got), itemsText(want))
		}
	}
}

func itemsText(items []manifestItem) string {
	var b strings.Builder
	for _, it := range items {
		if it.Service != nil {
			b.WriteString(mustJSONText(*it.Service) + "\n")
		} else {
			b.WriteString(mustJSONText(*it.Task) + "\n")
		}
	}
	return b.String()
}

func mustJSONText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// Bad files are refused with the file, the line and the field.
func TestManifest_BadFilesSayWhereAndWhat(t *testing.T) {
	cases := []struct {
		name, text, want string
	}{
		{"empty", "  \n", "f: empty: want one or more services or tasks, in JSON or YAML"},
		{"only comments", "# nothing\n---\n", "f: holds no service and no task"},
		{"json syntax", "{\n  \"Name\": \"web\",\n  \"Count\": 3,,\n}", "f:3: malformed JSON at column"},
		{"json cut short", `{"Name": "web"`, "f: the JSON ends in the middle of a value"},
		{"yaml syntax", "name: web\ncount: 3\n task: x\n", "f:3: malformed YAML: mapping values are not allowed"},
		{"yaml tab", "name: web\n\tcount: 3\n", "f:2: malformed YAML: found a tab character"},
		{"wrong type", "name: web\ncount: three\ntask: {image: x}\n", `f:2: service web: field Count: want a whole number, got string`},
		{"wrong nested type", "name: web\ncount: 3\ntask:\n  image: x\n  maxRestarts: many\n", `f:5: service web: field Task.MaxRestarts: want a whole number, got string`},
		{"bad size unit", "name: web\ncount: 3\ntask:\n  image: x\n  memory: 64x\n", `f:5: service web: field Task.Memory: "64x" is not a size: want a number of bytes, or a number with a unit as Docker takes them`},
		{"bad task size unit", "- name: t\n  image: x\n  disk: big\n", `f:3: task: field Disk: "big" is not a size`},
		{"unknown field", "name: web\ncount: 3\ntask:\n  image: x\n  imagee: y\n", `f:5: service web: unknown field "imagee"`},
		{"unknown field json", "{\"Name\": \"web\", \"Count\": 3,\n \"Task\": {\"Image\": \"x\"},\n \"Replicas\": 3}", `f:3: service web: unknown field "Replicas"`},
		{"invalid count", "name: web\ncount: -1\ntask: {image: x}\n", "f:2: service web: Count -1 must be between 0 and 1000"},
		{"invalid name", "name: -web\ncount: 1\ntask: {image: x}\n", `f:1: service Name "-web" must be`},
		{"invalid constraint", "name: web\ncount: 1\ntask: {image: x}\nconstraints: [zone=a]\n", `f:4: service web: Constraints: constraint "zone=a" must be key==value or key!=value`},
		{"invalid duration", "name: web\ncount: 1\ntask: {image: x}\nupdate:\n  minHealthyTime: soon\n", `f:5: service web: Update.MinHealthyTime "soon" must be a non-negative Go duration`},
		{"no image", "name: web\ncount: 1\ntask: {memory: 67108864}\n", "f:3: service web: Task.Image is required"},
		{"template memory", "name: web\ncount: 1\ntask:\n  image: x\n  memory: 1\n", "f:5: service web: Task.Memory 1 is below Docker's minimum"},
		{"cluster field", "name: web\ncount: 1\ntask: {image: x}\nversion: 4\n", "f:4: service web: Version is set by the cluster, not by a file; remove it"},
		{"task wrong type", "- name: t\n  image: x\n  cpu: lots\n", "f:3: task: field Task.Cpu: expected float64, got JSON string"},
		{"task unknown field", "- name: t\n  image: x\n  restart: always\n", `f:3: task: unknown field "restart"`},
		{"task invalid", "- name: t\n  image: x\n  restartPolicy: sometimes\n", `f:3: task t: RestartPolicy "sometimes" is not one of`},
		{"event invalid", "id: 266592cd-960d-4091-981c-8c25c44b1018\nstate: 2\ntask:\n  image: x\n  memory: 5\n", "f:5: task 266592cd-960d-4091-981c-8c25c44b1018: Memory 5 is below"},
		{"neither", "name: web\nreplicas: 3\n", "f:1: cannot tell a service from a task"},
		{"bad kind", "kind: Deployment\nname: web\n", `f:1: Kind "Deployment": want Service or Task`},
		{"scalar", "web\n", `f:1: want a service or a task (an object), or a list of them; got "web"`},
		{"twice", "- {name: web, count: 1, task: {image: x}}\n- {name: web, count: 2, task: {image: x}}\n", "f:2: service web is in the file twice (first at line 1)"},
		{"duplicate key", "name: web\nname: api\ncount: 1\ntask: {image: x}\n", `f:2: key "name" is given twice`},
		{"envelope not a list", "services: {name: web}\n", "f:1: services: want a list, got an object"},
	}
	for _, c := range cases {
		_, err := parseManifest("f", []byte(c.text))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v\nwant it to say %q", c.name, err, c.want)
		}
	}
}

func TestManifest_ReadsStdinAndFiles(t *testing.T) {
	items, err := readManifest("-", strings.NewReader("name: web\ncount: 2\ntask: {image: x}\n"))
	if err != nil || len(items) != 1 || items[0].Service.Count != 2 {
		t.Fatalf("stdin: %+v %v", items, err)
	}
	if _, err := readManifest("-", strings.NewReader("name: web\ncount: x\ntask: {image: x}\n")); err == nil || !strings.HasPrefix(err.Error(), "stdin:2: ") {
		t.Errorf("an error in stdin names stdin: %v", err)
	}
	if _, err := readManifest("/no/such/file.yaml", nil); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("a missing file: %v", err)
	}
	// The chapter's task1.json reads as a task.
	items, err = readManifest("../../examples/task1.json", nil)
	if err != nil || len(items) != 1 || items[0].Task == nil {
		t.Errorf("examples/task1.json: %+v %v", items, err)
	}
}

// The example files of the README read.
func TestManifest_Examples(t *testing.T) {
	for file, want := range map[string]string{"web.yaml": "service web", "stack.yaml": "service web, service api, task once"} {
		items, err := readManifest("../../examples/"+file, nil)
		if err != nil {
			t.Errorf("examples/%s: %v", file, err)
			continue
		}
		var got []string
		for _, it := range items {
			got = append(got, it.what())
		}
		if strings.Join(got, ", ") != want {
			t.Errorf("examples/%s holds %q, want %q", file, got, want)
		}
	}
}

// Sizes in manifests take Docker's units, as in cube run's files.
func TestManifest_SizesWithUnits(t *testing.T) {
	items, err := parseManifest("f", []byte("name: web\ncount: 1\ntask: {image: x, memory: 64m, disk: 1g}\n---\n- {name: t, image: x, Memory: 128MiB, disk: 2048}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s := items[0].Service; s == nil || s.Task.Memory != 64<<20 || s.Task.Disk != 1<<30 {
		t.Errorf("service template: %+v", items[0])
	}
	if ev := items[1].Task; ev == nil || ev.Task.Memory != 128<<20 || ev.Task.Disk != 2048 {
		t.Errorf("task: %+v", items[1])
	}
}
