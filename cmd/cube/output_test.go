package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// routeFake answers each "METHOD /path" it is given with the JSON body of
// it, 503 otherwise, and counts the calls.
type routeFake struct {
	*httptest.Server
	mu     sync.Mutex
	routes map[string]string
	calls  int
}

func newRouteFake(t *testing.T, routes map[string]string) *routeFake {
	t.Helper()
	f := &routeFake{routes: routes}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.calls++
		body, ok := f.routes[r.Method+" "+r.URL.Path]
		f.mu.Unlock()
		if !ok {
			http.Error(w, `{"HTTPStatusCode":503,"Message":"no leader"}`, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *routeFake) addr() string { return strings.TrimPrefix(f.URL, "http://") }

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The objects the fake serves, with the fields a table leaves out set, so
// that -o json is seen to carry the API's whole object.
var (
	outTask = api.Task{ID: uuid.MustParse("bb1d59ef-9fc1-4e4b-a44d-db571eeed203"), Name: "t1", State: api.Running,
		Image: "cube-echo:latest", Worker: "w1", Memory: 64 << 20, Env: []string{"A=1"}, Generation: 3,
		SubmitTime: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Service: "web", ServiceVersion: 2,
		HostPorts: api.PortMap{"7777/tcp": {{HostIp: "0.0.0.0", HostPort: "49153"}}}}
	outNode = api.Node{Name: "w1", API: "127.0.0.1:5555", State: "alive", RuntimeAvailable: true, Cpu: 4,
		Memory: 8 << 30, Disk: 100 << 30, TaskCount: 1, Labels: map[string]string{"zone": "a"}}
	outToken   = api.Token{AccessorID: tokenID, Name: "ci", Role: api.RoleSubmit, CreateTime: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)}
	outKeyring = api.NodeKeyring{Node: "w1", Role: "worker", Primary: "a2V5", Keys: []string{"a2V5"}}
	outCluster = api.ClusterInfo{Self: "m1", Term: 3, AppliedIndex: 42,
		Servers: []api.RaftServer{{ID: "m1", Addr: "127.0.0.1:6556", API: "127.0.0.1:5556", Voter: true, Leader: true}},
		Members: []api.GossipMember{{Name: "manager-m1", Addr: "127.0.0.1:6557", Role: "manager", API: "127.0.0.1:5556", State: "alive", MaxCommand: 13, Version: "v1.4.0 0123456789ab"}}}
)

// listings are the listing commands, what their -o json is decoded into,
// and what it must equal with the fake's full answers.
func listings() []struct {
	args []string
	into func() any
	want any
} {
	return []struct {
		args []string
		into func() any
		want any
	}{
		{[]string{"status"}, func() any { return &[]api.Task{} }, &[]api.Task{outTask}},
		{[]string{"node"}, func() any { return &[]api.Node{} }, &[]api.Node{outNode}},
		{[]string{"token", "ls"}, func() any { return &[]api.Token{} }, &[]api.Token{outToken}},
		{[]string{"gossip", "keyring", "list"}, func() any { return &[]api.NodeKeyring{} }, &[]api.NodeKeyring{outKeyring}},
		{[]string{"operator", "raft", "list-peers"}, func() any { return &[]peer{} },
			&[]peer{{ID: "m1", Address: "127.0.0.1:6556", API: "127.0.0.1:5556", Voter: true, Leader: true, State: "leader"}}},
	}
}

func listingRoutes(t *testing.T, empty bool) map[string]string {
	if empty {
		// null, as a manager that encodes a nil slice would send.
		return map[string]string{"GET /tasks": "null", "GET /nodes": "[]", "GET /tokens": "null",
			"GET " + api.KeyringPath: "null", "GET /cluster": `{"Self":"m1"}`}
	}
	return map[string]string{
		"GET /tasks":             mustJSON(t, []api.Task{outTask}),
		"GET /nodes":             mustJSON(t, []api.Node{outNode}),
		"GET /tokens":            mustJSON(t, []api.Token{outToken}),
		"GET " + api.KeyringPath: mustJSON(t, []api.NodeKeyring{outKeyring}),
		"GET /cluster":           mustJSON(t, outCluster),
	}
}

// Every listing prints, with -o json, a JSON array of the API's objects
// whole (fields no column shows included), and [] when there are none;
// -o table (the default) prints the table.
func TestOutput_JSONOnEveryListing(t *testing.T) {
	full := newRouteFake(t, listingRoutes(t, false))
	empty := newRouteFake(t, listingRoutes(t, true))
	for _, l := range listings() {
		name := strings.Join(l.args, " ")
		out, err := cube(t, full.addr(), append(l.args, "-o", "json")...)
		if err != nil {
			t.Errorf("cube %s -o json: %v\n%s", name, err, out)
			continue
		}
		got := l.into()
		dec := json.NewDecoder(strings.NewReader(out))
		dec.DisallowUnknownFields()
		if err := dec.Decode(got); err != nil {
			t.Errorf("cube %s -o json printed what does not decode as the API's objects: %v\n%s", name, err, out)
		} else if !reflect.DeepEqual(got, l.want) {
			t.Errorf("cube %s -o json = %+v, want %+v", name, got, l.want)
		}
		if !strings.HasPrefix(out, "[") || !strings.HasSuffix(out, "]\n") {
			t.Errorf("cube %s -o json: not one JSON array and a newline:\n%s", name, out)
		}

		out, err = cube(t, empty.addr(), append(l.args, "-o", "json")...)
		if err != nil || out != "[]\n" {
			t.Errorf("cube %s -o json with nothing to list printed %q (%v), want []", name, out, err)
		}

		table, err := cube(t, full.addr(), l.args...)
		table2, err2 := cube(t, full.addr(), append(l.args, "--output", "table")...)
		if err != nil || err2 != nil || table != table2 || strings.HasPrefix(table, "[") || !strings.Contains(table, "  ") {
			t.Errorf("cube %s: the default (%v)\n%s\nand -o table (%v)\n%s\nshould be the same table", name, err, table, err2, table2)
		}
	}
	// A single object: cube members -o json is GET /cluster's.
	out, err := cube(t, full.addr(), "members", "-o", "json")
	var info api.ClusterInfo
	if err != nil || json.Unmarshal([]byte(out), &info) != nil || !reflect.DeepEqual(info, outCluster) {
		t.Errorf("cube members -o json: %v\n%s", err, out)
	}
}

// cube events -o json prints each change as the stream sends it, one JSON
// object a line.
func TestOutput_EventsAsJSONLines(t *testing.T) {
	ch1, ch2 := api.Change{Index: 7, Task: outTask}, api.Change{Index: 8, Task: outTask}
	ch2.Task.State = api.Failed
	ch2.Task.Reason = "exit 1"
	f := newRouteFake(t, map[string]string{"GET /events": mustJSON(t, ch1) + "\n" + mustJSON(t, ch2) + "\n"})
	out, _ := cube(t, f.addr(), "events", "-o", "json") // the stream's end is an error
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("cube events -o json printed %d lines:\n%s", len(lines), out)
	}
	for i, want := range []api.Change{ch1, ch2} {
		var got api.Change
		if err := json.Unmarshal([]byte(lines[i]), &got); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("line %d: %v %+v, want %+v", i, err, got, want)
		}
	}
}

// An unknown -o is refused before any manager is asked, with the choices.
func TestOutput_UnknownFormatIsAUsageError(t *testing.T) {
	f := newRouteFake(t, listingRoutes(t, false))
	for _, l := range listings() {
		name := strings.Join(l.args, " ")
		_, err := cube(t, f.addr(), append(l.args, "-o", "yaml")...)
		if err == nil || !strings.Contains(err.Error(), `unknown output format "yaml"; want table, wide or json`) {
			t.Errorf("cube %s -o yaml: %v, want a usage error naming table, wide and json", name, err)
		}
	}
	if _, err := runRoot(t, "version", "-o", "wide"); err == nil || !strings.Contains(err.Error(), "want table or json") {
		t.Errorf("cube version -o wide: %v", err)
	}
	if f.calls != 0 {
		t.Errorf("a bad -o asked the manager %d time(s)", f.calls)
	}
	// Case does not matter: -o JSON is -o json.
	if out, err := cube(t, f.addr(), "node", "-o", "JSON"); err != nil || !strings.HasPrefix(out, "[") {
		t.Errorf("cube node -o JSON: %v\n%s", err, out)
	}
}

// listingCommands are the commands whose -o offers wide: every listing
// (events, a stream, keeps table and json; objects have no wider form).
var listingCommands = map[string]bool{"status": true, "node": true, "members": true, "token ls": true,
	"gossip keyring list": true, "operator raft list-peers": true, "service ls": true}

// Every -o/--output of cube is the one shared flag (outputFormat), and
// every listing command has it.
func TestOutput_OneFlagEverywhere(t *testing.T) {
	cmds := commandPaths(newRootCmd())
	withOutput := map[string]bool{}
	for p, c := range cmds {
		f := c.LocalFlags().Lookup("output")
		if f == nil {
			continue
		}
		withOutput[p] = true
		if _, ok := f.Value.(*outputValue); !ok || f.Shorthand != "o" || f.DefValue != "table" || (f.Usage != outputUsage && f.Usage != listOutputUsage) {
			t.Errorf("cube %s: --output is %T -%s default %q, want the shared outputValue flag (addOutputFlag, addListOutputFlag)", p, f.Value, f.Shorthand, f.DefValue)
		}
		if wide := f.Usage == listOutputUsage; wide != listingCommands[p] {
			t.Errorf("cube %s: -o wide offered %v; want it on the listings only (%v)", p, wide, listingCommands[p])
		}
	}
	for _, p := range []string{"status", "node", "token ls", "members", "events", "gossip keyring list",
		"operator raft list-peers", "operator snapshot inspect", "version", "service ls", "service inspect"} {
		if !withOutput[p] {
			t.Errorf("cube %s has no -o/--output", p)
		}
	}
	for p := range listingCommands {
		if !withOutput[p] {
			t.Errorf("listing cube %s has no -o/--output", p)
		}
	}
	// Subcommands that act do not inherit their parent's -o.
	for _, p := range []string{"node drain", "members remove"} {
		if cmds[p].Flags().Lookup("output") != nil {
			t.Errorf("cube %s has -o", p)
		}
	}
}

func TestVersion_FromLdflagsThenBuildInfo(t *testing.T) {
	info := func(version string, settings ...string) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			bi := &debug.BuildInfo{GoVersion: "go1.99"}
			bi.Main.Version = version
			for i := 0; i+1 < len(settings); i += 2 {
				bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
			}
			return bi, true
		}
	}
	none := func() (*debug.BuildInfo, bool) { return nil, false }
	cases := []struct {
		name            string
		version, commit string
		read            func() (*debug.BuildInfo, bool)
		want            versionInfo
	}{
		{"ldflags win", "v1.2.0", "abc123", info("v0.9.0", "vcs.revision", "fff", "vcs.modified", "true"),
			versionInfo{Version: "v1.2.0", Commit: "abc123", GoVersion: "go1.99"}},
		{"ldflags, stamp of the same commit", "v1.2.0-dirty", "abc123", info("(devel)", "vcs.revision", "abc123", "vcs.modified", "true"),
			versionInfo{Version: "v1.2.0-dirty", Commit: "abc123", Modified: true, GoVersion: "go1.99"}},
		{"stamp only", "", "", info("v1.3.0", "vcs.revision", "def456", "vcs.modified", "false"),
			versionInfo{Version: "v1.3.0", Commit: "def456", GoVersion: "go1.99"}},
		{"devel stamp", "", "", info("(devel)", "vcs.revision", "def456", "vcs.modified", "true"),
			versionInfo{Version: "dev", Commit: "def456", Modified: true, GoVersion: "go1.99"}},
		{"nothing", "", "", none, versionInfo{Version: "dev"}},
	}
	for _, c := range cases {
		got := buildVersion(c.version, c.commit, c.read)
		if c.want.GoVersion == "" {
			c.want.GoVersion = got.GoVersion
		}
		c.want.Platform = got.Platform
		if got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestVersion_Command(t *testing.T) {
	defer func(v, c string) { version, commit = v, c }(version, commit)
	version, commit = "v9.9.9", "0123456789abcdef0123456789abcdef01234567"

	out, err := runRoot(t, "version")
	if err != nil || !strings.Contains(out, "Version:  v9.9.9\n") || !strings.Contains(out, "Commit:   "+commit+"\n") || !strings.Contains(out, "Go:       go") {
		t.Errorf("cube version: %v\n%s", err, out)
	}
	out, err = runRoot(t, "version", "-o", "json")
	var v versionInfo
	if err != nil || json.Unmarshal([]byte(out), &v) != nil || v.Version != "v9.9.9" || v.Commit != commit || v.Platform == "" {
		t.Errorf("cube version -o json: %v\n%s", err, out)
	}
	out, err = runRoot(t, "--version")
	if err != nil || !strings.HasPrefix(out, "cube v9.9.9 (commit "+commit) {
		t.Errorf("cube --version: %v\n%s", err, out)
	}
}
