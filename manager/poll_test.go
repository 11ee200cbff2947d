package manager

import (
	"context"
	"testing"
	"time"
)

// A poll comes every PollInterval, later after a long one (pollSpacing times
// its length), never while one is under way, and a new leader's first one
// PollInterval after its loop starts.
func TestPollDue(t *testing.T) {
	cfg := FastConfig()
	cfg.ID, cfg.API = "m1", "m1:api"
	m := newManager(cfg, nil, nil, nil, nil, nil)
	l := newLoop(m)
	pi := cfg.PollInterval
	start := l.lastPoll
	if l.pollDue(start.Add(pi / 2)) {
		t.Fatal("a new leader polls at once; want its first poll one PollInterval in")
	}
	if !l.pollDue(start.Add(pi)) {
		t.Fatal("no poll one PollInterval after the loop started")
	}
	// A finished poll's length is what spaces the next one.
	l.polling, l.lastPoll = true, time.Now().Add(-3*pi)
	l.pollFinished(context.Background(), pollResult{})
	if l.polling || l.pollCost < 3*pi {
		t.Fatalf("after a poll of %s: polling %v, cost %s", 3*pi, l.polling, l.pollCost)
	}
	cases := []struct {
		name    string
		cost    time.Duration
		at      time.Duration // after the last poll started
		polling bool
		wantDue bool
	}{
		{"a quick poll: the next one PollInterval later", 10 * time.Millisecond, pi, false, true},
		{"a quick poll: not before PollInterval", 10 * time.Millisecond, pi - time.Millisecond, false, false},
		{"a long poll: not at PollInterval", pi, pi, false, false},
		{"a long poll: not before pollSpacing times its length", pi, pollSpacing*pi - time.Millisecond, false, false},
		{"a long poll: the next one pollSpacing times its length later", pi, pollSpacing * pi, false, true},
		{"never while one is under way", 0, 100 * pi, true, false},
	}
	for _, c := range cases {
		l.lastPoll, l.pollCost, l.polling = start, c.cost, c.polling
		if got := l.pollDue(start.Add(c.at)); got != c.wantDue {
			t.Errorf("%s: due %v at %s after a poll of %s, want %v", c.name, got, c.at, c.cost, c.wantDue)
		}
	}
}
