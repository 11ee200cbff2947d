package drill

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Report is one `make drill` run: drill/results/<UTC time>.json.
type Report struct {
	Started  time.Time         `json:"started"`
	Finished time.Time         `json:"finished"`
	Commit   string            `json:"commit"`
	Machine  map[string]string `json:"machine"`
	Params   map[string]string `json:"params"`
	Results  []Result          `json:"results"`
}

// Stats summarise one measure over trials.
type Stats struct {
	N                   int
	Median, P99, Max    float64
	Lost, Dup, Missing  int
	Panics, Errors      int
	Counts              map[string]int
	Others              map[string]float64 // median of each other measure
	Failed, FirstErrors []string
}

// quantile is the nearest-rank quantile of sorted v.
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(v)))) - 1
	if i < 0 {
		i = 0
	}
	return v[i]
}

// Summarize groups results by drill and system.
func Summarize(results []Result) map[string]map[string]*Stats {
	out := map[string]map[string]*Stats{}
	vals := map[string]map[string]map[string][]float64{}
	for _, res := range results {
		d := drillByNum(res.Drill)
		key := fmt.Sprintf("%d", res.Drill)
		if out[key] == nil {
			out[key] = map[string]*Stats{}
			vals[key] = map[string]map[string][]float64{}
		}
		s := out[key][res.System]
		if s == nil {
			s = &Stats{Counts: map[string]int{}, Others: map[string]float64{}}
			out[key][res.System] = s
			vals[key][res.System] = map[string][]float64{}
		}
		s.N++
		s.Lost += res.Lost
		s.Dup += res.Duplicates
		s.Missing += res.Missing
		s.Panics += res.Panics
		if res.Err != "" {
			s.Errors++
			if len(s.FirstErrors) < 3 {
				s.FirstErrors = append(s.FirstErrors, fmt.Sprintf("trial %d: %s", res.Trial, res.Err))
			}
		}
		for k, n := range res.Counts {
			s.Counts[k] += n
		}
		for k, v := range res.Measures {
			vals[key][res.System][k] = append(vals[key][res.System][k], v...)
		}
		_ = d
	}
	for key, bySys := range out {
		d := drillByNum(atoi(key))
		for sys, s := range bySys {
			for k, v := range vals[key][sys] {
				sort.Float64s(v)
				if k == d.Main {
					s.Median, s.P99, s.Max = quantile(v, 0.5), quantile(v, 0.99), v[len(v)-1]
				} else {
					s.Others[k] = quantile(v, 0.5)
				}
			}
			if _, ok := vals[key][sys][d.Main]; !ok {
				s.Median, s.P99, s.Max = math.NaN(), math.NaN(), math.NaN()
			}
		}
	}
	return out
}

func atoi(s string) int {
	n := 0
	fmt.Sscanf(s, "%d", &n)
	return n
}

func drillByNum(n int) Drill {
	for _, d := range Drills {
		if d.Num == n {
			return d
		}
	}
	return Drill{Num: n, Main: "recovered"}
}

// systems in the order tables show them.
var systemOrder = []string{"cube-fast", "cube-default", "swarm-fast", "swarm"}

func fmtMs(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v >= 10000:
		return fmt.Sprintf("%.1f s", v/1000)
	case v >= 1000:
		return fmt.Sprintf("%.2f s", v/1000)
	default:
		return fmt.Sprintf("%.0f ms", v)
	}
}

// Table renders the summary as a Markdown table.
func Table(results []Result) string {
	sum := Summarize(results)
	var b strings.Builder
	b.WriteString("| drill | system | trials | measure | median | p99 | max | lost | duplicates | other medians | counts | errors |\n")
	b.WriteString("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |\n")
	for _, d := range Drills {
		bySys := sum[fmt.Sprintf("%d", d.Num)]
		for _, sys := range systemOrder {
			s := bySys[sys]
			if s == nil {
				continue
			}
			var others, counts []string
			for _, k := range sortedKeys(s.Others) {
				others = append(others, k+" "+fmtMs(s.Others[k]))
			}
			for _, k := range sortedKeys(s.Counts) {
				counts = append(counts, fmt.Sprintf("%s %d", k, s.Counts[k]))
			}
			if s.Missing > 0 {
				counts = append(counts, fmt.Sprintf("missing %d", s.Missing))
			}
			if s.Panics > 0 {
				counts = append(counts, fmt.Sprintf("panics %d", s.Panics))
			}
			fmt.Fprintf(&b, "| %d %s | %s | %d | %s | %s | %s | %s | %d | %d | %s | %s | %d |\n",
				d.Num, d.Name, sys, s.N, d.Main, fmtMs(s.Median), fmtMs(s.P99), fmtMs(s.Max),
				s.Lost, s.Dup, strings.Join(others, ", "), strings.Join(counts, ", "), s.Errors)
		}
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Clean reports whether every trial kept the invariants and completed.
func Clean(results []Result) error {
	var bad []string
	for _, r := range results {
		// Drill 7's counts are breaches for the production timings; the
		// --fast timings (probes every 200 ms, 200 ms election timeout) are
		// made for one machine's loopback, and their flaps on a 200 ms RTT
		// lossy link are reported, not failed.
		flaps := 0
		if r.System == "cube-default" {
			flaps = r.Counts["false_dead"] + r.Counts["leader_changes"]
		}
		if r.Lost+r.Duplicates+r.Missing+r.Panics+flaps > 0 || r.Err != "" {
			bad = append(bad, fmt.Sprintf("drill %d %s trial %d: lost %d, duplicates %d, missing %d, panics %d, false deaths and leader changes %d %s %s",
				r.Drill, r.System, r.Trial, r.Lost, r.Duplicates, r.Missing, r.Panics, flaps, r.Err, r.Note))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%d trials broke an invariant or did not recover:\n%s", len(bad), strings.Join(bad, "\n"))
	}
	return nil
}

// Write saves the report as dir/results/<time>.json, the table between the
// markers of dir/RESULTS.md (the text around them is kept) and dir/chart.svg.
func (rep *Report) Write(dir string) (string, error) {
	name, err := rep.Save(dir)
	if err != nil {
		return "", err
	}
	return name, rep.Render(dir, filepath.Base(name))
}

// Save writes the report as dir/results/<start time>.json (again after
// every trial, so that a run cut short keeps what it measured).
func (rep *Report) Save(dir string) (string, error) {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Join(dir, "results"), 0o755); err != nil {
		return "", err
	}
	name := filepath.Join(dir, "results", rep.Started.UTC().Format("2006-01-02T150405Z")+".json")
	if err := os.WriteFile(name, append(b, '\n'), 0o644); err != nil {
		return "", err
	}
	return name, nil
}

// Render writes dir/RESULTS.md and dir/chart.svg from the report saved as
// dir/results/name and the earlier runs beside it.
func (rep *Report) Render(dir, name string) error {
	shown, from, err := withEarlier(dir, rep, name)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "chart.svg"), []byte(Chart(shown)), 0o644); err != nil {
		return err
	}
	return writeBetweenMarkers(filepath.Join(dir, "RESULTS.md"), rep.Markdown(name, shown, from))
}

// LoadReport reads a results file.
func LoadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &rep, nil
}

// withEarlier returns the results to show: this run's, plus, for each
// (drill, system) this run did not measure, those of the latest earlier run
// in dir/results that did (a Swarm-only run and a Cube-only run end side by
// side). from names the file each system's rows come from.
func withEarlier(dir string, rep *Report, name string) ([]Result, map[string]string, error) {
	type key struct {
		drill  int
		system string
	}
	have := map[key]bool{}
	from := map[string]string{}
	for _, r := range rep.Results {
		have[key{r.Drill, r.System}] = true
		from[r.System] = name
	}
	shown := append([]Result(nil), rep.Results...)
	files, err := filepath.Glob(filepath.Join(dir, "results", "*.json"))
	if err != nil {
		return nil, nil, err
	}
	sort.Sort(sort.Reverse(sort.StringSlice(files))) // newest first (names are UTC times)
	for _, f := range files {
		if filepath.Base(f) == name {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, err
		}
		var old Report
		if err := json.Unmarshal(b, &old); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", f, err)
		}
		taken := map[key]bool{}
		for _, r := range old.Results {
			k := key{r.Drill, r.System}
			if have[k] && !taken[k] {
				continue
			}
			taken[k] = true
			shown = append(shown, r)
			if !strings.Contains(from[r.System], filepath.Base(f)) {
				from[r.System] = strings.TrimPrefix(from[r.System]+", "+filepath.Base(f), ", ")
			}
		}
		for k := range taken {
			have[k] = true
		}
	}
	return shown, from, nil
}

const (
	beginMarker = "<!-- drill:begin (make drill writes between these markers) -->"
	endMarker   = "<!-- drill:end -->"
)

// Markdown is the generated part of RESULTS.md: the table and chart of
// shown (this run's results and earlier ones, see withEarlier).
func (rep *Report) Markdown(jsonName string, shown []Result, from map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run of %s (commit %s, %s), results/%s. ", rep.Started.UTC().Format("2006-01-02 15:04 MST"),
		rep.Commit, rep.Finished.Sub(rep.Started).Round(time.Second), jsonName)
	var ps []string
	for _, k := range sortedKeys(rep.Params) {
		ps = append(ps, k+"="+rep.Params[k])
	}
	fmt.Fprintf(&b, "Parameters: %s. Machine: %s.\n\n", strings.Join(ps, ", "), rep.Machine["summary"])
	for _, sys := range systemOrder {
		if f, ok := from[sys]; ok {
			fmt.Fprintf(&b, "- %s: results/%s\n", sys, f)
		}
	}
	b.WriteString("\n" + Table(shown))
	b.WriteString("\n![drill chart](chart.svg)\n")
	if err := Clean(shown); err != nil {
		b.WriteString("\nTrials that broke an invariant or did not recover:\n\n```\n" + err.Error() + "\n```\n")
	}
	return b.String()
}

func writeBetweenMarkers(path, body string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(old)
	i, j := strings.Index(s, beginMarker), strings.Index(s, endMarker)
	block := beginMarker + "\n" + body + endMarker
	if i < 0 || j < i {
		s = strings.TrimRight(s, "\n")
		if s != "" {
			s += "\n\n"
		}
		s += block + "\n"
	} else {
		s = s[:i] + block + s[j+len(endMarker):]
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

// Chart draws, per drill and system, the median and p99 of the drill's
// main measure as horizontal bars on a log scale (SVG, no dependencies).
func Chart(results []Result) string {
	sum := Summarize(results)
	type row struct {
		label    string
		med, p99 float64
		color    string
	}
	colors := map[string]string{"cube-fast": "#2b6cb0", "cube-default": "#63b3ed", "swarm-fast": "#c05621", "swarm": "#f6ad55"}
	var rows []row
	maxV := 1.0
	for _, d := range Drills {
		for _, sys := range systemOrder {
			s := sum[fmt.Sprintf("%d", d.Num)][sys]
			if s == nil || math.IsNaN(s.Median) {
				continue
			}
			rows = append(rows, row{fmt.Sprintf("%d %s: %s (%s)", d.Num, d.Name, sys, d.Main), s.Median, s.P99, colors[sys]})
			maxV = math.Max(maxV, s.P99)
		}
	}
	const left, width, rowH, top = 330, 520, 22, 40
	h := top + rowH*len(rows) + 40
	minV := 10.0
	maxV = math.Pow(10, math.Ceil(math.Log10(maxV)))
	x := func(v float64) float64 {
		v = math.Max(v, minV)
		return left + width*math.Log10(v/minV)/math.Log10(maxV/minV)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", left+width+40, h)
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="14">Machine-failure drills: median (bar) and p99 (tick) of each drill's main measure, log scale</text>`+"\n")
	for v := minV; v <= maxV; v *= 10 {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/><text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n",
			x(v), top-5, x(v), h-30, x(v), h-15, fmtMs(v))
	}
	for i, r := range rows {
		y := top + i*rowH
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`, left-6, y+14, r.label)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`, left, y+3, x(r.med)-left, rowH-6, r.color)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#000" stroke-width="2"/>`, x(r.p99), y+2, x(r.p99), y+rowH-2)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%s</text>`+"\n", x(r.p99)+4, y+14, fmtMs(r.med)+" / "+fmtMs(r.p99))
	}
	b.WriteString("</svg>\n")
	return b.String()
}
