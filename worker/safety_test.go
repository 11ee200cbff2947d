package worker

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// These tests, on the real engine, cover what a worker does when its store
// fails it and when it finds containers it has no record of.

// reports records what the worker hands to Config.OnChange (what the
// reporter would push to the managers).
type reports struct {
	mu   sync.Mutex
	seen []api.Task
}

func (r *reports) add(t api.Task) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, t)
}

func (r *reports) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = nil
}

// find returns the last report of task id, if any.
func (r *reports) find(id uuid.UUID) (api.Task, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.seen) - 1; i >= 0; i-- {
		if r.seen[i].ID == id {
			return r.seen[i], true
		}
	}
	return api.Task{}, false
}

// failRecordingContainers makes the worker's store refuse, times times at
// most (0: always), the write that records a task's new container: the
// write right after create. It returns the count of refused writes.
func failRecordingContainers(h *harness, times int32) *atomic.Int32 {
	var refused atomic.Int32
	fail := func(t api.Task) error {
		if t.State != api.Scheduled || t.ContainerID == "" {
			return nil
		}
		if times > 0 && refused.Load() >= times {
			return nil
		}
		refused.Add(1)
		return errors.New("write worker.db: no space left on device (test)")
	}
	h.w.store.failPut.Store(&fail)
	return &refused
}

// A worker that cannot record the container it just created retries the
// write, then removes the container and fails the task (reported at once,
// though the store could not record the failure either): no container is
// left behind that no record knows of, and the task does not stay
// Scheduled. Once the store works again a new placement runs, once.
func TestWorker_UnrecordedContainerIsRemovedAndTheTaskFailed(t *testing.T) {
	var seen reports
	h := newHarness(t, func(c *Config) { c.OnChange = seen.add })
	refused := failRecordingContainers(h, 0)

	task := echoTask(1)
	h.submit(task, http.StatusCreated)
	got := h.waitState(task.ID, api.Failed, 60*time.Second)
	if !strings.Contains(got.Reason, "could not record its container (removed)") || !strings.Contains(got.Reason, "no space left on device") {
		t.Fatalf("reason %q, want it to say the container could not be recorded and was removed, and why", got.Reason)
	}
	if n := refused.Load(); n != saveRetryAttempts {
		t.Errorf("%d writes refused, want %d (the write is retried before giving up)", n, saveRetryAttempts)
	}
	if got.ContainerID != "" {
		t.Errorf("the failed record names container %s, which was removed", short(got.ContainerID))
	}
	if cs := h.containers(map[string]string{LabelTask: task.ID.String()}); len(cs) != 0 {
		t.Fatalf("containers of the task left behind: %+v", cs)
	}
	if r, ok := seen.find(task.ID); !ok || r.State != api.Failed {
		t.Fatalf("last report of the task %+v (found %v), want Failed: the leader must hear of it", r, ok)
	}

	// The store works again; the leader places the task again, higher.
	h.w.store.failPut.Store(nil)
	h.submit(withGen(task, 2), http.StatusCreated)
	run := h.waitState(task.ID, api.Running, 60*time.Second)
	cs := h.containers(map[string]string{LabelTask: task.ID.String()})
	if len(cs) != 1 || cs[0].ID != run.ContainerID || cs[0].Labels[LabelGeneration] != "2" {
		t.Fatalf("containers of the task: %+v, want only %s at generation 2", cs, short(run.ContainerID))
	}
}

// A write that fails a few times and then passes costs nothing: the task runs
// in its one container.
func TestWorker_RecordingTheContainerIsRetried(t *testing.T) {
	h := newHarness(t, nil)
	refused := failRecordingContainers(h, 2)
	task := echoTask(1)
	h.submit(task, http.StatusCreated)
	run := h.waitState(task.ID, api.Running, 60*time.Second)
	if n := refused.Load(); n != 2 {
		t.Fatalf("%d writes refused, want 2", n)
	}
	cs := h.containers(map[string]string{LabelTask: task.ID.String()})
	if len(cs) != 1 || cs[0].ID != run.ContainerID {
		t.Fatalf("containers of the task: %+v, want only %s", cs, short(run.ContainerID))
	}
}

// A worker started on an empty data directory under the name of one that ran
// containers (its data lost, or a new machine given the old name) finds
// their containers by label. It does not remove the running ones blindly: it
// records each (task and generation from the labels, state from the engine)
// and reports it, leaving the decision to the leader, which adopts the
// task's current placement (nothing restarted) and stops the others through
// the worker's API. What it can judge alone it removes: a container of a
// task superseded here by a higher generation, and one that is not running.
func TestWorker_LostDataDirKeepsRunningContainersAndReportsThem(t *testing.T) {
	var seen reports
	h := newHarness(t, func(c *Config) { c.OnChange = seen.add })
	keep := h.waitState(h.submit(echoTask(1), http.StatusCreated).ID, api.Running, 60*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Beside it, as a worker leaves them: a container of the same task at
	// an older generation, still running (its stop was lost); one of a task
	// the worker never recorded (an earlier cluster's), running at
	// generation 3; one created and never started.
	older := withGen(keep, 0)
	olderID := h.createContainer(ctx, older, true)
	stranger := echoTask(3)
	strangerID := h.createContainer(ctx, stranger, true)
	unstarted := echoTask(1)
	unstartedID := h.createContainer(ctx, unstarted, false)

	h.stop()
	h.dir = t.TempDir() // the data directory is lost
	seen.reset()
	h.start()

	got := h.task(keep.ID)
	if got.State != api.Running || got.ContainerID != keep.ContainerID || got.Generation != 1 {
		t.Fatalf("task found running: %s in %s at generation %d, want Running in %s at 1 (kept, not restarted)",
			got.State, short(got.ContainerID), got.Generation, short(keep.ContainerID))
	}
	if st, err := h.rt.Inspect(ctx, keep.ContainerID); err != nil || !st.Running || !st.StartedAt.Equal(keep.StartTime) {
		t.Fatalf("the found container was restarted or stopped: %+v (err %v), started before at %v", st, err, keep.StartTime)
	}
	if got.Image != echoImage {
		t.Errorf("found record's image %q, want %q (from the container)", got.Image, echoImage)
	}
	if r, ok := seen.find(keep.ID); !ok || r.State != api.Running || r.Generation != 1 || r.ContainerID != keep.ContainerID {
		t.Errorf("report of the found task: %+v (found %v), want Running at generation 1 in its container", r, ok)
	}

	str := h.task(stranger.ID)
	if str.State != api.Running || str.ContainerID != strangerID || str.Generation != 3 {
		t.Fatalf("task of an earlier cluster: %s in %s at generation %d, want Running in %s at 3 until the leader decides",
			str.State, short(str.ContainerID), str.Generation, short(strangerID))
	}
	if r, ok := seen.find(stranger.ID); !ok || r.Generation != 3 || r.State != api.Running {
		t.Errorf("report of the task of an earlier cluster: %+v (found %v), want Running at generation 3", r, ok)
	}

	for what, cid := range map[string]string{"the older generation beside a newer one": olderID, "the container never started": unstartedID} {
		if _, err := h.rt.Inspect(ctx, cid); !errors.Is(err, ErrContainerNotFound) {
			t.Errorf("%s (%s): %v, want it removed", what, short(cid), err)
		}
	}
	if status, body := h.do(http.MethodGet, "/tasks/"+unstarted.ID.String(), nil); status != http.StatusNotFound {
		t.Errorf("GET the never-started task: %d %s, want 404: the worker holds no record of it", status, body)
	}

	// The leader's decision for the stranger: stop it, fenced by its
	// generation, through the worker's API.
	if status, body := h.do(http.MethodDelete, "/tasks/"+stranger.ID.String()+"?generation=3", nil); status != http.StatusNoContent {
		t.Fatalf("fenced stop of the found task: %d %s", status, body)
	}
	if _, err := h.rt.Inspect(ctx, strangerID); !errors.Is(err, ErrContainerNotFound) {
		t.Fatalf("the stopped found container %s: %v, want it removed", short(strangerID), err)
	}
	if str := h.task(stranger.ID); str.State != api.Completed {
		t.Fatalf("found task after the stop: %s, want Completed", str.State)
	}
}

// createContainer creates (and starts, if start) a container of task as this
// worker would, behind its back.
func (h *harness) createContainer(ctx context.Context, task api.Task, start bool) string {
	h.t.Helper()
	cid, err := h.rt.Create(ctx, h.w.spec(task))
	if err != nil {
		h.t.Fatalf("create a container of task %s generation %d: %v", task.ID, task.Generation, err)
	}
	if start {
		if err := h.rt.Start(ctx, cid); err != nil {
			h.t.Fatalf("start container %s: %v", short(cid), err)
		}
	}
	return cid
}

// A running worker finds, by its periodic sweep, the containers under its
// label that no record names, whatever left them: one of a task it has no
// record of is recorded and reported for the leader to decide, as adoption
// does at start; one of an older generation beside a task's record, and
// one of a task whose record ended without a container (a start that gave
// up while the engine went on), are removed. The task's own container is
// left alone.
func TestWorker_SweepSettlesContainersNoRecordNames(t *testing.T) {
	var seen reports
	h := newHarness(t, func(c *Config) { c.OnChange = seen.add; c.SweepInterval = 200 * time.Millisecond })
	keep := h.waitState(h.submit(echoTask(1), http.StatusCreated).ID, api.Running, 60*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	olderID := h.createContainer(ctx, withGen(keep, 0), true)
	stranger := echoTask(3)
	strangerID := h.createContainer(ctx, stranger, true)

	deadline := time.Now().Add(60 * time.Second)
	for {
		_, olderErr := h.rt.Inspect(ctx, olderID)
		r, reported := seen.find(stranger.ID)
		if errors.Is(olderErr, ErrContainerNotFound) && reported && r.State == api.Running && r.ContainerID == strangerID && r.Generation == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s of sweeps: older generation's container %s: %v (want removed); report of the unrecorded task: %+v (found %v), want Running in %s at generation 3",
				short(olderID), olderErr, r, reported, short(strangerID))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := h.task(stranger.ID); got.State != api.Running || got.ContainerID != strangerID {
		t.Fatalf("record of the swept-in task: %s in %s, want Running in %s", got.State, short(got.ContainerID), short(strangerID))
	}
	if st, err := h.rt.Inspect(ctx, keep.ContainerID); err != nil || !st.Running || !st.StartedAt.Equal(keep.StartTime) {
		t.Fatalf("the task's own container was touched by the sweep: %+v (err %v)", st, err)
	}
	if got := h.task(keep.ID); got.State != api.Running || got.ContainerID != keep.ContainerID {
		t.Fatalf("record of the kept task: %s in %s, want Running in %s", got.State, short(got.ContainerID), short(keep.ContainerID))
	}

	// A task stopped through the API ends Completed and its container goes;
	// a container of it started afterwards (as an engine may, after the
	// call to start it gave up) is removed by a sweep.
	if status, body := h.do(http.MethodDelete, "/tasks/"+keep.ID.String()+"?generation=1", nil); status != http.StatusNoContent {
		t.Fatalf("stop the task: %d %s", status, body)
	}
	lateID := h.createContainer(ctx, withGen(keep, 1), true)
	for {
		_, err := h.rt.Inspect(ctx, lateID)
		if errors.Is(err, ErrContainerNotFound) {
			break
		}
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatalf("a running container of a Completed task %s: %v, want it removed by a sweep", short(lateID), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := h.task(keep.ID); got.State != api.Completed {
		t.Fatalf("the stopped task after the sweep: %s, want Completed", got.State)
	}

	// A task whose container exited is recorded ended (Completed: the echo
	// exits 0 on SIGTERM), its exited container kept for logs; should that
	// container run again (started by hand, or by the engine), a sweep
	// stops it and keeps it.
	crash := h.waitState(h.submit(echoTask(1), http.StatusCreated).ID, api.Running, 60*time.Second)
	if err := h.rt.Stop(ctx, crash.ContainerID, 0); err != nil {
		t.Fatalf("kill the task's container: %v", err)
	}
	h.waitState(crash.ID, api.Completed, 60*time.Second)
	if err := h.rt.Start(ctx, crash.ContainerID); err != nil {
		t.Fatalf("start the ended task's container again: %v", err)
	}
	deadline = time.Now().Add(60 * time.Second)
	for {
		st, err := h.rt.Inspect(ctx, crash.ContainerID)
		if err != nil {
			t.Fatalf("the ended task's container %s: %v, want it kept (stopped) for its logs", short(crash.ContainerID), err)
		}
		if !st.Running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the container %s of an ended task runs on after 60 s of sweeps", short(crash.ContainerID))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := h.task(crash.ID); got.State != api.Completed || got.ContainerID != crash.ContainerID {
		t.Fatalf("the ended task after the sweep: %s in %s, want Completed in %s", got.State, short(got.ContainerID), short(crash.ContainerID))
	}
}
