package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// A GET /events subscriber on a follower that falls so far behind that the
// leader sends it a snapshot (InstallSnapshot: raft calls the FSM's Restore,
// which replaces the state) misses every change the snapshot covers. The
// API promises every committed change once, in order, or a stream that ends
// saying it was dropped, after which the subscriber re-reads GET /tasks.
// Here the follower is cut off by a partition (the subscriber, on another
// address, stays connected), the leader commits more than the log it keeps
// after a snapshot (--fast: 1024 entries), and the partition heals. The
// stream must end (dropped), or else have delivered every task the
// follower now holds. Found while writing the chaos run's /events check
// (issue 13); it fails until fsm.Restore ends every subscription (see
// fsm/restore_subscribers_test.go). Since issue 15 a dropped reader
// resumes after the last change it read: the follower refuses (410, naming
// the index of the snapshot it installed, which raft's snapshot store told
// its FSM), and the leader, which kept every change, resumes it.
func TestEvents_FollowerCatchingUpFromASnapshot(t *testing.T) {
	c := NewProcClusterOnIPs(t, 3, 0)
	fw := NewFirewall(t)
	leader := c.LeaderProc()
	var follower *Proc
	var others []string
	for _, m := range c.Managers {
		if m != leader && follower == nil {
			follower = m
		} else {
			others = append(others, m.IP)
		}
	}

	// Subscribe on the follower, from the test's own address.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hc := &http.Client{Transport: api.NewTLSTransport("", c.Sec.TLS())}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.URL(follower, "/events"), nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /events on %s: %d", follower.Name, resp.StatusCode)
	}
	var mu sync.Mutex
	received := map[uuid.UUID]bool{}
	// seen is the position of the last change received (or where the
	// stream started): where a reader would resume.
	seen, err := api.ParsePosition(resp.Header.Get(api.HeaderEventsAfter))
	if err != nil {
		t.Fatalf("GET /events on %s: %s: %v", follower.Name, api.HeaderEventsAfter, err)
	}
	end := make(chan string, 1)
	go func() {
		dec := json.NewDecoder(resp.Body)
		for {
			var l api.Change
			if err := dec.Decode(&l); err != nil {
				end <- "ended: " + err.Error()
				return
			}
			if l.Error != "" {
				end <- "dropped: " + l.Error
				return
			}
			mu.Lock()
			received[l.Task.ID] = true
			seen = l.Position()
			mu.Unlock()
		}
	}()

	fw.Partition([]string{follower.IP}, others)
	t.Logf("%s (a follower, its stream open) cut off from the other managers", follower.Name)
	cl := c.ClientOf(api.ClientOptions{Timeout: 10 * time.Second, RetryFor: 20 * time.Second}, leader)
	const n = 1300 // more than --fast's SnapshotThreshold and TrailingLogs (1024)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 8 {
				sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, _, err := cl.SubmitTask(sctx, api.TaskEvent{State: api.Running, Task: api.Task{ID: uuid.New(), Name: fmt.Sprintf("behind-%d", i), Image: "cube-echo:latest"}})
				scancel()
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("submit: %v", err)
	}
	// The leader snapshots (every 10 s with --fast, once 1024 entries
	// accumulated) and compacts its log past what the follower has.
	testkit.Eventually(t, 90*time.Second, func() error {
		data, _ := os.ReadFile(leader.log)
		if !strings.Contains(string(data), "snapshot complete up to") {
			return fmt.Errorf("%s has not snapshotted yet", leader.Name)
		}
		return nil
	})
	fw.Heal()
	testkit.Eventually(t, 90*time.Second, func() error {
		data, _ := os.ReadFile(follower.log)
		if !strings.Contains(string(data), "Installed remote snapshot") {
			return fmt.Errorf("%s has not installed the leader's snapshot yet", follower.Name)
		}
		return nil
	})
	t.Logf("partition healed; %s caught up by installing the leader's snapshot", follower.Name)

	var state []api.Task
	testkit.Eventually(t, 60*time.Second, func() error {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		state, err = c.ClientOf(api.ClientOptions{Timeout: 5 * time.Second, RetryFor: time.Second}, follower).Tasks(sctx, false)
		if err != nil {
			return err
		}
		if len(state) < n {
			return fmt.Errorf("%s holds %d tasks, want %d", follower.Name, len(state), n)
		}
		return nil
	})
	select {
	case how := <-end:
		t.Logf("the stream on %s %s: the subscriber knows to re-read the state", follower.Name, how)
		mu.Lock()
		after := seen
		mu.Unlock()
		checkResume(t, c, follower, leader, after)
		return
	case <-time.After(5 * time.Second):
	}
	mu.Lock()
	defer mu.Unlock()
	missed := 0
	for _, task := range state {
		if !received[task.ID] {
			missed++
		}
	}
	if missed > 0 {
		t.Fatalf("the stream on %s is still open and never said it was dropped, yet %d of the %d tasks %s holds never arrived on it: the snapshot's changes were skipped silently", follower.Name, missed, len(state), follower.Name)
	}
}

// checkResume: a reader that read up to after on a follower that then
// installed a snapshot (raft noted its index) cannot resume there: 410,
// naming the snapshot's index and why. The leader, which kept every change,
// resumes it.
func checkResume(t *testing.T, c *ProcCluster, follower, leader *Proc, after api.Position) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	get := func(m *Proc) *http.Response {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL(m, "/events?after="+after.String()), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := get(follower)
	var gap api.EventsGap
	err := json.NewDecoder(resp.Body).Decode(&gap)
	resp.Body.Close()
	if resp.StatusCode != http.StatusGone || err != nil || gap.After != after || gap.Oldest == nil || !after.Less(*gap.Oldest) || !strings.Contains(gap.Reason, "snapshot of the state at index") {
		t.Fatalf("resume after %s on %s, which installed a snapshot since: %d %+v (%v); want 410 naming the snapshot's index", after, follower.Name, resp.StatusCode, gap, err)
	}
	t.Logf("resume after %s on %s: 410, %s", after, follower.Name, gap.Message)
	resp = get(leader)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get(api.HeaderEventsAfter) != after.String() {
		t.Fatalf("resume after %s on the leader %s: %d, %s %q; want 200", after, leader.Name, resp.StatusCode, api.HeaderEventsAfter, resp.Header.Get(api.HeaderEventsAfter))
	}
}

// `cube events` follows the cluster, not one manager (issue 15; the
// README's demo died with the manager it read from): connected to the
// leader, it goes on after the leader is killed, on another manager, from
// the last change it printed. What it printed must be exactly a stretch of
// the cluster's changes, as a surviving manager serves them from its
// memory (GET /events?after=0): none lost, none twice, in order. Before
// this, cube events exited when its manager died.
func TestEvents_CLIFollowsAcrossALeaderKill(t *testing.T) {
	c := NewProcCluster(t, 3, 1)
	leader := c.LeaderProc()
	addrs := []string{leader.HTTPAddr} // the leader first: cube events streams from it
	var survivors []*Proc
	for _, m := range c.Managers {
		if m != leader {
			addrs = append(addrs, m.HTTPAddr)
			survivors = append(survivors, m)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ev := startCubeEvents(t, ctx, c, "events", "-o", "json", "-m", strings.Join(addrs, ","))
	cl := c.Client()
	submit := func(name string) uuid.UUID {
		t.Helper()
		id := uuid.New()
		sctx, scancel := context.WithTimeout(ctx, 60*time.Second)
		defer scancel()
		if _, _, err := cl.SubmitTask(sctx, api.TaskEvent{State: api.Running, Task: api.Task{ID: id, Name: name, Image: "cube-echo:latest"}}); err != nil {
			t.Fatalf("submit %s: %v", name, err)
		}
		return id
	}
	// The stream is open once it shows a task submitted after it started.
	var ids []uuid.UUID
	ids = append(ids, submit("warm-up"))
	ev.waitRunning(t, ids...)
	for i := range 3 {
		ids = append(ids, submit(fmt.Sprint("before-", i)))
	}
	ev.waitSeen(t, ids[1]) // mid-stream: the others' changes still to come
	c.Kill(leader)
	t.Logf("killed the leader %s while cube events streamed from it", leader.Name)
	for i := range 3 {
		ids = append(ids, submit(fmt.Sprint("after-", i)))
	}
	ev.waitRunning(t, ids...)
	got, stderr := ev.stop(t)
	if !strings.Contains(stderr, "manager "+leader.HTTPAddr+" stopped streaming") || !strings.Contains(stderr, "resumed after") {
		t.Errorf("cube events did not say it resumed; stderr:\n%s", stderr)
	}

	checkPrintedExactly(t, c, survivors[0], got)
}

// checkPrintedExactly: what cube events printed (got) must be exactly a
// stretch of the cluster's changes, as manager m serves them from its
// memory (GET /events?after=0, every change since the cluster began, up
// to the last one printed): none lost, none twice, in order.
func checkPrintedExactly(t *testing.T, c *ProcCluster, m *Proc, got []api.Change) {
	t.Helper()
	if len(got) == 0 {
		t.Fatal("cube events printed no change")
	}
	last := got[len(got)-1].Position()
	ref := readEventsAfter(t, c, m, "0", last)
	first := slices.IndexFunc(ref, func(ch api.Change) bool { return ch.Position() == got[0].Position() })
	if first < 0 {
		t.Fatalf("the first change cube events printed (%s) is not among %s's changes", got[0].Position(), m.Name)
	}
	want := ref[first:]
	for i := range max(len(got), len(want)) {
		switch {
		case i >= len(got):
			t.Fatalf("cube events missed %d changes from %s on (%d printed, %d committed in that stretch)", len(want)-i, want[i].Position(), len(got), len(want))
		case i >= len(want):
			t.Fatalf("cube events printed %d changes more than committed, from %s on", len(got)-i, got[i].Position())
		case got[i].Position() != want[i].Position() || got[i].Task.ID != want[i].Task.ID || got[i].Task.State != want[i].Task.State || got[i].Task.Generation != want[i].Task.Generation:
			t.Fatalf("change %d: cube events printed %s %s %s, the cluster committed %s %s %s (a change lost, repeated or out of order)",
				i, got[i].Position(), got[i].Task.ID, got[i].Task.State, want[i].Position(), want[i].Task.ID, want[i].Task.State)
		}
	}
	t.Logf("cube events printed %d changes, %s to %s: exactly the cluster's", len(got), got[0].Position(), last)
}

// `cube events` connected to a follower that is then cut off from the
// other managers (issue 16): the follower is alive and its connection to
// the reader intact (the partition is between the nodes' addresses only),
// but it learns of no new change while the majority goes on committing.
// It must end the stream, saying it has not heard from a leader, so that
// cube events resumes on another manager and prints every change exactly
// once. Before, cube events sat on the follower forever, printing nothing.
// Also: a position past the cluster's log (a typo) is refused at once,
// naming the cluster's last index; before, it waited forever.
func TestEvents_CLILeavesACutOffFollower(t *testing.T) {
	c := NewProcClusterOnIPs(t, 3, 1)
	fw := NewFirewall(t)
	leader := c.LeaderProc()
	var follower *Proc
	var majority []*Proc
	for _, m := range c.Managers {
		if m != leader && follower == nil {
			follower = m
		} else {
			majority = append(majority, m)
		}
	}
	var rest []string // every other node's address
	for _, p := range append(append([]*Proc{}, c.Managers...), c.Workers...) {
		if p != follower {
			rest = append(rest, p.IP)
		}
	}

	out, err := c.Cube("events", "--after", "99999999")
	if err == nil || !strings.Contains(out, "position 99999999 is beyond the cluster's last index") {
		t.Fatalf("cube events --after 99999999: %v\n%s\nwant it refused, naming the cluster's last index", err, out)
	}
	t.Logf("cube events --after 99999999: %s", strings.TrimSpace(out))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	addrs := []string{follower.HTTPAddr} // the follower first: cube events streams from it
	for _, m := range majority {
		addrs = append(addrs, m.HTTPAddr)
	}
	ev := startCubeEvents(t, ctx, c, "events", "-o", "json", "-m", strings.Join(addrs, ","))
	cl := c.Client(majority...)
	submit := func(name string) uuid.UUID {
		t.Helper()
		id := uuid.New()
		sctx, scancel := context.WithTimeout(ctx, 60*time.Second)
		defer scancel()
		if _, _, err := cl.SubmitTask(sctx, api.TaskEvent{State: api.Running, Task: api.Task{ID: id, Name: name, Image: "cube-echo:latest"}}); err != nil {
			t.Fatalf("submit %s: %v", name, err)
		}
		return id
	}
	// The stream is open once it shows a task submitted after it started.
	ids := []uuid.UUID{submit("warm-up")}
	ev.waitRunning(t, ids...)
	for i := range 3 {
		ids = append(ids, submit(fmt.Sprint("before-", i)))
	}
	ev.waitSeen(t, ids[1])
	fw.Partition([]string{follower.IP}, rest)
	t.Logf("%s (a follower, cube events streaming from it) cut off from the other nodes", follower.Name)
	for i := range 5 {
		ids = append(ids, submit(fmt.Sprint("during-", i)))
	}
	ev.waitRunning(t, ids...)

	// Cut off still, the follower refuses new streams, saying why.
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, c.URL(follower, "/events"), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var er api.ErrResponse
	_ = json.NewDecoder(resp.Body).Decode(&er)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(er.Message, "has not heard from a raft leader") {
		t.Errorf("GET /events on %s, cut off: %d %q, want 503 saying it has not heard from a leader", follower.Name, resp.StatusCode, er.Message)
	}

	got, stderr := ev.stop(t)
	if !strings.Contains(stderr, "manager "+follower.HTTPAddr+" stopped streaming") || !strings.Contains(stderr, "has not heard from a raft leader") || !strings.Contains(stderr, "resumed after") {
		t.Errorf("cube events did not say it left the cut-off follower; stderr:\n%s", stderr)
	}
	t.Logf("cube events (stderr): %s", strings.TrimSpace(stderr))
	checkPrintedExactly(t, c, leader, got)
}

// cubeEvents is a running `cube events -o json`, its lines parsed.
type cubeEvents struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []api.Change
	bad    []string
	stderr bytes.Buffer
	done   chan struct{}
}

func startCubeEvents(t *testing.T, ctx context.Context, c *ProcCluster, args ...string) *cubeEvents {
	t.Helper()
	ev := &cubeEvents{cmd: c.CubeCommand(ctx, args...), done: make(chan struct{})}
	out, err := ev.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	ev.cmd.Stderr = &lockedWriter{mu: &ev.mu, w: &ev.stderr}
	if err := ev.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(ev.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var ch api.Change
			err := json.Unmarshal(sc.Bytes(), &ch)
			ev.mu.Lock()
			if err != nil {
				ev.bad = append(ev.bad, sc.Text())
			} else {
				ev.lines = append(ev.lines, ch)
			}
			ev.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ev.cmd.Process.Kill()
		<-ev.done
		_ = ev.cmd.Wait()
	})
	return ev
}

// lockedWriter writes to w under mu.
type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// waitFor waits until every task has a printed change that satisfies ok,
// failing early if cube events exited.
func (ev *cubeEvents) waitFor(t *testing.T, what string, ok func(api.Task) bool, ids ...uuid.UUID) {
	t.Helper()
	testkit.Eventually(t, 120*time.Second, func() error {
		select {
		case <-ev.done:
			t.Fatalf("cube events exited; stderr:\n%s", ev.errText())
		default:
		}
		ev.mu.Lock()
		defer ev.mu.Unlock()
		for _, id := range ids {
			if !slices.ContainsFunc(ev.lines, func(ch api.Change) bool { return ch.Task.ID == id && ok(ch.Task) }) {
				return fmt.Errorf("cube events printed no change of task %s that is %s (%d changes printed)", id, what, len(ev.lines))
			}
		}
		return nil
	})
}

func (ev *cubeEvents) waitSeen(t *testing.T, ids ...uuid.UUID) {
	t.Helper()
	ev.waitFor(t, "any", func(api.Task) bool { return true }, ids...)
}

func (ev *cubeEvents) waitRunning(t *testing.T, ids ...uuid.UUID) {
	t.Helper()
	ev.waitFor(t, "Running", func(task api.Task) bool { return task.State == api.Running }, ids...)
}

func (ev *cubeEvents) errText() string {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return ev.stderr.String()
}

// stop interrupts cube events as Ctrl-C does (it must still run, and exit
// 0), and returns what it printed and its stderr.
func (ev *cubeEvents) stop(t *testing.T) ([]api.Change, string) {
	t.Helper()
	select {
	case <-ev.done:
		t.Fatalf("cube events exited on its own; stderr:\n%s", ev.errText())
	default:
	}
	if err := ev.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ev.done:
	case <-time.After(30 * time.Second):
		t.Fatal("cube events did not exit within 30 s of SIGINT")
	}
	if err := ev.cmd.Wait(); err != nil {
		t.Fatalf("cube events after SIGINT: %v; stderr:\n%s", err, ev.errText())
	}
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if len(ev.bad) > 0 {
		t.Fatalf("cube events -o json printed lines that are not changes: %q", ev.bad)
	}
	return slices.Clone(ev.lines), ev.stderr.String()
}

// readEventsAfter reads GET /events?after=after on manager m until a
// change at or past last arrives, and returns the changes up to last.
func readEventsAfter(t *testing.T, c *ProcCluster, m *Proc, after string, last api.Position) []api.Change {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL(m, "/events?after="+after), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get(api.HeaderEventsAfter) != after {
		t.Fatalf("GET /events?after=%s on %s: %d, %s %q", after, m.Name, resp.StatusCode, api.HeaderEventsAfter, resp.Header.Get(api.HeaderEventsAfter))
	}
	var out []api.Change
	dec := json.NewDecoder(resp.Body)
	for {
		var ch api.Change
		if err := dec.Decode(&ch); err != nil {
			t.Fatalf("GET /events?after=%s on %s ended after %d changes, before %s: %v", after, m.Name, len(out), last, err)
		}
		if ch.Error != "" {
			t.Fatalf("GET /events?after=%s on %s dropped: %s", after, m.Name, ch.Error)
		}
		if n := len(out); n > 0 && !out[n-1].Position().Less(ch.Position()) {
			t.Fatalf("%s streamed %s after %s", m.Name, ch.Position(), out[n-1].Position())
		}
		if last.Less(ch.Position()) {
			return out
		}
		out = append(out, ch)
		if ch.Position() == last {
			return out
		}
	}
}
