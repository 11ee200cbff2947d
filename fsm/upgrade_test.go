package fsm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
	"github.com/hashicorp/raft"
)

// upgradeLog is a log whose entry 4 is a delete-token (type 12): what a
// manager that knows types up to 11 meets after a newer leader wrote it.
func upgradeLog(task api.Task) (entries [][]byte) {
	tok := uuid.New()
	hash := strings.Repeat("ab", 32)
	cmds := []any{
		worker("w1"),
		CreateToken{AccessorID: tok, Name: "ci", Role: api.RoleSubmit, Hash: hash, CreateTime: t0},
		SubmitTask{Task: task, Time: t0},
		DeleteToken{AccessorID: tok},
		AssignTask{ID: task.ID, Worker: "w1", Generation: 1, Time: t0},
		ReportTask{Task: api.Task{ID: task.ID, Worker: "w1", Generation: 1, State: api.Running, ContainerID: "c1", StartTime: t0}},
	}
	for _, c := range cmds {
		data, err := Encode(c)
		if err != nil {
			panic(err)
		}
		entries = append(entries, data)
	}
	return entries
}

func replay(f *FSM, entries [][]byte) []*Result {
	out := make([]*Result, len(entries))
	for i, data := range entries {
		out[i], _ = f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: data}).(*Result)
	}
	return out
}

// A manager one version behind meets a command it does not know: the FSM
// stalls at that entry (no panic, no crash loop), applies nothing after it,
// refuses snapshots, says why, and closes its event streams.
func TestFSM_UnknownCommand_Stalls(t *testing.T) {
	task := newTask()
	entries := upgradeLog(task)
	old := NewWith(Options{MaxCommand: CmdCreateToken})
	if old.MaxCommand() != 11 {
		t.Fatalf("MaxCommand() = %d, want 11", old.MaxCommand())
	}
	events := subscribe(t, old)
	defer events.Close()
	results := replay(old, entries)

	for i, r := range results[:3] {
		if r == nil || r.Err != nil {
			t.Fatalf("entry %d before the unknown one: %+v", i+1, r)
		}
	}
	for i, r := range results[3:] {
		var se *StallError
		if r == nil || !errors.As(r.Err, &se) || se.Index != 4 || se.Type != CmdDeleteToken || se.Max != 11 {
			t.Fatalf("entry %d after the stall: %+v, want the stall at 4", i+4, r)
		}
	}
	if got := old.AppliedIndex(); got != 3 {
		t.Fatalf("applied index %d, want 3 (the entry before the unknown one)", got)
	}
	err := old.Stalled()
	if !errors.Is(err, ErrStalled) {
		t.Fatalf("Stalled() = %v, want ErrStalled", err)
	}
	for _, want := range []string{"index 4", "command type 12", "up to 11", "upgrade this manager"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("stall error %q does not say %q", err, want)
		}
	}
	// Frozen before entry 4: the token is still there, the task not placed.
	if _, ok := old.TokenByHash(strings.Repeat("ab", 32)); !ok {
		t.Fatal("the token deleted at entry 4 is gone from the stalled state")
	}
	if got, _ := old.Task(task.ID); got.State != api.Pending || got.Worker != "" {
		t.Fatalf("task after the stall: %s on %q, want Pending, unplaced", got.State, got.Worker)
	}
	if _, err := old.Snapshot(); !errors.Is(err, ErrStalled) {
		t.Fatalf("Snapshot of a stalled FSM: %v, want ErrStalled", err)
	}
	// The subscription gets the submission, then is told of the stall.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := events.Next(ctx); err != nil || c.Task.ID != task.ID || c.Task.State != api.Pending {
		t.Fatalf("first change: %+v, %v; want the submission", c, err)
	}
	if c, err := events.Next(ctx); err == nil {
		t.Fatalf("the stream went on after the stall: %+v", c)
	} else if !errors.Is(err, ErrStalled) {
		t.Fatalf("the stream ended with %v, want ErrStalled", err)
	}
}

// After the upgrade, a restart replays the whole log (the stalled FSM took
// no snapshot past the unknown entry) and reaches the state of a manager
// that always knew the command.
func TestFSM_UpgradeReplaysTheLog(t *testing.T) {
	task := newTask()
	entries := upgradeLog(task)
	old := NewWith(Options{MaxCommand: CmdCreateToken})
	replay(old, entries)

	upgraded := New()
	for i, r := range replay(upgraded, entries) {
		if r == nil || r.Err != nil {
			t.Fatalf("replay after upgrade, entry %d: %+v", i+1, r)
		}
	}
	if err := upgraded.Stalled(); err != nil {
		t.Fatalf("upgraded FSM stalled: %v", err)
	}
	always := New()
	replay(always, entries)
	if a, b := state(t, upgraded), state(t, always); !bytes.Equal(a, b) {
		t.Fatalf("upgraded state differs from the current one:\n%s\n%s", a, b)
	}
	if _, ok := upgraded.TokenByHash(strings.Repeat("ab", 32)); ok {
		t.Fatal("token still there after replaying its deletion")
	}
	if got, _ := upgraded.Task(task.ID); got.State != api.Running {
		t.Fatalf("task after replay: %s, want Running", got.State)
	}
}

// A restored snapshot is a whole state, the unknown entry included: it ends
// the stall, and entries after it apply again.
func TestFSM_Restore_EndsStall(t *testing.T) {
	task := newTask()
	entries := upgradeLog(task)
	current := New()
	replay(current, entries[:4])
	snap, err := current.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}

	old := NewWith(Options{MaxCommand: CmdCreateToken})
	replay(old, entries[:4])
	if old.Stalled() == nil {
		t.Fatal("not stalled")
	}
	if err := old.Restore(io.NopCloser(&sink.Buffer)); err != nil {
		t.Fatal(err)
	}
	if err := old.Stalled(); err != nil {
		t.Fatalf("still stalled after Restore: %v", err)
	}
	for i, data := range entries[4:] {
		res := old.Apply(&raft.Log{Index: uint64(i + 5), Type: raft.LogCommand, Data: data}).(*Result)
		if res.Err != nil {
			t.Fatalf("entry %d after Restore: %v", i+5, res.Err)
		}
	}
	if got, _ := old.Task(task.ID); got.State != api.Running {
		t.Fatalf("task: %s, want Running", got.State)
	}
}

// The build-time limit: empty means the whole table; a number lowers it;
// anything else is a broken build and says so at start-up.
func TestLimitCommands(t *testing.T) {
	var highest CmdType
	for c := range commands {
		highest = max(highest, c.Number())
	}
	for _, tc := range []struct {
		limit string
		want  CmdType
		panic bool
	}{
		{"", highest, false},
		{"11", 11, false},
		{"1", 1, false},
		{"0", 0, true},
		{"x", 0, true},
		{"-3", 0, true},
		{"200", 0, true},
		{"300", 0, true},
	} {
		got, panicked := func() (got CmdType, panicked bool) {
			defer func() { panicked = recover() != nil }()
			return limitCommands(tc.limit, commands), false
		}()
		if panicked != tc.panic || (!tc.panic && got != tc.want) {
			t.Fatalf("limitCommands(%q) = %d (panic %v), want %d (panic %v)", tc.limit, got, panicked, tc.want, tc.panic)
		}
	}
}

// A build limited to 11 behaves as one whose table ends there: it neither
// encodes nor decodes delete-token, and names it by number only.
func TestMaxCommand_LimitsTheBuild(t *testing.T) {
	saved := MaxCommand
	MaxCommand = 11
	t.Cleanup(func() { MaxCommand = saved })

	if _, err := Encode(DeleteToken{AccessorID: uuid.New()}); !errors.Is(err, ErrUnknownCommand) {
		t.Fatalf("Encode(DeleteToken) in a build up to 11: %v, want ErrUnknownCommand", err)
	}
	if _, err := Decode([]byte("\x0c{}")); !errors.Is(err, ErrUnknownCommand) {
		t.Fatalf("Decode(delete-token) in a build up to 11: %v, want ErrUnknownCommand", err)
	}
	if got := CmdDeleteToken.String(); got != "cmd(0xc)" {
		t.Fatalf("String() = %q, want cmd(0xc)", got)
	}
	if f := New(); f.MaxCommand() != 11 {
		t.Fatalf("New().MaxCommand() = %d, want 11", f.MaxCommand())
	}
	// Ignorable commands below the limit still apply.
	if _, err := Encode(PendingNote{ID: uuid.New(), Reason: "x"}); err != nil {
		t.Fatal(err)
	}
}

// The stall's message says where, what and what to do.
func TestStallError_Message(t *testing.T) {
	e := &StallError{Index: 42, Type: CmdDeleteToken, Max: 11}
	if !errors.Is(e, ErrStalled) {
		t.Fatal("StallError does not wrap ErrStalled")
	}
	want := "state machine stalled at raft log index 42: command type 12 is unknown to this manager, which applies types up to 11"
	if !strings.HasPrefix(e.Error(), want) {
		t.Fatalf("Error() = %q, want prefix %q", e.Error(), want)
	}
}
