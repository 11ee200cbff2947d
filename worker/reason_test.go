package worker

import (
	"strings"
	"testing"
	"time"
)

// exitReason words a container's end; these cases need no engine.
func TestExitReason(t *testing.T) {
	w := &Worker{cfg: Config{StartupWindow: 250 * time.Millisecond}}
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		st   ContainerStatus
		want string
	}{
		{"exit inside the window", ContainerStatus{Status: StatusExited, ExitCode: 3, StartedAt: t0, FinishedAt: t0.Add(40 * time.Millisecond)},
			"failed at start-up: exited with code 3 after 40ms"},
		// The engine can stamp the end of a container that exits at once a
		// little before its start (seen under load in CI): still start-up.
		{"finish stamped before start", ContainerStatus{Status: StatusExited, ExitCode: 3, StartedAt: t0, FinishedAt: t0.Add(-2 * time.Millisecond)},
			"failed at start-up: exited with code 3 after 0s"},
		{"exit after the window", ContainerStatus{Status: StatusExited, ExitCode: 1, StartedAt: t0, FinishedAt: t0.Add(5 * time.Second)},
			"exited with code 1 after 5s"},
		{"clean exit inside the window is no failure", ContainerStatus{Status: StatusExited, StartedAt: t0, FinishedAt: t0.Add(10 * time.Millisecond)},
			"exited with code 0 after 10ms"},
		{"out of memory", ContainerStatus{Status: StatusExited, ExitCode: 137, OOMKilled: true, StartedAt: t0, FinishedAt: t0.Add(time.Minute)},
			"killed: out of memory (OOMKilled) after 1m0s"},
		{"dead", ContainerStatus{Status: StatusDead, ExitCode: 1, Error: "driver failed"},
			"container is dead: driver failed"},
		{"no times", ContainerStatus{Status: StatusExited, ExitCode: 2},
			"exited with code 2"},
	}
	for _, c := range cases {
		if got := w.exitReason(c.st); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
		if strings.HasPrefix(c.want, "failed at start-up") != strings.HasPrefix(w.exitReason(c.st), "failed at start-up") {
			t.Errorf("%s: start-up classification wrong", c.name)
		}
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	ok := DefaultConfig()
	ok.DataDir = t.TempDir()
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for field, mutate := range map[string]func(*Config){
		"DataDir":      func(c *Config) { c.DataDir = "" },
		"Name":         func(c *Config) { c.Name = "-bad name" },
		"KeepEnded":    func(c *Config) { c.KeepEnded = -time.Second },
		"PollInterval": func(c *Config) { c.PollInterval = 0 },
		"StartTimeout": func(c *Config) { c.StartTimeout = 0 },
	} {
		c := ok
		mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v, want an error naming it", field, err)
		}
	}
	zero := ok
	zero.KeepEnded = 0 // keep forever
	if err := zero.Validate(); err != nil {
		t.Errorf("KeepEnded 0: %v", err)
	}
}
