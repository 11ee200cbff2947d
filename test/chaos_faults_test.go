package test

// The nemesis's faults of issue 13: a worker's data directory lost, a
// manager added and one removed under load, a full disk under a worker or
// a manager, and a manager's clock jumped (minutes, both ways). Each heals
// before the next fault, like the others.
//
// The host's clock is never changed (a shared test machine cannot allow
// it, and time namespaces move only the monotonic clocks). The clock jump
// runs the cluster on the clock-jump build of cube (clock.go): its
// time.Now is patched, through go build -overlay, to add an offset the node
// reads from a file to the wall clock and leave the monotonic clock alone,
// so the whole process (raft, memberlist, crypto/tls, Cube) sees its wall
// clock step as after an NTP step, while its timers and durations run on.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cube-orch/cube/api"
)

// managers returns the current managers; add-remove-manager changes the
// list while clients and the leader observer read it.
func (r *chaosRun) managers() []*Proc {
	r.mgrMu.Lock()
	defer r.mgrMu.Unlock()
	return append([]*Proc(nil), r.c.Managers...)
}

// newFault injects one of the faults of this file and heals it. hold is
// how long the fault lasts; sleep waits, returning early (false) once the
// run ends, which never skips the healing.
func (r *chaosRun) newFault(kind string, hold time.Duration, sleep func(time.Duration) bool) {
	switch kind {
	case "worker-data-lost":
		// The worker's machine loses its disk: the process dies, its data
		// directory (worker.db: its records of the tasks it runs, its
		// name) is gone, and it starts again under the same name. Its
		// containers still run; the cluster must end with each task
		// running once (manager/DESIGN.md, "a worker without a record").
		w := r.c.Workers[r.intn(len(r.c.Workers))]
		r.fault(kind)
		r.c.Kill(w)
		if err := emptyDir(w.Data); err != nil {
			r.t.Errorf("nemesis: remove the data of %s: %v", w.Name, err)
		}
		sleep(hold)
		r.c.Start(w)
	case "add-remove-manager":
		r.fault(kind)
		r.addRemoveManager()
	case "clock-jump":
		// A manager's wall clock steps 2–10 minutes, ahead or back (NTP
		// stepping a clock that drifted, a machine resumed), the leader's
		// half of the time; then NTP sets it right again.
		ms := slices.DeleteFunc(r.managers(), func(p *Proc) bool { return !p.Running() })
		if len(ms) == 0 {
			return
		}
		p := ms[r.intn(len(ms))]
		leader := r.leaderOrNil()
		if r.intn(2) == 0 && leader != nil {
			p = leader
		}
		role := ""
		if p == leader {
			role = " (the leader)"
		}
		d := time.Duration(2+r.intn(9)) * time.Minute
		if r.intn(2) == 0 {
			d = -d
		}
		r.fault(kind)
		before := map[*Proc]int64{}
		for _, q := range append(r.managers(), r.c.Workers...) {
			before[q] = logSize(q)
		}
		if err := r.c.SetClockOffset(p, d); err != nil {
			r.t.Errorf("nemesis: jump the clock of %s: %v", p.Name, err)
		}
		r.t.Logf("nemesis: the clock of %s%s jumped %s", p.Name, role, d)
		sleep(hold + 3*time.Second) // long enough for new connections, elections, health checks
		if err := r.c.SetClockOffset(p, 0); err != nil {
			r.t.Errorf("nemesis: set the clock of %s right: %v", p.Name, err)
		}
		refused := 0
		for q, off := range before {
			refused += countSince(q, off, "certificate has expired or is not yet valid")
		}
		r.t.Logf("nemesis: the clock of %s is right again; %d log lines refused a certificate meanwhile", p.Name, refused)
		if refused > 0 {
			// Every certificate of the cluster is valid from
			// security.Backdate before its making: a step of minutes
			// must not cut a manager off.
			r.t.Errorf("nemesis: with the clock of %s %s off, nodes refused certificates %d times (\"certificate has expired or is not yet valid\")", p.Name, d, refused)
		}
	case "disk-full-worker", "disk-full-manager":
		var nodes []*Proc
		if kind == "disk-full-worker" {
			nodes = r.c.Workers
		} else {
			nodes = r.managers()
		}
		nodes = slices.DeleteFunc(slices.Clone(nodes), func(p *Proc) bool { return r.disks[p.Name] == "" || !p.Running() })
		if len(nodes) == 0 {
			return
		}
		p := nodes[r.intn(len(nodes))]
		role := ""
		if kind == "disk-full-manager" && r.intn(2) == 0 {
			// Half the time the leader: it cannot append to its own log.
			if l := r.leaderOrNil(); l != nil && r.disks[l.Name] != "" {
				p = l
			}
		}
		if p == r.leaderOrNil() {
			role = " (the leader)"
		}
		r.fault(kind)
		before := logSize(p)
		fill, err := fillDisk(r.disks[p.Name])
		if err != nil {
			r.t.Errorf("nemesis: fill the disk of %s: %v", p.Name, err)
		}
		r.t.Logf("nemesis: the data directory of %s%s is full", p.Name, role)
		sleep(hold + 3*time.Second) // long enough for writes to fail
		if err := os.Remove(fill); err != nil && !errors.Is(err, os.ErrNotExist) {
			r.t.Errorf("nemesis: free the disk of %s: %v", p.Name, err)
		}
		r.t.Logf("nemesis: the data directory of %s has room again; %d log lines of %s said \"no space left on device\" meanwhile; still running: %v",
			p.Name, countSince(p, before, "no space left on device"), p.Name, p.Running())
	}
}

// logSize returns the size of node p's log now.
func logSize(p *Proc) int64 {
	fi, err := os.Stat(p.log)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// countSince counts the lines of p's log after offset that contain s.
func countSince(p *Proc, offset int64, s string) int {
	data, err := os.ReadFile(p.log)
	if err != nil || int64(len(data)) < offset {
		return 0
	}
	return strings.Count(string(data[offset:]), s)
}

// addRemoveManager adds a manager to the running cluster as an operator
// does (a new `cube manager` without --peers joins through gossip as a
// non-voter; the leader promotes it once it has caught up), then removes
// one (DELETE /cluster/servers/{id}), leaving as many voters as before: an
// odd number. The removed one is never a subscriber's manager; it is a
// follower, removed and then stopped (retired) or killed and then removed
// (lost), or the leader, stopped first (SIGTERM: it hands leadership over)
// and then removed. A manager that is not promoted within the deadline is
// a failure, and is removed itself.
func (r *chaosRun) addRemoveManager() {
	r.mgrMu.Lock()
	added := r.c.AddManager()
	r.mgrMu.Unlock()
	start := time.Now()
	promoted := false
	var logged time.Time
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		s, ok := r.server(added.Name)
		if ok && s.Voter {
			promoted = true
			break
		}
		if time.Since(logged) > 5*time.Second {
			where := "not in the leader's configuration yet"
			switch {
			case ok:
				where = fmt.Sprintf("a non-voter, promotion %q", s.Promotion)
			case s.ID == "?":
				where = "no manager answered as the leader"
			}
			r.t.Logf("nemesis: manager %s joining for %s: %s", added.Name, time.Since(start).Round(time.Second), where)
			logged = time.Now()
		}
	}
	if promoted {
		r.t.Logf("nemesis: manager %s joined and was promoted to voter in %s", added.Name, time.Since(start).Round(time.Millisecond))
	} else {
		r.t.Errorf("nemesis: manager %s did not become a voter within 90 s of its start", added.Name)
	}

	victim, how := added, "stopped after its removal"
	if promoted {
		var candidates []*Proc
		for _, m := range r.managers() {
			if !r.subscribed(m) {
				candidates = append(candidates, m)
			}
		}
		victim = candidates[r.intn(len(candidates))]
		switch leader := r.leaderOrNil(); {
		case victim == leader:
			how = "the leader, stopped (handing leadership over) then removed"
		case r.intn(2) == 0:
			how = "killed then removed"
		}
	}
	stopFirst := how != "stopped after its removal"
	if stopFirst {
		if strings.HasPrefix(how, "killed") {
			r.c.Kill(victim)
		} else {
			r.c.Stop(victim)
		}
	}
	var others []*Proc
	for _, m := range r.managers() {
		if m != victim && m.Running() {
			others = append(others, m)
		}
	}
	// The removal is refused (409) while it would leave fewer reachable
	// voters than a quorum, for example while gossip still calls a killed
	// manager suspect; it is asked again until it passes.
	var err error
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err = r.c.ClientOf(api.ClientOptions{Timeout: 10 * time.Second, RetryFor: 5 * time.Second}, others...).RemoveManager(ctx, victim.Name)
		cancel()
		if err == nil {
			if _, still := r.server(victim.Name); !still {
				break
			}
			err = errors.New("still in the configuration after its removal was answered")
		}
	}
	if err != nil {
		r.t.Errorf("nemesis: remove manager %s: %v", victim.Name, err)
	}
	if !stopFirst {
		r.c.Stop(victim)
	}
	r.mgrMu.Lock()
	r.c.Managers = slices.DeleteFunc(r.c.Managers, func(m *Proc) bool { return m == victim })
	r.retired = append(r.retired, victim)
	r.mgrMu.Unlock()
	if err := emptyDir(victim.Data); err != nil {
		r.t.Logf("nemesis: remove the data of retired manager %s: %v", victim.Name, err)
	}
	r.t.Logf("nemesis: manager %s removed (%s); managers now %s", victim.Name, how, procNames(r.managers()))
}

// server returns the raft server of the given ID as the leader sees the
// configuration, and whether it is there; its ID is "?" when no manager
// answered as the leader.
func (r *chaosRun) server(id string) (api.RaftServer, bool) {
	for _, m := range r.managers() {
		if !m.Running() {
			continue
		}
		info, err := clusterInfo(r.c, m)
		if err != nil || info.LeaderID == "" || info.LeaderID != info.Self {
			continue
		}
		for _, s := range info.Servers {
			if s.ID == id {
				return s, true
			}
		}
		return api.RaftServer{}, false
	}
	return api.RaftServer{ID: "?"}, false
}

func procNames(ps []*Proc) string {
	var names []string
	for _, p := range ps {
		names = append(names, p.Name)
	}
	return strings.Join(names, ",")
}

// emptyDir removes everything in dir, leaving dir (a mount point, maybe).
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// Sizes of the tmpfs data directories of the disk faults: room for a
// worker's records and for a manager's raft log (at most a few thousand
// entries with --fast's snapshots) and snapshots; the fault fills them.
const (
	workerDiskSize  = "16m"
	managerDiskSize = "128m"
)

// prepareDisks mounts a small tmpfs as the data directory of every worker
// (disk-full-worker) or every initial manager (disk-full-manager) when the
// run's faults include them, and returns the ProcOptions.DataDir that
// names them (nil when none is needed). Mounting needs root: when it is
// not permitted, a run whose faults were named (CHAOS_FAULTS) is skipped,
// saying why; otherwise the disk faults are left out of the run, logged.
// The mounts are undone by a cleanup registered here, before the cluster
// exists, so that it runs after the cluster's processes stopped.
func (r *chaosRun) prepareDisks(explicit bool) func(name string) string {
	t := r.t
	r.disks = map[string]string{}
	worker, manager := slices.Contains(r.kinds, "disk-full-worker"), slices.Contains(r.kinds, "disk-full-manager")
	if !worker && !manager {
		return nil
	}
	base, err := os.MkdirTemp("", "cube-chaos-disks-")
	if err != nil {
		t.Fatal(err)
	}
	var mounted []string
	t.Cleanup(func() {
		for _, dir := range mounted {
			if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
				// A process that outlived the cluster still holds a file:
				// detach the mount now, the kernel frees it when they close.
				if out2, err2 := exec.Command("umount", "-l", dir).CombinedOutput(); err2 != nil {
					t.Errorf("unmount %s: %v %s; %v %s", dir, err, out, err2, out2)
				}
			}
		}
		_ = os.RemoveAll(base)
	})
	mount := func(dir, size string) error {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput()
		if err != nil {
			return fmt.Errorf("mount -t tmpfs -o size=%s tmpfs %s: %v: %s", size, dir, err, strings.TrimSpace(string(out)))
		}
		mounted = append(mounted, dir)
		return nil
	}
	if err := mount(filepath.Join(base, "probe"), "1m"); err != nil {
		if explicit {
			t.Skipf("the disk-full faults need to mount a tmpfs, which is not permitted here (run as root): %v", err)
		}
		t.Logf("chaos: leaving out the disk-full faults: mounting a tmpfs is not permitted here (run as root): %v", err)
		r.kinds = slices.DeleteFunc(r.kinds, func(k string) bool { return strings.HasPrefix(k, "disk-full-") })
		return nil
	}
	return func(name string) string {
		isManager := !strings.Contains(name, "-w") // workers are Prefix+"w1"…, managers m1… and a1…
		if (isManager && !manager) || (!isManager && !worker) || strings.HasPrefix(name, "a") {
			return ""
		}
		size := workerDiskSize
		if isManager {
			size = managerDiskSize
		}
		dir := filepath.Join(base, name)
		if err := mount(dir, size); err != nil {
			t.Fatalf("tmpfs for %s: %v", name, err)
		}
		r.disks[name] = dir
		t.Logf("chaos: %s's data directory is a %s tmpfs at %s", name, size, dir)
		return dir
	}
}

// fillDisk writes a file in dir until the file system is full (ENOSPC)
// and returns its path; removing it frees the space.
func fillDisk(dir string) (string, error) {
	path := filepath.Join(dir, "chaos-disk-full")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return path, err
	}
	defer f.Close()
	chunk := make([]byte, 256<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return path, nil
			}
			return path, err
		}
	}
}
