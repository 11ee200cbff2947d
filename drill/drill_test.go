package drill

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDrill runs the machine-failure drills on machine containers.
//
// Without DRILL_FULL (as in `make test`) it is the short form: drills 1 and 2,
// two trials each, --fast timings, on machines of its own (containers
// cube-test-m1…, network cube-test-machines on 172.30.78.0/24) that it
// removes at the end; it fails when an invariant breaks or a recovery does
// not happen.
//
// `make drill` sets DRILL_FULL=1: every drill (DRILL_ONLY=1,2,… or names
// picks some), DRILL_TRIALS trials (default: each drill's minimum of the
// issue), for each profile of DRILL_PROFILES (fast,default), and Swarm
// beside it unless DRILL_SWARM=0; the machines are those of the Vagrantfile
// (m1…w3 on cube-machines, reused when they run) and stay up (`make
// drill-down` removes them); DRILL_SWARM=fast or shipped runs one of
// Swarm's two settings. It writes drill/results/<time>.json,
// drill/RESULTS.md and drill/chart.svg (DRILL_OUT: in that directory
// instead). Swarm runs drills 1-4 and 6 after Cube, as swarm-fast and swarm
// (swarm.go), on the machines of the fast profile; DRILL_PROFILES=none runs
// Swarm only. DRILL_PREFIX, DRILL_NETWORK and DRILL_SUBNET put the machines
// elsewhere (containers PREFIXm1…), to drill beside a run on the spec's.
func TestDrill(t *testing.T) {
	full := os.Getenv("DRILL_FULL") == "1"
	spec, err := LoadSpec("../deploy/machine/machines.json")
	if err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	prefix := ""
	drills := Drills
	trials := envInt(t, "DRILL_TRIALS", 0)
	profiles := []bool{true, false}
	if !full {
		prefix = "cube-test-"
		spec.Network, spec.Subnet = "cube-test-machines", "172.30.78"
		drills = Drills[:2]
		trials = 2
		profiles = []bool{true}
		t.Cleanup(func() {
			if err := Down(context.Background(), spec); err != nil {
				t.Errorf("removing the test machines: %v", err)
			}
		})
	}
	// Machines of another name, network and subnet (to drill beside a run
	// on the spec's machines).
	if v := os.Getenv("DRILL_PREFIX"); v != "" {
		prefix = v
	}
	if v := os.Getenv("DRILL_NETWORK"); v != "" {
		spec.Network = v
	}
	if v := os.Getenv("DRILL_SUBNET"); v != "" {
		spec.Subnet = v
	}
	if only := os.Getenv("DRILL_ONLY"); only != "" {
		drills = pick(t, only)
	}
	if p := os.Getenv("DRILL_PROFILES"); p != "" {
		profiles = nil
		for _, name := range strings.Split(p, ",") {
			switch strings.TrimSpace(name) {
			case "none": // Swarm only
			case "fast":
				profiles = append(profiles, true)
			case "default":
				profiles = append(profiles, false)
			default:
				t.Fatalf("DRILL_PROFILES: %q is neither fast nor default", name)
			}
		}
	}

	rep := &Report{Started: time.Now().UTC(), Commit: commit(), Machine: facts(),
		Params: map[string]string{"trials": strconv.Itoa(trials), "only": os.Getenv("DRILL_ONLY"),
			"profiles": os.Getenv("DRILL_PROFILES"), "full": strconv.FormatBool(full)}}
	out := "."
	if v := os.Getenv("DRILL_OUT"); v != "" {
		out = v // results/, RESULTS.md and chart.svg elsewhere
	}
	// checkpoint saves the results so far (a full run only): a run cut short
	// keeps its trials, and TestDrillReport can render them.
	checkpoint := func() {
		if full {
			if _, err := rep.Save(out); err != nil {
				t.Errorf("saving the results: %v", err)
			}
		}
	}
	// runTrials runs each drill's trials (DRILL_TRIALS, else the drill's
	// minimum), printing and saving each result.
	runTrials := func(ds []Drill, trial func(Drill, int) Result) {
		for _, d := range ds {
			n := trials
			if n == 0 {
				n = d.MinTrials
			}
			for i := 1; i <= n; i++ {
				res := trial(d, i)
				rep.Results = append(rep.Results, res)
				fmt.Println(progress(res, n))
				checkpoint()
			}
		}
	}
	for _, fast := range profiles {
		ms := &Machines{Spec: spec, Root: root, Fast: fast, Prefix: prefix, Logf: t.Logf}
		start := time.Now()
		if err := ms.Up(ctx); err != nil {
			t.Fatalf("machines: %v", err)
		}
		// Cube's drills never share the engines with Swarm's services.
		if err := LeaveSwarm(ctx, ms); err != nil {
			t.Fatalf("leaving the swarm: %v", err)
		}
		cube, err := NewCube(ms)
		if err != nil {
			t.Fatal(err)
		}
		run := &Run{Ctx: ctx, MS: ms, Cube: cube, Logf: t.Logf,
			PartitionFor: 30 * time.Second, LossyFor: 2 * time.Minute, Recover: 3 * time.Minute}
		if err := cube.Ready(ctx, run.Recover); err != nil {
			// What each machine's cube unit said is what explains it.
			for _, m := range spec.Machines {
				j, jerr := ms.Journal(ctx, m.Name, start)
				if lines := strings.Split(strings.TrimSpace(j), "\n"); len(lines) > 15 {
					j = strings.Join(lines[len(lines)-15:], "\n")
				}
				t.Logf("journal of %s (%v):\n%s", m.Name, jerr, j)
			}
			t.Fatalf("Cube on the machines is not ready: %v", err)
		}
		fmt.Printf("drill: %d machines up with %s timings in %s\n", len(spec.Machines), run.System(), time.Since(start).Round(time.Second))
		runTrials(drills, run.Trial)
	}
	if sd := SwarmDrills(drills); full && os.Getenv("DRILL_SWARM") != "0" && len(sd) > 0 {
		// Swarm on the same machines (Cube on them idle), then left.
		ms := &Machines{Spec: spec, Root: root, Fast: true, Prefix: prefix, Logf: t.Logf}
		if err := ms.Up(ctx); err != nil {
			t.Fatalf("machines: %v", err)
		}
		settings := []bool{true, false}
		switch os.Getenv("DRILL_SWARM") {
		case "fast":
			settings = []bool{true}
		case "shipped":
			settings = []bool{false}
		}
		for _, fast := range settings {
			sw := NewSwarm(ms, fast)
			if err := sw.Init(ctx); err != nil {
				t.Fatalf("%s: %v", sw.System(), err)
			}
			run := &SwarmRun{Ctx: ctx, SW: sw, Logf: t.Logf, PartitionFor: 30 * time.Second, Recover: 3 * time.Minute}
			runTrials(sd, run.Trial)
		}
		if err := LeaveSwarm(ctx, ms); err != nil {
			t.Errorf("leaving the swarm: %v", err)
		}
	}
	rep.Finished = time.Now().UTC()
	fmt.Print("\n" + Table(rep.Results))
	if full {
		name, err := rep.Write(out)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("drill: wrote %s, RESULTS.md and chart.svg\n", name)
	}
	if err := Clean(rep.Results); err != nil {
		t.Error(err)
	}
}

// progress is the line printed after each trial.
func progress(r Result, of int) string {
	var ms []string
	for _, k := range sortedKeys(r.Measures) {
		for _, v := range r.Measures[k] {
			ms = append(ms, k+" "+fmtMs(v))
		}
	}
	if len(ms) > 6 {
		ms = append(ms[:6], fmt.Sprintf("… (%d)", len(ms)))
	}
	line := fmt.Sprintf("drill %d %-18s %-12s trial %2d/%d: %s; lost %d, duplicates %d", r.Drill, r.Name, r.System,
		r.Trial, of, strings.Join(ms, ", "), r.Lost, r.Duplicates)
	for _, k := range sortedKeys(r.Counts) {
		line += fmt.Sprintf(", %s %d", k, r.Counts[k])
	}
	if r.Note != "" {
		line += " (" + r.Note + ")"
	}
	if r.Err != "" {
		line += " ERROR: " + r.Err
	}
	return line
}

func pick(t *testing.T, only string) []Drill {
	var out []Drill
	for _, w := range strings.Split(only, ",") {
		w = strings.TrimSpace(w)
		found := false
		for _, d := range Drills {
			if w == strconv.Itoa(d.Num) || w == d.Name {
				out = append(out, d)
				found = true
			}
		}
		if !found {
			t.Fatalf("DRILL_ONLY: no drill %q (numbers 1-%d or names)", w, len(Drills))
		}
	}
	return out
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

func commit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func facts() map[string]string {
	f := map[string]string{"cpus": strconv.Itoa(runtime.NumCPU()), "goos": runtime.GOOS}
	if v, err := Docker(context.Background(), "version", "--format", "{{.Server.Version}}"); err == nil {
		f["docker"] = v
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f["loadavg_start"] = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	f["summary"] = fmt.Sprintf("%s CPUs, Docker %s, load %s at start", f["cpus"], f["docker"], f["loadavg_start"])
	return f
}
