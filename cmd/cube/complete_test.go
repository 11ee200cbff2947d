package main

import (
	"bytes"
	"net"
	"strings"
	"testing"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// complete runs `cube __complete ARGS…` as a shell does on TAB, with -m
// before the word being completed, and returns the completions (without
// their descriptions) and the directive line.
func complete(t *testing.T, manager string, args ...string) ([]string, string) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	words := append(append([]string{"__complete"}, args[:len(args)-1]...), "-m", manager, args[len(args)-1])
	root.SetArgs(words)
	if err := root.Execute(); err != nil {
		t.Fatalf("cube %s: %v\n%s", strings.Join(words, " "), err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var values []string
	for _, l := range lines[:len(lines)-1] {
		v, _, _ := strings.Cut(l, "\t")
		values = append(values, v)
	}
	return values, lines[len(lines)-1]
}

// Dynamic completion offers what the cluster holds: tasks by ID and by a
// name only one task has (stop: only tasks still to stop), workers,
// services, managers; only those beginning with what was typed, never file
// names, and nothing for a second argument.
func TestCompletion_FromTheCluster(t *testing.T) {
	web1 := api.Task{ID: uuid.MustParse("11111111-1111-4111-8111-111111111111"), Name: "web.1", State: api.Running, DesiredState: api.Running}
	twinA := api.Task{ID: uuid.MustParse("22222222-2222-4222-8222-222222222222"), Name: "twin", State: api.Running, DesiredState: api.Running}
	twinB := api.Task{ID: uuid.MustParse("23333333-3333-4333-8333-333333333333"), Name: "twin", State: api.Pending, DesiredState: api.Running}
	done := api.Task{ID: uuid.MustParse("44444444-4444-4444-8444-444444444444"), Name: "done", State: api.Completed, DesiredState: api.Completed}
	f := newRouteFake(t, map[string]string{
		"GET /tasks":    mustJSON(t, []api.Task{web1, twinA, twinB, done}),
		"GET /nodes":    mustJSON(t, []api.Node{{Name: "w1", State: api.NodeAlive}, {Name: "w2", State: api.NodeDead, Drain: true}}),
		"GET /services": mustJSON(t, []api.ServiceStatus{outService}),
		"GET /cluster":  mustJSON(t, outCluster),
	})
	const noFiles = ":4"
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"status", ""}, []string{web1.ID.String(), twinA.ID.String(), twinB.ID.String(), done.ID.String(), "web.1", "done"}},
		{[]string{"logs", "2"}, []string{twinA.ID.String(), twinB.ID.String()}},
		{[]string{"status", "we"}, []string{"web.1"}},
		{[]string{"stop", ""}, []string{web1.ID.String(), twinA.ID.String(), twinB.ID.String(), "web.1"}},
		{[]string{"node", "drain", ""}, []string{"w1", "w2"}},
		{[]string{"node", "undrain", "w2"}, []string{"w2"}},
		{[]string{"service", "inspect", ""}, []string{"web"}},
		{[]string{"service", "scale", "w"}, []string{"web"}},
		{[]string{"service", "scale", "web", ""}, nil},
		{[]string{"service", "rollback", ""}, []string{"web"}},
		{[]string{"service", "rm", "x"}, nil},
		{[]string{"members", "remove", ""}, []string{"m1"}},
	} {
		got, directive := complete(t, f.addr(), tc.args...)
		if strings.Join(got, " ") != strings.Join(tc.want, " ") || directive != noFiles {
			t.Errorf("cube __complete %q: %q %s; want %q %s", tc.args, got, directive, tc.want, noFiles)
		}
	}
}

// With no cluster to ask, a completion offers nothing, at once (the
// shell waits for it): no error, no file names.
func TestCompletion_NoCluster(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	for _, args := range [][]string{{"status", ""}, {"node", "drain", ""}, {"service", "rm", ""}} {
		got, directive := complete(t, addr, args...)
		if len(got) != 0 || directive != ":4" {
			t.Errorf("cube __complete %q with no cluster: %q %s", args, got, directive)
		}
	}
}

// cube completion is there for every shell, shown in the help, and its
// scripts ask cube __complete.
func TestCompletion_Command(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		out, err := runRoot(t, "completion", shell)
		if err != nil || !strings.Contains(out, "__complete") {
			t.Errorf("cube completion %s: %v\n%.300s", shell, err, out)
		}
	}
	help, err := runRoot(t, "--help")
	if err != nil || !strings.Contains(help, "  completion ") {
		t.Errorf("cube --help does not list completion: %v\n%s", err, help)
	}
}
