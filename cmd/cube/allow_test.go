package main

import (
	"slices"
	"strings"
	"testing"
)

// What tasks may ask for is set per worker by flags (repeatable) or by the
// agent file; nothing is allowed by default.
func TestConfig_WorkerAllowances(t *testing.T) {
	clearEnv(t)
	def, err := workerConfig(t, "--data", "/tmp/w1")
	if err != nil {
		t.Fatal(err)
	}
	if w := def.Worker; w.AllowPrivileged || w.AllowHostNetwork || len(w.AllowMounts) > 0 || len(w.AllowCaps) > 0 {
		t.Fatalf("defaults allow %+v, want nothing", w.AllowTokens())
	}

	flags, err := workerConfig(t, "--data", "/tmp/w1", "--allow-privileged", "--allow-host-network",
		"--allow-mount", "/srv/data", "--allow-mount", "/var/log", "--allow-cap", "NET_ADMIN", "--allow-cap", "SYS_TIME")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"privileged", "host-network", "mount:/srv/data", "mount:/var/log", "cap:NET_ADMIN", "cap:SYS_TIME"}
	if got := flags.Worker.AllowTokens(); !slices.Equal(got, want) {
		t.Errorf("flags: allows %q, want %q", got, want)
	}

	path := writeFile(t, `
data_dir           = "/tmp/w1"
allow_privileged   = true
allow_host_network = false
allow_mounts       = ["/srv/data", "/mnt/scratch"]
allow_caps         = ["ALL"]
`)
	file, err := workerConfig(t, "--config", path)
	if err != nil {
		t.Fatal(err)
	}
	want = []string{"privileged", "mount:/srv/data", "mount:/mnt/scratch", "cap:ALL"}
	if got := file.Worker.AllowTokens(); !slices.Equal(got, want) {
		t.Errorf("file: allows %q, want %q", got, want)
	}
	if err := file.Validate(); err != nil {
		t.Errorf("file: %v", err)
	}

	// A flag on the command line wins over the file, list and all.
	both, err := workerConfig(t, "--config", path, "--allow-mount", "/only", "--allow-privileged=false")
	if err != nil {
		t.Fatal(err)
	}
	want = []string{"mount:/only", "cap:ALL"}
	if got := both.Worker.AllowTokens(); !slices.Equal(got, want) {
		t.Errorf("file and flags: allows %q, want %q", got, want)
	}

	bad, err := workerConfig(t, "--data", "/tmp/w1", "--allow-cap", "net_admin")
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "write it NET_ADMIN") {
		t.Errorf("--allow-cap net_admin: %v, want the error saying how to write it", err)
	}
	if _, err := workerConfig(t, "--config", writeFile(t, `allow_mounts = "/srv"`), "--data", "/d"); err == nil ||
		!strings.Contains(err.Error(), "allow_mounts") {
		t.Errorf("allow_mounts as a string: %v, want an error naming the key", err)
	}
}

// cube worker --help says what tasks may ask for and how to allow it.
func TestWorkerHelp_NamesTheAllowances(t *testing.T) {
	cmd := newWorkerCmd()
	help := cmd.Long + cmd.Flags().FlagUsages()
	for _, s := range []string{"--allow-privileged", "--allow-host-network", "--allow-mount PREFIX", "--allow-cap CAP", "Privileged", "CapAdd"} {
		if !strings.Contains(help, s) {
			t.Errorf("cube worker --help does not mention %q", s)
		}
	}
}
