//go:build cubeclockjump

package main

// The clock-jump test build. test/clock.go builds cube with
// `-tags cubeclockjump -overlay ...`, the overlay patching the standard
// library's time.Now so that it adds an offset (time.CubeSetWallOffset) to
// the wall clock reading and leaves the monotonic one alone: the whole
// process (raft, memberlist, crypto/tls, Cube's own code) sees its wall
// clock step, as after an NTP step, while durations, timers and deadlines
// carry on. Without the overlay this file does not compile, and a
// production build (no tag) has none of it (testclock_off.go).

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// testClockPoll is how often the offset file is read.
const testClockPoll = 50 * time.Millisecond

// startTestClock follows the file CUBE_TEST_CLOCK_FILE names, if set: its
// content is a Go duration ("-5m", "0s"), the offset of this process's wall
// clock; a missing or empty file means 0. It reads the file once before
// returning (a node started while its clock is off starts with it off),
// then every testClockPoll until stop is called. Each change is logged to
// stderr ("test clock: wall clock offset -5m0s"), which the tests wait for;
// content that is not a duration is logged once and ignored.
func startTestClock() (stop func()) {
	path := os.Getenv("CUBE_TEST_CLOCK_FILE")
	if path == "" {
		return func() {}
	}
	var cur time.Duration
	bad := ""
	read := func() {
		b, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			if bad != err.Error() {
				bad = err.Error()
				fmt.Fprintf(os.Stderr, "test clock: read %s: %v; offset stays %s\n", path, err, cur)
			}
			return
		}
		s := strings.TrimSpace(string(b))
		d := time.Duration(0)
		if s != "" {
			if d, err = time.ParseDuration(s); err != nil {
				if bad != s {
					bad = s
					fmt.Fprintf(os.Stderr, "test clock: %s: %q is not a duration (%v); offset stays %s\n", path, s, err, cur)
				}
				return
			}
		}
		bad = ""
		if d != cur {
			cur = d
			time.CubeSetWallOffset(d)
			fmt.Fprintf(os.Stderr, "test clock: wall clock offset %s\n", d)
		}
	}
	read()
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(testClockPoll)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				read()
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}
