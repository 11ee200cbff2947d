package cluster

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

type fakeLeader struct {
	mu sync.Mutex
	id string
}

func (f *fakeLeader) Leader() (string, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.id, ""
}

func (f *fakeLeader) set(id string) {
	f.mu.Lock()
	f.id = id
	f.mu.Unlock()
}

type fakeMembers []Member

func (f fakeMembers) Members() []Member { return f }

// asker records every round of asking and answers from a script.
type asker struct {
	mu      sync.Mutex
	calls   [][]string
	answers []error // answer of call i; past the end: the last one
}

func (a *asker) ask(_ context.Context, addrs []string, id, raftAddr string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, slices.Clone(addrs))
	if len(a.answers) == 0 {
		return nil
	}
	return a.answers[min(len(a.calls), len(a.answers))-1]
}

func (a *asker) rounds() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.calls)
}

var joinMembers = fakeMembers{
	{Name: "manager-m1", State: StateAlive, Meta: Meta{Role: RoleManager, API: "127.0.0.1:5556", RaftID: "m1"}},
	{Name: "manager-m2", State: StateDead, Meta: Meta{Role: RoleManager, API: "127.0.0.1:5566", RaftID: "m2"}},
	{Name: "manager-m3", State: StateAlive, Meta: Meta{Role: RoleManager, API: "127.0.0.1:5576", RaftID: "m3"}},
	{Name: "manager-m4", State: StateAlive, Meta: Meta{Role: RoleManager, API: "127.0.0.1:5586", RaftID: "m4"}}, // self
	{Name: "w1", State: StateAlive, Meta: Meta{Role: RoleWorker, API: "127.0.0.1:5555"}},
}

func testJoinConfig() JoinConfig {
	c := DefaultJoinConfig()
	c.ID, c.RaftAddr, c.Interval = "m4", "127.0.0.1:6586", 5*time.Millisecond
	return c
}

func TestJoiner_Run(t *testing.T) {
	refused := errors.New("503 no leader")
	cases := []struct {
		name       string
		leader     string
		members    fakeMembers
		answers    []error
		wantRounds int
		wantErr    bool // Run ends with ctx's error (it never got in)
	}{
		{name: "already a member: asks no one", leader: "m1", members: joinMembers, wantRounds: 0},
		{name: "asks the live managers but itself, once", members: joinMembers, wantRounds: 1},
		{name: "retries until a manager accepts", members: joinMembers, answers: []error{refused, refused, nil}, wantRounds: 3},
		{name: "no manager known: keeps waiting", members: joinMembers[4:], wantRounds: 0, wantErr: true},
		{name: "every ask refused: keeps asking until cancelled", members: joinMembers, answers: []error{refused}, wantErr: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := &asker{answers: c.answers}
			j, err := NewJoiner(testJoinConfig(), &fakeLeader{id: c.leader}, c.members, a.ask)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			err = j.Run(ctx)
			if (err != nil) != c.wantErr {
				t.Fatalf("Run = %v, want error %v", err, c.wantErr)
			}
			if c.wantRounds > 0 && a.rounds() != c.wantRounds {
				t.Fatalf("asked %d times, want %d: %v", a.rounds(), c.wantRounds, a.calls)
			}
			if c.wantRounds == 0 && !c.wantErr && a.rounds() != 0 {
				t.Fatalf("asked %v, want no call", a.calls)
			}
			for _, call := range a.calls {
				if want := []string{"127.0.0.1:5556", "127.0.0.1:5576"}; !slices.Equal(call, want) {
					t.Fatalf("asked %v, want the live managers other than itself %v", call, want)
				}
			}
		})
	}
}

// A manager that hears from a leader while waiting (it was added by an
// operator, or an earlier ask went through) stops asking.
func TestJoiner_StopsWhenALeaderIsHeard(t *testing.T) {
	a := &asker{answers: []error{errors.New("refused")}}
	l := &fakeLeader{}
	j, err := NewJoiner(testJoinConfig(), l, joinMembers, a.ask)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- j.Run(context.Background()) }()
	deadline := time.Now().Add(10 * time.Second)
	for a.rounds() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	l.set("m1")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil once a leader is heard", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run still asking 10 s after a leader was heard")
	}
}

func TestJoinConfig_Validate(t *testing.T) {
	for name, mod := range map[string]func(*JoinConfig){
		"no ID":         func(c *JoinConfig) { c.ID = "" },
		"no raft addr":  func(c *JoinConfig) { c.RaftAddr = "" },
		"zero interval": func(c *JoinConfig) { c.Interval = 0 },
		"zero timeout":  func(c *JoinConfig) { c.AskTimeout = 0 },
	} {
		c := testJoinConfig()
		mod(&c)
		if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: Validate = %v, want ErrInvalidConfig", name, err)
		}
	}
	if err := testJoinConfig().Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

func TestParseGossipAddr(t *testing.T) {
	for _, c := range []struct {
		in       string
		wantIP   string
		wantPort int
		wantErr  bool
	}{
		{"127.0.0.1:6557", "127.0.0.1", 6557, false},
		{"[::1]:7946", "::1", 7946, false},
		{"localhost:6557", "", 0, true},
		{"127.0.0.1", "", 0, true},
		{"127.0.0.1:0", "", 0, true},
		{"127.0.0.1:70000", "", 0, true},
	} {
		ip, port, err := ParseGossipAddr(c.in)
		if (err != nil) != c.wantErr || ip != c.wantIP || port != c.wantPort {
			t.Errorf("ParseGossipAddr(%q) = %q, %d, %v; want %q, %d, error %v", c.in, ip, port, err, c.wantIP, c.wantPort, c.wantErr)
		}
	}
}
