package drill

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func result(drill int, system string, trial int, main float64) Result {
	d := drillByNum(drill)
	return Result{Drill: drill, Name: d.Name, System: system, Trial: trial,
		Measures: map[string][]float64{d.Main: {main}, "elected": {main / 2}}}
}

// TestReport_WriteKeepsTextAndAddsEarlierSystems: RESULTS.md keeps the text
// around its markers, shows this run's rows and, for systems this run did
// not measure, the latest earlier run's; the chart and JSON are written.
func TestReport_WriteKeepsTextAndAddsEarlierSystems(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "RESULTS.md"), []byte("# Intro\n\n"+beginMarker+"\nold\n"+endMarker+"\n\nAfter.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	earlier := Report{Started: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		Results: []Result{result(1, "swarm", 1, 20000), result(1, "cube-fast", 1, 99999)}}
	b, _ := json.Marshal(earlier)
	os.MkdirAll(filepath.Join(dir, "results"), 0o755)
	if err := os.WriteFile(filepath.Join(dir, "results", "2026-01-01T000000Z.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	rep := &Report{Started: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), Finished: time.Date(2026, 2, 1, 0, 10, 0, 0, time.UTC),
		Results: []Result{result(1, "cube-fast", 1, 1000), result(1, "cube-fast", 2, 3000), result(2, "cube-fast", 1, 800)}}
	name, err := rep.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(name); err != nil {
		t.Fatal(err)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "RESULTS.md"))
	s := string(md)
	for _, want := range []string{"# Intro", "After.", "| 1 worker-poweroff | cube-fast | 2 | recovered | 1.00 s | 3.00 s | 3.00 s |",
		"| 1 worker-poweroff | swarm | 1 | recovered | 20.0 s |", "| 2 leader-poweroff | cube-fast | 1 | write | 800 ms |",
		"- swarm: results/2026-01-01T000000Z.json"} {
		if !strings.Contains(s, want) {
			t.Errorf("RESULTS.md lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "old") || strings.Contains(s, "99.9 s") || strings.Count(s, beginMarker) != 1 {
		t.Errorf("RESULTS.md kept the old block or the earlier cube-fast rows:\n%s", s)
	}
	svg, err := os.ReadFile(filepath.Join(dir, "chart.svg"))
	if err != nil || !strings.Contains(string(svg), "1 worker-poweroff: swarm") {
		t.Errorf("chart.svg: %v, %.200s", err, svg)
	}
}

func TestClean(t *testing.T) {
	ok := result(1, "cube-fast", 1, 1000)
	if err := Clean([]Result{ok}); err != nil {
		t.Errorf("Clean(ok) = %v", err)
	}
	fastFlaps := Result{System: "cube-fast", Counts: map[string]int{"false_dead": 2, "leader_changes": 3}}
	if err := Clean([]Result{ok, fastFlaps}); err != nil {
		t.Errorf("Clean(--fast flaps) = %v; want them reported, not failed", err)
	}
	for _, bad := range []Result{{Lost: 1}, {Duplicates: 1}, {Missing: 1}, {Panics: 1}, {Err: "no recovery"},
		{System: "cube-default", Counts: map[string]int{"false_dead": 1}}, {System: "cube-default", Counts: map[string]int{"leader_changes": 1}}} {
		if err := Clean([]Result{ok, bad}); err == nil {
			t.Errorf("Clean(%+v) = nil, want an error", bad)
		}
	}
}

func TestSpec(t *testing.T) {
	s, err := LoadSpec("../deploy/machine/machines.json")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.Names("manager"), ","); got != "m1,m2,m3" {
		t.Errorf("managers %s", got)
	}
	if got := strings.Join(s.Names("worker"), ","); got != "w1,w2,w3" {
		t.Errorf("workers %s", got)
	}
	if s.Addr("w2") != s.Subnet+".22" || s.managersEnv() != "m1="+s.Subnet+".11 m2="+s.Subnet+".12 m3="+s.Subnet+".13" {
		t.Errorf("addresses: %s, %s", s.Addr("w2"), s.managersEnv())
	}
	bad := filepath.Join(t.TempDir(), "m.json")
	os.WriteFile(bad, []byte(`{"network":"n","subnet":"10.0.0","image":"i","machines":[{"name":"a","role":"boss","host":3}]}`), 0o644)
	if _, err := LoadSpec(bad); err == nil || !strings.Contains(err.Error(), "neither manager nor worker") {
		t.Errorf("LoadSpec(bad role) = %v", err)
	}
}

// TestVagrantfile: the Vagrantfile defines its machines from machines.json
// (so `vagrant up` and the drill bring up the same machines) and, where
// Vagrant is installed, `vagrant validate` accepts it.
func TestVagrantfile(t *testing.T) {
	b, err := os.ReadFile("../Vagrantfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`deploy/machine/machines.json`, `SPEC["docker_args"]`, `provider "docker"`, `provider "libvirt"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("Vagrantfile lacks %s", want)
		}
	}
	if _, err := exec.LookPath("vagrant"); err != nil {
		t.Skip("vagrant is not installed (apt-get install vagrant); the file's contents were checked")
	}
	cmd := exec.Command("vagrant", "validate")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("vagrant validate: %v\n%s", err, out)
	}
}

// TestDrillReport renders drill/RESULTS.md and drill/chart.svg again from a
// results file (DRILL_REPORT_FROM=results/<time>.json) and the runs before it,
// as TestBenchReport does for the benchmark.
func TestDrillReport(t *testing.T) {
	from := os.Getenv("DRILL_REPORT_FROM")
	if from == "" {
		t.Skip("DRILL_REPORT_FROM is not set (a results file to render RESULTS.md from)")
	}
	rep, err := LoadReport(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Render(".", filepath.Base(from)); err != nil {
		t.Fatal(err)
	}
}
