package test

// The clock-jump build: a cube binary whose wall clock can be stepped, for
// the fault "a manager's clock jumped (minutes, both ways)" of issue 13
// without touching the host's clock. The build patches the standard
// library's time.Now through `go build -overlay`: after it reads the clock
// (runtimeNow) it adds an offset to the wall reading and leaves the
// monotonic one as it is, exactly what a clock stepped by NTP does to a
// process. Everything in the process sees it (raft, memberlist, crypto/tls
// verifying certificates, Cube's timestamps); durations, timers and
// deadlines, which Go measures on the monotonic clock, do not move. The
// offset is set through a file the node follows (cmd/cube/testclock.go,
// tag cubeclockjump): ProcOptions.ClockJump, ProcCluster.SetClockOffset.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// clockAnchor is the line of time.Now after which the offset is applied.
const clockAnchor = "\tsec, nsec, mono := runtimeNow()\n"

// clockShiftFile is added to package time by the overlay.
const clockShiftFile = `package time

import "sync/atomic"

// Added by Cube's clock-jump test build (test/clock.go): the offset of
// the wall clock that Now reports, in nanoseconds. The monotonic clock is
// not shifted.
var cubeWallOffset atomic.Int64

// CubeSetWallOffset makes Now report the wall clock shifted by d from now on.
func CubeSetWallOffset(d Duration) { cubeWallOffset.Store(int64(d)) }

// cubeShiftWall adds the offset to a wall clock reading (sec, nsec).
func cubeShiftWall(sec int64, nsec int32) (int64, int32) {
	d := cubeWallOffset.Load()
	if d == 0 {
		return sec, nsec
	}
	sec += d / 1e9
	n := int64(nsec) + d%1e9 // in (-1e9, 2e9)
	switch {
	case n < 0:
		n += 1e9
		sec--
	case n >= 1e9:
		n -= 1e9
		sec++
	}
	return sec, int32(n)
}
`

// writeClockOverlay writes the patched time.go, the added file and the
// overlay (go help build, -overlay) that puts them into the standard
// library of GOROOT, in dir; it returns the overlay's path. It fails if
// time.Now no longer reads the clock on the anchor line exactly once (a
// new Go release): the patch must then be redone, not silently skipped.
func writeClockOverlay(dir string) (string, error) {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOROOT: %v", err)
	}
	src := filepath.Join(strings.TrimSpace(string(out)), "src", "time")
	orig, err := os.ReadFile(filepath.Join(src, "time.go"))
	if err != nil {
		return "", err
	}
	if n := bytes.Count(orig, []byte(clockAnchor)); n != 1 {
		return "", fmt.Errorf("clock-jump build: %s has the line %q %d times, want exactly once inside func Now; redo the patch of test/clock.go for this Go release",
			filepath.Join(src, "time.go"), clockAnchor, n)
	}
	patched := bytes.Replace(orig, []byte(clockAnchor), []byte(clockAnchor+"\tsec, nsec = cubeShiftWall(sec, nsec)\n"), 1)
	timeGo, shiftGo := filepath.Join(dir, "time.go"), filepath.Join(dir, "zz_cubeclock.go")
	if err := os.WriteFile(timeGo, patched, 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(shiftGo, []byte(clockShiftFile), 0o644); err != nil {
		return "", err
	}
	overlay, err := json.Marshal(map[string]map[string]string{"Replace": {
		filepath.Join(src, "time.go"):         timeGo,
		filepath.Join(src, "zz_cubeclock.go"): shiftGo,
	}})
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "overlay.json")
	return path, os.WriteFile(path, overlay, 0o644)
}

// clockBuild is the clock-jump binary, built once per test binary.
var clockBuild struct {
	sync.Once
	path string
	dir  string // removed by TestMain
	err  error
}

// ClockJumpBinary returns the path of a cube binary built with the race
// detector, the tag cubeclockjump and the time.Now overlay: a node started
// with CUBE_TEST_CLOCK_FILE follows the wall clock offset in that file.
func ClockJumpBinary(t *testing.T) string {
	t.Helper()
	clockBuild.Do(func() {
		dir, err := os.MkdirTemp("", "cube-clockjump-")
		if err != nil {
			clockBuild.err = err
			return
		}
		clockBuild.dir = dir
		overlay, err := writeClockOverlay(dir)
		if err != nil {
			clockBuild.err = err
			return
		}
		clockBuild.path = filepath.Join(dir, "cube")
		start := time.Now()
		out, err := exec.Command("go", "build", "-race", "-tags", "cubeclockjump", "-overlay", overlay,
			"-o", clockBuild.path, "github.com/cube-orch/cube/cmd/cube").CombinedOutput()
		if err != nil {
			clockBuild.err = fmt.Errorf("go build the clock-jump cube: %v\n%s", err, out)
			return
		}
		t.Logf("clock-jump cube built in %s", time.Since(start).Round(time.Second))
	})
	if clockBuild.err != nil {
		t.Fatal(clockBuild.err)
	}
	return clockBuild.path
}

// clockFile is the file node p of a ClockJump cluster follows.
func (c *ProcCluster) clockFile(p *Proc) string {
	return filepath.Join(c.Dir, p.Name+".clock")
}

// SetClockOffset steps node p's wall clock to the host's plus d (0: back
// to the host's, as NTP would correct it), and, if p runs, waits until it
// says it follows (its log: "test clock: wall clock offset <d>"). A node
// started later starts with the offset. The cluster must have been made
// with ProcOptions.ClockJump.
func (c *ProcCluster) SetClockOffset(p *Proc, d time.Duration) error {
	if !c.clockJump {
		return fmt.Errorf("set the clock of %s: the cluster does not run the clock-jump build (ProcOptions.ClockJump)", p.Name)
	}
	path := c.clockFile(p)
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == d.String() {
		return nil // already so: the node logs no change
	} else if err != nil && d == 0 {
		return nil // no file: no offset
	}
	p.mu.Lock()
	cmd, log := p.cmd, p.log
	p.mu.Unlock()
	var before int64
	if fi, err := os.Stat(log); err == nil {
		before = fi.Size()
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(d.String()+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	want := "test clock: wall clock offset " + d.String() + "\n"
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		p.mu.Lock()
		same := p.cmd == cmd && cmd != nil
		p.mu.Unlock()
		if !same || !p.Running() {
			return nil // not running: a new process reads the file at its start
		}
		if b, err := os.ReadFile(log); err == nil && int64(len(b)) >= before && bytes.Contains(b[before:], []byte(want)) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not log %q within 30 s of the offset written to %s", p.Name, strings.TrimSpace(want), path)
		}
	}
}
