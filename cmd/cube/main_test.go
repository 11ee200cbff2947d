package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// The commands of cube, by kind: the client commands take -m/--manager and
// --timeout, the node commands do not. A command added to cube must be
// listed here (TestClientFlags_OnlyOnClientCommands fails otherwise).
var (
	clientCommands = []string{"run", "stop", "status", "node", "node drain", "node undrain",
		"members", "members remove", "logs", "events", "token", "token create", "token ls", "token rm",
		"gossip", "gossip keyring", "gossip keyring list", "gossip keyring install", "gossip keyring use", "gossip keyring remove",
		"operator snapshot save", "operator snapshot restore", "operator raft list-peers", "operator raft remove-peer",
		"system", "system gc", "service", "service create", "service ls", "service inspect", "service scale",
		"service update", "service rollback", "service rm", "apply"}
	nodeCommands = []string{"manager", "worker", "dev", "sim-workers"}
	// localCommands work on files only: no flags of either kind.
	localCommands = []string{"tls", "tls ca", "tls ca create", "tls cert", "tls cert create", "keygen",
		"operator", "operator snapshot", "operator snapshot inspect", "operator raft", "operator raft recover", "version"}
)

// commandPaths lists every command below root by its path without "cube ".
func commandPaths(root *cobra.Command) map[string]*cobra.Command {
	out := map[string]*cobra.Command{}
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			out[strings.TrimPrefix(sub.CommandPath(), root.Name()+" ")] = sub
			walk(sub)
		}
	}
	walk(root)
	return out
}

func TestClientFlags_OnlyOnClientCommands(t *testing.T) {
	t.Setenv("CUBE_MANAGERS", "")
	root := newRootCmd()
	cmds := commandPaths(root)
	known := map[string]bool{}
	for _, p := range append(append(append([]string{}, clientCommands...), nodeCommands...), localCommands...) {
		known[p] = true
		if cmds[p] == nil {
			t.Errorf("cube %s: no such command", p)
		}
	}
	for p := range cmds {
		if !known[p] {
			t.Errorf("cube %s is neither a client nor a node command: list it in clientCommands, nodeCommands or localCommands", p)
		}
	}
	for _, name := range []string{"manager", "timeout"} {
		if root.Flag(name) != nil {
			t.Errorf("cube itself has --%s: it belongs on the client commands only", name)
		}
	}
	for _, p := range nodeCommands {
		c := cmds[p]
		if c == nil {
			continue
		}
		for _, name := range []string{"manager", "timeout"} {
			if c.Flag(name) != nil {
				t.Errorf("cube %s has --%s, a client flag", p, name)
			}
		}
		if f := c.Flags().ShorthandLookup("m"); f != nil {
			t.Errorf("cube %s has -m (--%s)", p, f.Name)
		}
	}
	for _, p := range clientCommands {
		c := cmds[p]
		if c == nil {
			continue
		}
		m, timeout := c.Flag("manager"), c.Flag("timeout")
		if m == nil || m.Shorthand != "m" || m.DefValue != defaultManagers {
			t.Errorf("cube %s: -m/--manager is %+v, want shorthand m, default %q", p, m, defaultManagers)
		}
		if timeout == nil || timeout.DefValue != (20*time.Second).String() {
			t.Errorf("cube %s: --timeout is %+v, want default 20s", p, timeout)
		}
	}
}

func TestClientFlags_ManagerDefaultFromEnv(t *testing.T) {
	t.Setenv("CUBE_MANAGERS", "10.0.0.1:5556,10.0.0.2:5556")
	for _, p := range clientCommands {
		if f := commandPaths(newRootCmd())[p].Flag("manager"); f.DefValue != "10.0.0.1:5556,10.0.0.2:5556" {
			t.Errorf("cube %s: --manager defaults to %q with CUBE_MANAGERS set", p, f.DefValue)
		}
	}
}

// TestHelp_ShowsEveryUsageWhole renders the help of every command and fails
// if a flag's usage text is not shown as written: pflag takes a `backquoted`
// word of a usage string as the argument's name, drops the backquotes and
// shows the word after the flag.
func TestHelp_ShowsEveryUsageWhole(t *testing.T) {
	paths := []string{""}
	for p := range commandPaths(newRootCmd()) {
		paths = append(paths, p)
	}
	for _, p := range paths {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append(strings.Fields(p), "--help"))
		if err := root.Execute(); err != nil {
			t.Fatalf("cube %s --help: %v", p, err)
		}
		c, _, err := root.Find(strings.Fields(p))
		if err != nil {
			t.Fatal(err)
		}
		help := out.String()
		check := func(f *pflag.Flag) {
			if _, usage := pflag.UnquoteUsage(f); usage != f.Usage || !strings.Contains(help, f.Usage) {
				key := strings.TrimSpace(p + " --" + f.Name)
				t.Errorf("cube %s: usage %q is not shown whole in the help (a `backquoted` word becomes the argument name):\n%s", key, f.Usage, help)
			}
		}
		c.LocalFlags().VisitAll(check)
		c.InheritedFlags().VisitAll(check)
	}
}

// fakeManager answers the manager API calls of the client commands with
// fixed values and records the calls.
type fakeManager struct {
	*httptest.Server
	mu    sync.Mutex
	calls []string
}

func newFakeManager(t *testing.T) *fakeManager {
	fm := &fakeManager{}
	task := api.Task{ID: uuid.MustParse("bb1d59ef-9fc1-4e4b-a44d-db571eeed203"), Name: "t1", State: api.Running,
		Image: "cube-echo:latest", Worker: "w1", ContainerID: "0123456789abcdef",
		HostPorts: api.PortMap{"7777/tcp": {{HostIp: "0.0.0.0", HostPort: "49153"}}}}
	node := api.Node{Name: "w1", API: "127.0.0.1:5555", State: "alive", RuntimeAvailable: true, Cpu: 4, Memory: 8 << 30, Disk: 100 << 30, TaskCount: 1,
		Labels: map[string]string{"zone": "a", "disk": "ssd"}}
	fm.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fm.mu.Lock()
		fm.calls = append(fm.calls, r.Method+" "+r.URL.RequestURI())
		fm.mu.Unlock()
		var v any
		switch r.Method + " " + r.URL.Path {
		case "GET /tasks":
			v = []api.Task{task}
		case "POST /tasks":
			w.WriteHeader(http.StatusCreated)
			v = task
		case "DELETE /tasks/" + task.ID.String():
			t := task
			t.State = api.Completed
			v = t
		case "GET /tasks/" + task.ID.String() + "/logs":
			_, _ = w.Write([]byte("hello from t1\n"))
			return
		case "GET /nodes":
			v = []api.Node{node}
		case "POST /nodes/w1/drain":
			var req api.DrainRequest
			_ = json.NewDecoder(r.Body).Decode(&req)
			n := node
			n.Drain = req.Drain
			v = n
		case "GET /cluster":
			v = api.ClusterInfo{Self: "m1", Term: 3, AppliedIndex: 42, Servers: []api.RaftServer{{ID: "m1", Addr: "127.0.0.1:6556", Voter: true, Leader: true}},
				Members: []api.GossipMember{
					{Name: "manager-m1", Addr: "127.0.0.1:6557", Role: "manager", API: "127.0.0.1:5556", State: "alive", MaxCommand: 13, Version: "v1.4.0 0123456789ab"},
					{Name: "w1", Addr: "127.0.0.1:6555", Role: "worker", API: "127.0.0.1:5555", State: "alive"},
				}}
		case "DELETE /cluster/servers/m2":
		case "POST /tokens":
			var req api.TokenRequest
			_ = json.NewDecoder(r.Body).Decode(&req)
			w.WriteHeader(http.StatusCreated)
			v = api.Token{AccessorID: tokenID, Name: req.Name, Role: req.Role, Secret: "cube_s3cret"}
		case "GET /tokens":
			v = []api.Token{{AccessorID: tokenID, Name: "ci", Role: api.RoleSubmit}}
		case "DELETE /tokens/" + tokenID.String():
			w.WriteHeader(http.StatusNoContent)
			return
		case "POST /system/gc":
			v = api.GCResult{Tasks: 3, Workers: 1}
		default:
			http.Error(w, "no leader", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(v)
	}))
	t.Cleanup(fm.Close)
	return fm
}

// tokenID is the accessor of the fake manager's token.
var tokenID = uuid.MustParse("5d0c6f0e-2b7a-4c1e-9a55-6b3c1f2e4d70")

// cube runs the CLI in-process with args followed by -m, as test/procs.go does.
func cube(t *testing.T, manager string, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append(args, "-m", manager))
	err := root.Execute()
	return out.String(), err
}

// TestClientCommands_AgainstAFakeManager runs every client command that
// ends on its own, with -m after its arguments, and checks the call it made
// and what it printed.
func TestClientCommands_AgainstAFakeManager(t *testing.T) {
	fm := newFakeManager(t)
	addr := strings.TrimPrefix(fm.URL, "http://")
	id := "bb1d59ef-9fc1-4e4b-a44d-db571eeed203"
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	taskFile := filepath.Join(wd, "..", "..", "examples", "task1.json")
	cases := []struct {
		args []string
		call string
		want []string
	}{
		{[]string{"run", "-f", taskFile}, "POST /tasks", []string{"task submitted " + id + " (Running)\n"}},
		{[]string{"stop", id}, "DELETE /tasks/" + id, []string{"stop of task " + id + " committed (state Completed)\n"}},
		{[]string{"status", "--consistent"}, "GET /tasks?consistent=1", []string{
			"ID", "NAME", "CREATED", "STATE", "CONTAINERNAME", "IMAGE", "WORKER", "PORTS", "RESTARTS", "REASON",
			id + "  t1    -        Running  0123456789ab   cube-echo:latest  w1      49153->7777/tcp  0         \n"}},
		{[]string{"node"}, "GET /nodes", []string{
			"NAME  STATE  SCHEDULING  API             CPU     MEMORY     DISK         TASKS  RUNTIME  LABELS\n" +
				"w1    alive  eligible    127.0.0.1:5555  0.00/4  0B/8.0GiB  0B/100.0GiB  1      up       disk=ssd,zone=a\n"}},
		{[]string{"node", "drain", "w1"}, "POST /nodes/w1/drain", []string{"worker w1 is draining: nothing new is placed on it and its 1 task(s) move to other workers (cube node shows TASKS fall to 0)\n"}},
		{[]string{"node", "undrain", "w1"}, "POST /nodes/w1/drain", []string{"worker w1 is eligible again: new and restarted tasks may be placed on it\n"}},
		{[]string{"members"}, "GET /cluster", []string{"raft (term 3, answered by m1 at index 42)\n", "m1  127.0.0.1:6556", "*       -\n",
			"\ngossip\nNAME        ADDR            ROLE     API             STATE  COMMANDS\n" +
				"manager-m1  127.0.0.1:6557  manager  127.0.0.1:5556  alive  up to 13\n" +
				"w1          127.0.0.1:6555  worker   127.0.0.1:5555  alive  -\n"}},
		{[]string{"members", "remove", "m2"}, "DELETE /cluster/servers/m2", []string{"manager m2 removed from the raft configuration\n"}},
		{[]string{"logs", id, "--tail", "5"}, "GET /tasks/" + id + "/logs?tail=5", []string{"hello from t1\n"}},
		{[]string{"token", "create", "--name", "ci", "--role", "submit"}, "POST /tokens", []string{
			"token \"ci\" created (role submit)\naccessor: " + tokenID.String() + "\nsecret:   cube_s3cret\n"}},
		{[]string{"token", "create", "--name", "ci", "--role", "submit", "-q"}, "POST /tokens", []string{"cube_s3cret\n"}},
		{[]string{"token", "ls"}, "GET /tokens?consistent=1", []string{"ACCESSOR", "NAME", "ROLE", "CREATED", tokenID.String() + "  ci    submit  -\n"}},
		{[]string{"token", "rm", tokenID.String()}, "GET /tokens?consistent=1, DELETE /tokens/" + tokenID.String(), []string{"token " + tokenID.String() + " deleted\n"}},
		{[]string{"system", "gc"}, "POST /system/gc", []string{"removed 3 finished task(s) and 1 departed worker(s)\n"}},
	}
	for _, c := range cases {
		fm.mu.Lock()
		fm.calls = nil
		fm.mu.Unlock()
		out, err := cube(t, addr, c.args...)
		if err != nil {
			t.Errorf("cube %s: %v\n%s", strings.Join(c.args, " "), err, out)
			continue
		}
		fm.mu.Lock()
		calls := fm.calls
		fm.mu.Unlock()
		if got := strings.Join(calls, ", "); got != c.call {
			t.Errorf("cube %s called %q, want %q", strings.Join(c.args, " "), got, c.call)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("cube %s printed\n%s\nwithout %q", strings.Join(c.args, " "), out, w)
			}
		}
	}

	for _, args := range [][]string{{"stop", "not-a-uuid"}, {"logs", "not-a-uuid"}} {
		if _, err := cube(t, addr, args...); err == nil || err.Error() != `no task has the ID, ID prefix or name "not-a-uuid" (cube status lists them)` {
			t.Errorf("cube %s: %v", strings.Join(args, " "), err)
		}
	}
	// Bad token commands fail before any manager is asked.
	fm.mu.Lock()
	fm.calls = nil
	fm.mu.Unlock()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"token", "rm", "ci"}, `token accessor "ci" is not a UUID (cube token ls lists them)`},
		{[]string{"token", "create", "--name", "ci", "--role", "admin"}, `Role "admin" is not a token role; want read, submit or operator`},
		{[]string{"token", "create", "--role", "read"}, `required flag(s) "name" not set`},
	} {
		if _, err := cube(t, addr, tc.args...); err == nil || err.Error() != tc.want {
			t.Errorf("cube %s: %v, want %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	fm.mu.Lock()
	if len(fm.calls) != 0 {
		t.Errorf("bad token commands called the manager: %q", fm.calls)
	}
	fm.mu.Unlock()
	// An accessor the cluster does not hold is reported, not "deleted".
	other := "0b0e4a4e-0000-4000-8000-000000000000"
	if _, err := cube(t, addr, "token", "rm", other); err == nil || err.Error() != "no token has accessor "+other+" (cube token ls lists them)" {
		t.Errorf("cube token rm of an unknown accessor: %v", err)
	}
	// -q prints the secret alone, for $(cube token create -q …).
	if out, err := cube(t, addr, "token", "create", "--name", "ci", "--role", "read", "-q"); err != nil || out != "cube_s3cret\n" {
		t.Errorf("cube token create -q printed %q, %v; want the secret alone", out, err)
	}
}

// --timeout bounds a client command, its retries included.
func TestClientCommands_TimeoutBoundsTheCall(t *testing.T) {
	fm := newFakeManager(t)
	addr := strings.TrimPrefix(fm.URL, "http://")
	start := time.Now()
	_, err := cube(t, addr, "members", "remove", "m9", "--timeout", "300ms")
	if err == nil {
		t.Fatal("a manager answering 503 only: no error")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("--timeout 300ms: gave up after %s (%v)", took, err)
	}
}
