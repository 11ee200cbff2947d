package test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// runUntil starts bin with args, waits until url answers 200, then stops
// it with SIGTERM and waits for it: a node that wrote its store and shut
// down cleanly.
func runUntil(t *testing.T, bin, url string, args ...string) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(45 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("%s did not stop within 45 s:\n%s", args[0], out.String())
		}
	}()
	cl := &http.Client{Timeout: 2 * time.Second}
	testkit.Eventually(t, 60*time.Second, func() error {
		select {
		case <-done:
			return fmt.Errorf("%s exited:\n%s", args[0], out.String())
		default:
		}
		resp, err := cl.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %d", url, resp.StatusCode)
		}
		return nil
	})
}

// damage overwrites every page of the bolt file at path but the two meta
// pages with 0xFF: the freelist page among them, which bbolt's Open would
// panic on.
func damage(t *testing.T, path string) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	page := int64(os.Getpagesize())
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xFF}, int(info.Size()-2*page)), 2*page); err != nil {
		t.Fatal(err)
	}
}

// startFails runs bin with args and wants it to exit with an error, within
// a minute, whose output says each of want and shows no panic.
func startFails(t *testing.T, bin string, want []string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("cube %s on a damaged store: err %v (context %v), want it to exit with an error:\n%s", args[0], err, ctx.Err(), out)
	}
	for _, w := range want {
		if !strings.Contains(string(out), w) {
			t.Fatalf("cube %s on a damaged store says:\n%s\nwant %q", args[0], out, w)
		}
	}
	for _, bad := range []string{"panic:", "goroutine "} {
		if strings.Contains(string(out), bad) {
			t.Fatalf("cube %s on a damaged store panicked:\n%s", args[0], out)
		}
	}
	t.Logf("cube %s: %s", args[0], strings.TrimSpace(string(out)))
}

// A manager whose raft.db, and a worker whose worker.db, is damaged on disk
// refuse to start with an error naming the file, the fault and the recovery
// step, on the real binary, where bbolt used to panic.
func TestDamagedStores_RefuseToStartWithoutPanic(t *testing.T) {
	bin := CubeBinary(t)
	dir := t.TempDir()

	t.Run("manager", func(t *testing.T) {
		data := filepath.Join(dir, "m1")
		http, raft, gossip := testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeAddr(t)
		args := []string{"manager", "--id", "m1", "--insecure", "--fast", "--http", http, "--raft", raft,
			"--gossip", gossip, "--data", data, "--peers", "m1=" + raft}
		runUntil(t, bin, "http://"+http+"/tasks?consistent", args...)
		db := filepath.Join(data, "raft", "raft.db")
		damage(t, db)
		startFails(t, bin, []string{db, "bolt file is damaged", "invalid freelist page", "cube operator raft remove-peer m1", "without --peers"}, args...)
	})

	t.Run("worker", func(t *testing.T) {
		requireImage(t)
		data := filepath.Join(dir, "w1")
		http := testkit.FreeAddr(t)
		name := "damaged" + uuid.NewString()[:6]
		args := []string{"worker", "--name", name, "--insecure", "--fast", "--http", http, "--data", data}
		runUntil(t, bin, "http://"+http+"/tasks", args...)
		db := filepath.Join(data, "worker.db")
		damage(t, db)
		startFails(t, bin, []string{db, "bolt file is damaged", "invalid freelist page", "move " + db + " aside"}, args...)
	})
}
