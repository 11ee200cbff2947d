package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// unitFile is a systemd unit: section -> key -> values (a key may repeat).
type unitFile map[string]map[string][]string

func readUnit(t *testing.T, path string) unitFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u, section := unitFile{}, ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: %q is neither a section nor KEY=VALUE", path, n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// words are the space-separated words of every value of section.key.
func (u unitFile) words(section, key string) []string {
	var out []string
	for _, v := range u[section][key] {
		out = append(out, strings.Fields(v)...)
	}
	return out
}

// The units restart on failure, start after the network (and the worker
// after Docker), run the binary with its config file, and give the node
// more time to stop than its own shutdown bounds.
func TestSystemdUnits(t *testing.T) {
	clearEnv(t)
	for _, tc := range []struct {
		unit, command, config string
		after                 []string
	}{
		{"cube-manager.service", "manager", "/etc/cube/manager.hcl", []string{"network-online.target"}},
		{"cube-worker.service", "worker", "/etc/cube/worker.hcl", []string{"network-online.target", "docker.service"}},
	} {
		t.Run(tc.unit, func(t *testing.T) {
			path := filepath.Join("..", "..", "deploy", "systemd", tc.unit)
			u := readUnit(t, path)
			for _, want := range tc.after {
				if !slices.Contains(u.words("Unit", "After"), want) || !slices.Contains(u.words("Unit", "Wants"), want) {
					t.Errorf("%s: After= %v, Wants= %v; want both to name %s", tc.unit, u.words("Unit", "After"), u.words("Unit", "Wants"), want)
				}
			}
			one := func(key string) string {
				vs := u["Service"][key]
				if len(vs) != 1 {
					t.Errorf("%s: [Service] %s = %v, want one value", tc.unit, key, vs)
					return ""
				}
				return vs[0]
			}
			if got := one("Restart"); got != "on-failure" {
				t.Errorf("%s: Restart=%s, want on-failure", tc.unit, got)
			}
			if got := one("KillSignal"); got != "SIGTERM" {
				t.Errorf("%s: KillSignal=%s, want SIGTERM", tc.unit, got)
			}
			if d, err := time.ParseDuration(one("TimeoutStopSec")); err != nil || d < 30*time.Second {
				t.Errorf("%s: TimeoutStopSec=%s (%v); want at least 30s, above the node's shutdown bounds (about 20s)", tc.unit, one("TimeoutStopSec"), err)
			}
			if one("StateDirectory") == "" || one("LimitNOFILE") == "" {
				t.Errorf("%s: want a StateDirectory (data dir) and LimitNOFILE", tc.unit)
			}
			argv := strings.Fields(one("ExecStart"))
			want := []string{"/usr/local/bin/cube", tc.command, "--config", tc.config}
			if !slices.Equal(argv, want) {
				t.Fatalf("%s: ExecStart=%v, want %v", tc.unit, argv, want)
			}
			// The command line is one cube accepts.
			root := newRootCmd()
			sub, args, err := root.Find(argv[1:])
			if err != nil || sub.Name() != tc.command {
				t.Fatalf("%s: cube %v: %v", tc.unit, argv[1:], err)
			}
			if err := sub.ParseFlags(args); err != nil {
				t.Errorf("%s: cube %s does not take %v: %v", tc.unit, tc.command, args, err)
			}
		})
	}
}

// When systemd-analyze is installed, it accepts the units too (with the
// binary path pointed at an executable, which it checks for).
func TestSystemdUnits_Verify(t *testing.T) {
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed; TestSystemdUnits checks the directives")
	}
	dir := t.TempDir()
	// The test binary itself stands in for cube: systemd-analyze only checks
	// that ExecStart names an executable.
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, unit := range []string{"cube-manager.service", "cube-worker.service"} {
		src, err := os.ReadFile(filepath.Join("..", "..", "deploy", "systemd", unit))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, unit)
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(src), "/usr/local/bin/cube", bin)), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	out, err := exec.Command(tool, append([]string{"verify"}, paths...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
