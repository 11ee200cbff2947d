package main

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// cube logs -f prints the container's output once, whatever happens to the
// stream: a stream that breaks is opened again and what was printed is
// skipped; a restart is followed into the new container from its start
// (said on stderr); the task's end ends it, said on stderr.
func TestLogsFollow(t *testing.T) {
	id := uuid.New()
	var mu sync.Mutex
	phase, opens := 0, 0
	var queries []string
	addr := scriptedManager(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		p := phase
		mu.Unlock()
		switch r.URL.Path {
		case "/tasks/" + id.String():
			task := api.Task{ID: id, State: api.Running, DesiredState: api.Running, Worker: "w1", ContainerID: "c1", Generation: 1}
			switch p {
			case 1:
				task.ContainerID, task.Worker, task.Generation, task.RestartCount, task.Reason = "c2", "w2", 2, 1, "restarted after: exited with code 1"
			case 2:
				task.State, task.DesiredState, task.ContainerID, task.Reason = api.Completed, api.Completed, "c2", "stopped on request"
			}
			writeJSONAnswer(w, http.StatusOK, task)
		case "/tasks/" + id.String() + "/logs":
			mu.Lock()
			opens++
			n := opens
			queries = append(queries, r.URL.RawQuery)
			mu.Unlock()
			w.WriteHeader(http.StatusOK)
			flush := func(s string) { _, _ = w.Write([]byte(s)); http.NewResponseController(w).Flush() }
			switch n {
			case 1:
				flush("a\n")
				panic(http.ErrAbortHandler) // the worker went away under the relay
			case 2:
				flush("a\nb\n") // the same container from its start: "a" again
				mu.Lock()
				phase = 1 // it ended and the task was restarted
				mu.Unlock()
			case 3:
				flush("c\n")
				mu.Lock()
				phase = 2 // stopped
				mu.Unlock()
			}
		default:
			http.Error(w, "unexpected", http.StatusNotFound)
		}
	})
	root := newRootCmd()
	var stdout, stderr testkit.SyncBuffer
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs([]string{"logs", "-f", id.String(), "-m", addr})
	if err := root.Execute(); err != nil {
		t.Fatalf("cube logs -f: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if got := stdout.String(); got != "a\nb\nc\n" {
		t.Fatalf("stdout %q, want each line once: %q\nstderr:\n%s", got, "a\nb\nc\n", stderr.String())
	}
	errs := stderr.String()
	for _, want := range []string{
		"cube: task " + id.String() + " is now Running on w2 (container c2, restart 1): restarted after: exited with code 1; following it from its start\n",
		"cube: task " + id.String() + " ended: Completed (exit code 0): stopped on request\n",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i, q := range queries {
		if q != "follow=1" {
			t.Errorf("stream %d asked %q, want follow=1", i+1, q)
		}
	}
}

// cube status --watch redraws until its context ends (Ctrl-C), which is
// no error; written to what is not a terminal, each snapshot comes after a
// line with its time and no escape sequence clears anything.
func TestStatusWatch_NotATerminal(t *testing.T) {
	f := newRouteFake(t, listingRoutes(t, false))
	root := newRootCmd()
	var out testkit.SyncBuffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"status", "--watch", "--interval", "50ms", "-m", f.addr()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(out.String(), "=== ") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("no three snapshots within 30 s:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("cube status --watch ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("cube status --watch did not end when its context did")
	}
	text := out.String()
	if strings.Contains(text, "\x1b") {
		t.Fatalf("escape sequences written to what is not a terminal: %q", text)
	}
	snaps := strings.Split(text, "=== ")[1:]
	for i, s := range snaps[:2] {
		if !strings.Contains(s, "(every 50ms)\nID  ") || !strings.Contains(s, outTask.ID.String()) {
			t.Errorf("snapshot %d:\n%s", i, s)
		}
	}
	if _, err := cube(t, f.addr(), "status", "--watch", "--interval", "0s"); err == nil || !strings.Contains(err.Error(), "must be positive") {
		t.Errorf("--interval 0s: %v, want it refused", err)
	}
}
