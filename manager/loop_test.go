package manager

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A pass that cost more than restAfter is followed by a rest as long as
// the pass, during which finished ops are still taken back; a cheap pass
// is followed by none.
func TestLoop_RestsAfterACostlyPassAndStillTakesBackOps(t *testing.T) {
	h := newHarness(t, nil)
	l := h.l

	start := time.Now()
	l.rest(h.ctx, time.Millisecond)
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("rest after a 1 ms pass lasted %s, want none", d)
	}

	id := uuid.New()
	o := &op{id: id, kind: opStop, worker: "w1", gen: 1, cancel: func() {}}
	l.ops[id] = o
	l.opDone <- o
	start = time.Now()
	l.rest(h.ctx, 100*time.Millisecond)
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("rest after a 100 ms pass lasted %s, want at least 100 ms", d)
	}
	if _, ok := l.ops[id]; ok {
		t.Fatal("an op that finished during the rest was not taken back")
	}
	if got := testutil.ToFloat64(l.m.metrics.rests); got != 1 {
		t.Fatalf("cube_leader_pass_rests_total = %v, want 1", got)
	}

	start = time.Now()
	l.rest(h.ctx, time.Hour)
	if d := time.Since(start); d < maxRest {
		t.Fatalf("rest after a long pass lasted %s, want maxRest (%s)", d, maxRest)
	}
}
