package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
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
// fsm/restore_subscribers_test.go).
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
	end := make(chan string, 1)
	go func() {
		dec := json.NewDecoder(resp.Body)
		for {
			var l eventLine
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
