package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/hashicorp/memberlist"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/test/testkit"
)

// refusalOf is the Reason a worker named w1 with cfg gives task t ("" if it
// runs it).
func refusalOf(cfg Config, t api.Task) string {
	w := &Worker{cfg: cfg, name: "w1"}
	return w.refusal(t)
}

// The allow check of mounts: the cleaned host path must be an allowed
// prefix or lie beneath one, element by element, and must stay there once
// symbolic links are resolved.
func TestWorker_Refusal_MountPrefixes(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "srv", "data")
	outside := filepath.Join(root, "etc")
	for _, d := range []string{data, filepath.Join(root, "srv", "data2"), outside, filepath.Join(root, "real")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A link under the allowed directory pointing out of it, and an allowed
	// prefix that is itself a link.
	if err := os.Symlink(outside, filepath.Join(data, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "real"), filepath.Join(root, "linked")); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		allow  []string
		mount  string
		refuse string // a part of the reason, "" when allowed
	}{
		{"nothing allowed", nil, data + ":/d", "does not allow binding host path " + data},
		{"the prefix itself", []string{data}, data + ":/d", ""},
		{"the prefix, written with a trailing slash", []string{data + "/"}, data + ":/d:ro", ""},
		{"beneath the prefix", []string{data}, data + "/a/b:/d", ""},
		{"beneath, not existing yet", []string{data}, data + "/new/dir:/d", ""},
		{"unclean but beneath", []string{data}, data + "//./a/:/d", ""},
		{"sibling sharing the prefix's start", []string{data}, data + "2:/d", "binding host path " + data + "2"},
		{"sibling, prefix without slash", []string{data}, data + "2/x:/d", "binding host path " + data + "2/x"},
		{"the prefix's parent", []string{data}, filepath.Dir(data) + ":/d", "binding host path " + filepath.Dir(data)},
		{"climbing out with ..", []string{data}, data + "/../../etc:/d", "binding host path " + data + "/../../etc:/d"},
		{"a link out of the prefix", []string{data}, data + "/escape:/d", "resolves to " + outside + " through a symbolic link"},
		{"beneath a link out of the prefix", []string{data}, data + "/escape/passwd:/d", "resolves to " + outside + "/passwd"},
		{"not existing beneath a link out", []string{data}, data + "/escape/new/dir:/d", "resolves to " + outside + "/new/dir"},
		{"an allowed prefix that is a link out: followed on both sides", []string{data + "/escape"}, data + "/escape:/d", ""},
		{"a prefix that is a link, used by its name", []string{filepath.Join(root, "linked")}, filepath.Join(root, "linked", "x") + ":/d", ""},
		{"a prefix that is a link, used by where it points", []string{filepath.Join(root, "linked")}, filepath.Join(root, "real", "x") + ":/d", "does not allow binding host path"},
		{"root allows all", []string{"/"}, outside + ":/d", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.AllowMounts = tc.allow
			got := refusalOf(cfg, api.Task{Image: "x", Mounts: []string{tc.mount}})
			switch {
			case tc.refuse == "" && got != "":
				t.Fatalf("mount %s with --allow-mount %q: refused (%s), want it allowed", tc.mount, tc.allow, got)
			case tc.refuse != "" && !strings.Contains(got, tc.refuse):
				t.Fatalf("mount %s with --allow-mount %q: reason %q, want one containing %q", tc.mount, tc.allow, got, tc.refuse)
			case tc.refuse != "" && !strings.HasPrefix(got, api.ReasonNotAllowed):
				t.Fatalf("reason %q does not begin with %q", got, api.ReasonNotAllowed)
			}
		})
	}
	// Two mounts: the one outside is named.
	cfg := DefaultConfig()
	cfg.AllowMounts = []string{data}
	if got := refusalOf(cfg, api.Task{Image: "x", Mounts: []string{data + ":/a", outside + ":/b"}}); !strings.Contains(got, "binding host path "+outside) {
		t.Fatalf("second mount outside: reason %q", got)
	}
}

// Each kind of ask is refused by a default worker with a reason naming what
// was asked, the field and the flag that would allow it; allowed, it runs.
func TestWorker_Refusal_Reasons(t *testing.T) {
	cases := []struct {
		name  string
		task  func(*api.Task)
		allow func(*Config)
		want  string
	}{
		{"privileged", func(t *api.Task) { t.Privileged = true }, func(c *Config) { c.AllowPrivileged = true },
			"not allowed: worker w1 does not allow privileged tasks, which the task asks for in Privileged (start the worker with --allow-privileged)"},
		{"host network", func(t *api.Task) { t.NetworkMode = "host" }, func(c *Config) { c.AllowHostNetwork = true },
			"not allowed: worker w1 does not allow host-network tasks, which the task asks for in NetworkMode (start the worker with --allow-host-network)"},
		{"mount", func(t *api.Task) { t.Mounts = []string{"/srv/data/x:/x:ro"} }, func(c *Config) { c.AllowMounts = []string{"/srv/data"} },
			"not allowed: worker w1 does not allow binding host path /srv/data/x, which the task asks for in Mounts (start the worker with --allow-mount /srv/data/x)"},
		{"capability", func(t *api.Task) { t.CapAdd = []string{"NET_ADMIN"} }, func(c *Config) { c.AllowCaps = []string{"NET_ADMIN"} },
			"not allowed: worker w1 does not allow capability NET_ADMIN, which the task asks for in CapAdd (start the worker with --allow-cap NET_ADMIN)"},
		{"any capability", func(t *api.Task) { t.CapAdd = []string{"SYS_ADMIN"} }, func(c *Config) { c.AllowCaps = []string{"ALL"} },
			"not allowed: worker w1 does not allow capability SYS_ADMIN, which the task asks for in CapAdd (start the worker with --allow-cap SYS_ADMIN)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			task := api.Task{Image: "x"}
			tc.task(&task)
			if got := refusalOf(DefaultConfig(), task); got != tc.want {
				t.Fatalf("default worker: reason\n\t%q\nwant\n\t%q", got, tc.want)
			}
			cfg := DefaultConfig()
			tc.allow(&cfg)
			if got := refusalOf(cfg, task); got != "" {
				t.Fatalf("allowing worker: refused: %s", got)
			}
		})
	}
	if got := refusalOf(DefaultConfig(), api.Task{Image: "x", CapAdd: []string{"CHOWN"}}); got != "" {
		t.Fatalf("a capability Docker grants anyway: refused: %s", got)
	}
}

func TestConfig_ValidateAllows(t *testing.T) {
	ok := DefaultConfig()
	ok.DataDir = t.TempDir()
	ok.AllowPrivileged, ok.AllowHostNetwork = true, true
	ok.AllowMounts, ok.AllowCaps = []string{"/srv/data", "/"}, []string{"NET_ADMIN", "ALL"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid allowances: %v", err)
	}
	var many []string
	for i := range 40 {
		many = append(many, fmt.Sprintf("/srv/some/longer/path/%d", i))
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"relative mount", func(c *Config) { c.AllowMounts = []string{"srv"} }, `AllowMounts entry "srv"`},
		{"mount with ..", func(c *Config) { c.AllowMounts = []string{"/srv/../etc"} }, `AllowMounts entry "/srv/../etc"`},
		{"unknown cap", func(c *Config) { c.AllowCaps = []string{"NET_WIZARD"} }, "AllowCaps entry"},
		{"lower-case cap", func(c *Config) { c.AllowCaps = []string{"net_admin"} }, "write it NET_ADMIN"},
		{"too many to gossip", func(c *Config) { c.AllowMounts = many }, "bytes of gossip metadata"},
	} {
		c := ok
		tc.mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

// The most a worker may gossip of allowances still fits memberlist's limit
// with the rest of a worker's metadata at its largest.
func TestAllowTokens_FitTheGossipMetadata(t *testing.T) {
	allows := []string{}
	for {
		next := append(slices.Clone(allows), "mount:/srv/"+strings.Repeat("d", 20))
		if b, _ := json.Marshal(next); len(b) > maxAllowBytes {
			break
		}
		allows = next
	}
	meta := cluster.Meta{Role: cluster.RoleWorker, API: "[fd00:1234:5678:9abc:def0:1234:5678:9abc]:65535",
		Cpu: 1024.125, Memory: 1 << 52, Disk: 1 << 60, RuntimeDown: true, Allows: allows}
	b, err := json.Marshal(meta)
	if err != nil || len(b) > memberlist.MetaMaxSize {
		t.Fatalf("worst-case worker metadata is %d bytes (%v), more than memberlist's %d", len(b), err, memberlist.MetaMaxSize)
	}
}

// Against the real Docker engine: a worker allowing NET_ADMIN and a host
// directory runs a task asking for both, and the container has them.
func TestWorker_AllowedEscalationRuns(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, func(c *Config) {
		c.AllowCaps = []string{"NET_ADMIN"}
		c.AllowMounts = []string{dir}
	})
	task := echoTask(1)
	task.CapAdd = []string{"NET_ADMIN"}
	task.Mounts = []string{dir + "/sub:/data:ro"}
	h.submit(task, http.StatusCreated)
	got := h.waitState(task.ID, api.Running, 30*time.Second)
	if status, body := waitHTTP(t, http.MethodGet, hostURL(t, got)+"/health", ""); status != http.StatusOK {
		t.Fatalf("GET /health: %d %s", status, body)
	}
	cj := inspectRaw(t, got.ContainerID)
	// The engine reports the names it was given, or (newer engines) with
	// the CAP_ prefix.
	if !slices.Contains(cj.HostConfig.CapAdd, "NET_ADMIN") && !slices.Contains(cj.HostConfig.CapAdd, "CAP_NET_ADMIN") {
		t.Errorf("HostConfig.CapAdd = %q, want NET_ADMIN", cj.HostConfig.CapAdd)
	}
	if want := []string{dir + "/sub:/data:ro"}; !slices.Equal(cj.HostConfig.Binds, want) {
		t.Errorf("HostConfig.Binds = %q, want %q", cj.HostConfig.Binds, want)
	}
	if cj.HostConfig.Privileged || cj.HostConfig.NetworkMode.IsHost() {
		t.Errorf("privileged %v, network %q: asked for neither", cj.HostConfig.Privileged, cj.HostConfig.NetworkMode)
	}
}

// Against the real Docker engine: the host network, allowed, runs: the echo
// service answers on the host's loopback port it was told to listen on,
// with nothing published.
func TestWorker_AllowedHostNetworkRuns(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.AllowHostNetwork = true })
	port := freePort(t)
	task := echoTask(1, "ECHO_ADDR=127.0.0.1:"+port)
	task.ExposedPorts = api.PortSet{port + "/tcp": {}} // declared, not published
	task.NetworkMode = api.NetworkHost
	h.submit(task, http.StatusCreated)
	got := h.waitState(task.ID, api.Running, 30*time.Second)
	if status, body := waitHTTP(t, http.MethodGet, "http://127.0.0.1:"+port+"/health", ""); status != http.StatusOK {
		t.Fatalf("GET /health on the host's port %s: %d %s", port, status, body)
	}
	cj := inspectRaw(t, got.ContainerID)
	if !cj.HostConfig.NetworkMode.IsHost() || cj.HostConfig.Privileged || len(cj.HostConfig.PortBindings) != 0 {
		t.Errorf("network %q, privileged %v, port bindings %v: want the host network only, nothing published",
			cj.HostConfig.NetworkMode, cj.HostConfig.Privileged, cj.HostConfig.PortBindings)
	}
}

// Against the real Docker engine: a spec asking for privileged mode creates
// a privileged container. It is created, not started: privileged mode
// grants every capability, and an engine that itself runs in a container
// with a narrower capability set (this project's test machines) cannot
// start one ("unable to apply caps"). Whether the worker lets a task get
// this far is TestWorker_Refusal_Reasons.
func TestDocker_PrivilegedSpec(t *testing.T) {
	d := newTestDocker(t)
	spec := echoSpec(t, dkTestLabels(t))
	spec.Privileged = true
	id, err := d.Create(dkCtx(t, 30*time.Second), spec)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if cj := inspectRaw(t, id); !cj.HostConfig.Privileged {
		t.Fatalf("HostConfig.Privileged = false, want true")
	}
}

// Against the real Docker engine: a default worker refuses a task asking
// for NET_ADMIN at once, with the reason and the flag, before anything
// reaches the engine (not even a pull of its image): no container exists.
func TestWorker_EscalationRefusedByDefault(t *testing.T) {
	h := newHarness(t, nil)
	task := echoTask(1)
	task.CapAdd = []string{"NET_ADMIN"}
	h.submit(task, http.StatusCreated)
	got := h.waitState(task.ID, api.Failed, 10*time.Second)
	want := fmt.Sprintf("not allowed: worker %s does not allow capability NET_ADMIN, which the task asks for in CapAdd (start the worker with --allow-cap NET_ADMIN)", h.name)
	if got.Reason != want || got.ContainerID != "" {
		t.Fatalf("reason %q, container %q; want reason %q and no container", got.Reason, got.ContainerID, want)
	}
	// An image that does not exist: the refusal comes first, so the
	// engine was never asked to pull it.
	missing := echoTask(1)
	missing.Image = "cube-no-such-image:v0"
	missing.Privileged = true
	h.submit(missing, http.StatusCreated)
	if got := h.waitState(missing.ID, api.Failed, 10*time.Second); !strings.HasPrefix(got.Reason, api.ReasonNotAllowed) {
		t.Fatalf("reason %q, want the refusal, not the missing image", got.Reason)
	}
	if cs := h.containers(nil); len(cs) != 0 {
		t.Fatalf("%d containers exist for refused tasks: %+v", len(cs), cs)
	}
}

// inspectRaw returns Docker's own view of a container.
func inspectRaw(t *testing.T, id string) container.InspectResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cj, err := rawDockerClient(t).ContainerInspect(ctx, id)
	if err != nil {
		t.Fatalf("docker inspect %s: %v", short(id), err)
	}
	return cj
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// In a cluster the agent gossips what its worker allows, from the start
// and across later metadata updates (the engine monitor's), so the leader
// can place escalating tasks on it.
func TestAgent_GossipsWhatItAllows(t *testing.T) {
	g := cluster.FastGossipConfig()
	gossipAddr := testkit.FreeAddr(t)
	host, port, _ := cluster.ParseGossipAddr(gossipAddr)
	g.Name, g.BindAddr, g.BindPort, g.Logger = "manager-m1", host, port, testkit.Logger(t, "m1")
	g.Meta = cluster.Meta{Role: cluster.RoleManager, API: "127.0.0.1:1", RaftID: "m1", RaftAddr: "127.0.0.1:1"}
	mgr, err := cluster.NewPool(g)
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Shutdown()

	docker, err := NewDocker(DefaultDockerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer docker.Close()
	rt := &switchablePing{Runtime: docker}
	cfg := testAgentConfig(t)
	cfg.GossipAddr, cfg.Seeds, cfg.Runtime, cfg.RuntimeCheckInterval = testkit.FreeAddr(t), []string{gossipAddr}, rt, 50*time.Millisecond
	cfg.Worker.AllowHostNetwork = true
	cfg.Worker.AllowMounts = []string{"/srv/data/"}
	cfg.Worker.AllowCaps = []string{"NET_ADMIN", "CHOWN"}
	a, err := NewAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()

	want := []string{"host-network", "mount:/srv/data", "cap:NET_ADMIN"}
	for _, down := range []bool{false, true} {
		rt.down.Store(down)
		testkit.Eventually(t, 30*time.Second, func() error {
			for _, m := range mgr.Members() {
				if m.Name == a.Name() && m.Meta.RuntimeDown == down && slices.Equal(m.Meta.Allows, want) {
					return nil
				}
			}
			return fmt.Errorf("members %+v: want %s allowing %q, runtime down %v", mgr.Members(), a.Name(), want, down)
		})
	}
}
