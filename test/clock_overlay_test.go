package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The overlay of the clock-jump build (clock.go) on a small program: time.Now's
// wall reading moves by the offset, both ways and by fractions of a second
// (a negative nanosecond remainder), while its monotonic reading does not;
// back to 0, the wall clock is the host's again. No Docker, one small build.
func TestClockOverlay_ShiftsTheWallClockOnly(t *testing.T) {
	dir := t.TempDir()
	overlay, err := writeClockOverlay(dir)
	if err != nil {
		t.Fatal(err)
	}
	prog := filepath.Join(dir, "main.go")
	if err := os.WriteFile(prog, []byte(`package main

import (
	"fmt"
	"time"
)

func main() {
	start := time.Now()
	for _, d := range []time.Duration{-10 * time.Minute, 10*time.Minute + 300*time.Millisecond, -1500 * time.Millisecond, -time.Nanosecond, 0} {
		time.CubeSetWallOffset(d)
		now := time.Now()
		// Round(0) drops the monotonic reading: Sub then compares wall clocks.
		fmt.Println(d, now.Round(0).Sub(start.Round(0))-now.Sub(start))
	}
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "prog")
	cmd := exec.Command("go", "build", "-overlay", overlay, "-o", bin, prog)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -overlay: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 5 {
		t.Fatalf("output %q", out)
	}
	for _, l := range lines {
		var off, got time.Duration
		f := strings.Fields(l)
		if len(f) != 2 {
			t.Fatalf("line %q", l)
		}
		if off, err = time.ParseDuration(f[0]); err != nil {
			t.Fatal(err)
		}
		if got, err = time.ParseDuration(f[1]); err != nil {
			t.Fatal(err)
		}
		// The wall and monotonic readings of one Now are taken a moment
		// apart; anything near the offset is the offset.
		if d := got - off; d < -10*time.Millisecond || d > 10*time.Millisecond {
			t.Errorf("offset %s: the wall clock moved %s against the monotonic one", off, got)
		} else {
			t.Logf("offset %s: the wall clock moved %s against the monotonic one", off, got)
		}
	}
}
