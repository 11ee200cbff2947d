package test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// A worker whose disk fails: its data directory is a real ext4 file system
// (on a loop device, mounted errors=remount-ro), and an error is forced on
// it the way a failing disk raises one, so the kernel makes it read-only and
// every write to worker.db fails. A task the leader places there cannot be
// recorded: the worker refuses it, tells the managers it cannot run
// containers, and the task is placed on a healthy worker, once, with no
// container left on the broken one. A task already running there is not
// disturbed (it still answers).
func TestDisk_WorkerWithAFailingDiskGetsNothingNew(t *testing.T) {
	r := newRecRT(t, 1)
	broken := r.c.Workers[0]
	r.c.Kill(broken)
	disk := mountFailingDisk(t, filepath.Join(r.c.Dir, broken.Name))
	t.Cleanup(func() { r.c.Kill(broken); disk.unmount() }) // before the cluster's Close: nothing may hold the mount
	r.c.Start(broken)
	r.c.WaitReady(1)

	running := echoTask("before-the-fault")
	aID := r.submit(running)
	before := r.waitRunning(aID)[aID]

	disk.fail()
	faulted := time.Now()
	t.Logf("%s's data directory is now read-only (ext4 error on %s)", broken.Name, disk.dev)

	bID := r.submit(echoTask("after-the-fault"))
	testkit.Eventually(t, recDeadline, func() error {
		n, err := r.node(broken.Name)
		if err != nil {
			return err
		}
		if n.RuntimeAvailable {
			return fmt.Errorf("%s is still seen able to run containers", broken.Name)
		}
		return nil
	})
	t.Logf("%s told the managers it cannot run containers, %s after the fault", broken.Name, recSince(faulted))

	healthy := r.c.AddWorker()
	after, took := r.waitTask(bID, 2*recDeadline, func(x api.Task) error {
		if err := recIsRunning(x); err != nil {
			return err
		}
		if x.Worker != healthy.Name {
			return fmt.Errorf("running on %s, want %s", x.Worker, healthy.Name)
		}
		return nil
	})
	t.Logf("the task placed after the fault runs on %s at generation %d (reason %q), %s after the new worker started", after.Worker, after.Generation, after.Reason, took)

	if n := len(r.c.ContainersOn(broken)[bID.String()]); n != 0 {
		t.Errorf("%d containers of the refused task run on %s", n, broken.Name)
	}
	still := r.task(aID)
	if still.State != api.Running || still.Worker != broken.Name || still.ContainerID != before.ContainerID || still.Generation != before.Generation {
		t.Errorf("the task running before the fault: %s on %s gen %d container %.12s, want undisturbed (Running on %s gen %d in %.12s)",
			still.State, still.Worker, still.Generation, still.ContainerID, broken.Name, before.Generation, before.ContainerID)
	}
	r.converged()
}

// node reads one worker as the managers see it (a consistent read).
func (r *recRT) node(name string) (api.Node, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nodes, err := r.cl.Nodes(ctx, true)
	if err != nil {
		return api.Node{}, err
	}
	for _, n := range nodes {
		if n.Name == name {
			return n, nil
		}
	}
	return api.Node{}, fmt.Errorf("worker %s not known: %w", name, api.ErrNotFound)
}

// failingDisk is a small ext4 file system on a loop device, mounted with
// errors=remount-ro, whose fail makes it read-only as the kernel does when a
// disk reports an error.
type failingDisk struct {
	t   *testing.T
	dir string
	dev string // the loop device's name, "loop3"
}

// mountFailingDisk mounts a fresh failingDisk on dir. It needs root and the
// mount tools; without them the test is skipped (worker/safety_test.go covers
// the worker's side everywhere, with a store that refuses writes).
func mountFailingDisk(t *testing.T, dir string) *failingDisk {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a failing disk needs root: a loop device and mount")
	}
	for _, tool := range []string{"mkfs.ext4", "mount", "umount", "findmnt"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("a failing disk needs %s: %v", tool, err)
		}
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(32 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run(t, "mkfs.ext4", "-q", "-F", img)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", "-o", "loop,errors=remount-ro", img, dir)
	d := &failingDisk{t: t, dir: dir, dev: filepath.Base(strings.TrimSpace(run(t, "findmnt", "-n", "-o", "SOURCE", "--target", dir)))}
	if !strings.HasPrefix(d.dev, "loop") {
		d.unmount()
		t.Fatalf("%s is mounted from %q, want a loop device", dir, d.dev)
	}
	return d
}

// fail forces an ext4 error on the file system and waits until writes to it
// fail.
func (d *failingDisk) fail() {
	d.t.Helper()
	trigger := filepath.Join("/sys/fs/ext4", d.dev, "trigger_fs_error")
	if err := os.WriteFile(trigger, []byte("cube test: a failing disk\n"), 0); err != nil {
		d.t.Fatalf("force an error on %s: %v", d.dev, err)
	}
	testkit.Eventually(d.t, 30*time.Second, func() error {
		err := os.WriteFile(filepath.Join(d.dir, "probe-"+uuid.NewString()), []byte("x"), 0o600)
		if err == nil {
			return errors.New("the file system still takes writes")
		}
		return nil
	})
}

// unmount unmounts the file system (its loop device is freed with it); the
// processes using it must be stopped first.
func (d *failingDisk) unmount() {
	if out, err := exec.Command("umount", d.dir).CombinedOutput(); err != nil {
		d.t.Logf("umount %s: %v: %s; detaching it lazily", d.dir, err, out)
		_ = exec.Command("umount", "-l", d.dir).Run()
	}
}

// run runs a command and returns its output, failing the test on error.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
