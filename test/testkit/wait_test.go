package testkit

import (
	"fmt"
	"testing"
	"time"
)

func TestEventually_ReturnsOnceCondHolds(t *testing.T) {
	f := newFakeTB(t)
	calls := 0
	took := Eventually(f, 10*time.Second, func() error {
		calls++
		if calls < 3 {
			return fmt.Errorf("call %d", calls)
		}
		return nil
	})
	if _, _, _, failed := f.report(); failed || calls != 3 {
		t.Errorf("failed %v after %d calls; want success on the third", failed, calls)
	}
	if took > time.Second {
		t.Errorf("took %s for three quick calls", took)
	}
}

func TestEventually_FailsWithTheLastErrorAfterTheDeadline(t *testing.T) {
	f := newFakeTB(t)
	const within = 100 * time.Millisecond
	calls := 0
	start := time.Now()
	returned := f.run(func() {
		Eventually(f, within, func() error {
			calls++
			return fmt.Errorf("call %d", calls)
		})
	})
	elapsed := time.Since(start)
	_, _, msg, failed := f.report()
	if !failed || returned {
		t.Fatalf("failed %v, returned %v; want a Fatal", failed, returned)
	}
	if want := fmt.Sprintf("after %s: call %d", within, calls); msg != want {
		t.Errorf("message %q; want %q", msg, want)
	}
	if elapsed < within {
		t.Errorf("gave up after %s; want no earlier than %s", elapsed, within)
	}
	if calls < 5 {
		t.Errorf("cond called %d times in %s; want it polled", calls, within)
	}
}

// cond may give up with a Fatal of its own, long before the deadline.
func TestEventually_CondMayGiveUpEarly(t *testing.T) {
	f := newFakeTB(t)
	start := time.Now()
	f.run(func() {
		Eventually(f, time.Hour, func() error {
			f.Fatalf("the process exited")
			return nil
		})
	})
	if _, _, msg, _ := f.report(); msg != "the process exited" {
		t.Errorf("message %q; want cond's own", msg)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("returned after %s", d)
	}
}

func TestWaitFor_ReturnsHowLongItWaited(t *testing.T) {
	f := newFakeTB(t)
	const after = 100 * time.Millisecond
	start := time.Now()
	took := WaitFor(f, 10*time.Second, "the time to pass", func() bool { return time.Since(start) >= after })
	if _, _, _, failed := f.report(); failed {
		t.Fatal("failed")
	}
	if took < after || took > after+time.Second {
		t.Errorf("took %s; want a little over %s", took, after)
	}
}

func TestWaitFor_FailsAfterTheDeadline(t *testing.T) {
	f := newFakeTB(t)
	const within = 50 * time.Millisecond
	start := time.Now()
	returned := f.run(func() { WaitFor(f, within, "the impossible", func() bool { return false }) })
	_, _, msg, failed := f.report()
	if !failed || returned {
		t.Fatalf("failed %v, returned %v; want a Fatal", failed, returned)
	}
	if want := "timed out after 50ms waiting for the impossible"; msg != want {
		t.Errorf("message %q; want %q", msg, want)
	}
	if d := time.Since(start); d < within {
		t.Errorf("gave up after %s; want no earlier than %s", d, within)
	}
}
