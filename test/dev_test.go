package test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// TestE2E_DevMode runs `cube dev` (a manager and a worker in one process),
// runs a task on it and stops it with SIGTERM. cube dev is the one mode that
// stays open (issue 12): it says so when it starts, and a client with no
// credentials talks plain HTTP to it.
func TestE2E_DevMode(t *testing.T) {
	requireImage(t)
	bin := CubeBinary(t)
	httpAddr := testkit.FreeAddr(t)
	name := "dev" + uuid.NewString()[:6]
	c := &ProcCluster{t: t, Workers: []*Proc{{Name: name}}}
	t.Cleanup(c.Close)
	cmd := exec.Command(bin, "dev", "--data", t.TempDir(), "--http", httpAddr, "--raft", testkit.FreeAddr(t), "--gossip", testkit.FreeAddr(t),
		"--worker-http", testkit.FreeAddr(t), "--worker-gossip", testkit.FreeAddr(t), "--worker-name", name)
	var out testkit.SyncBuffer
	cmd.Stdout = io.MultiWriter(os.Stderr, &out)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	client, err := api.NewClient([]string{httpAddr}, api.ClientOptions{RetryFor: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	testkit.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(out.String(), "cube dev is open: no TLS, no tokens, no gossip encryption") {
			return fmt.Errorf("cube dev has not said it runs open; its output so far:\n%s", out.String())
		}
		return nil
	})
	task, _, err := client.SubmitTask(ctx, api.TaskEvent{State: api.Running, Task: echoTask("dev")})
	if err != nil {
		t.Fatalf("submit to cube dev: %v", err)
	}
	testkit.Eventually(t, 60*time.Second, func() error {
		got, err := client.Task(ctx, task.ID, true)
		if err != nil {
			return err
		}
		if got.State != api.Running {
			return &stateErr{got}
		}
		task = got
		return nil
	})
	echo(t, task)

	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("cube dev exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("cube dev did not exit within 30 s of SIGTERM")
	}
}

type stateErr struct{ t api.Task }

func (e *stateErr) Error() string { return "task is " + e.t.State.String() + ": " + e.t.Reason }
