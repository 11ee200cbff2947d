package manager

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/fsm"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
)

// confRaft is memRaft with a raft configuration and counted leadership
// transfers.
type confRaft struct {
	*memRaft
	mu        sync.Mutex
	servers   []cluster.Server
	transfers int
}

func (r *confRaft) Servers(context.Context) ([]cluster.Server, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]cluster.Server(nil), r.servers...), nil
}

func (r *confRaft) LeadershipTransfer() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.transfers++
	return nil
}

// managerMember is a manager's gossip entry advertising max (0: nothing).
func managerMember(id string, max uint8, state cluster.MemberState) cluster.Member {
	return cluster.Member{Name: id, State: state, Meta: cluster.Meta{Role: cluster.RoleManager, API: id + ":api", RaftID: id, RaftAddr: id + ":raft", MaxCommand: max}}
}

// upgradeManager is m1, leading, with an FSM that applies types up to own
// (0: the build's), the voters m1–m3 and the given gossip view.
func upgradeManager(t *testing.T, own fsm.CmdType, members ...cluster.Member) (*Manager, *confRaft, *memGossip) {
	t.Helper()
	cfg := FastConfig()
	cfg.ID, cfg.API = "m1", "m1:api"
	cfg.Logger = testkit.LoggerAt(t, "m1", hclog.Debug)
	f := fsm.NewWith(fsm.Options{MaxCommand: own})
	r := &confRaft{memRaft: &memRaft{f: f, leader: true, leaderCh: make(chan bool, 8)}}
	r.servers = []cluster.Server{{ID: "m1", Voter: true, Leader: true}, {ID: "m2", Voter: true}, {ID: "m3", Voter: true}}
	g := &memGossip{members: members}
	return newManager(cfg, r, f, g, nil, nil), r, g
}

func (g *memGossip) set(members ...cluster.Member) {
	g.mu.Lock()
	g.members = members
	g.mu.Unlock()
}

// A voter one version behind: the leader refuses the command it would not
// know with a 409 naming it, writes nothing, and proposes it once that
// voter advertises the new version. Commands it knows go through.
func TestManager_CommandGate_VoterBehind(t *testing.T) {
	cur := uint8(fsm.MaxCommand)
	m, r, g := upgradeManager(t, 0,
		managerMember("m1", cur, cluster.StateAlive), managerMember("m2", cur, cluster.StateAlive), managerMember("m3", 11, cluster.StateAlive))
	ctx := context.Background()

	tok, err := m.CreateToken(ctx, api.TokenRequest{Name: "ci", Role: api.RoleSubmit})
	if err != nil {
		t.Fatalf("create-token (11) with a voter at 11: %v", err)
	}
	before := len(r.applied)
	err = m.DeleteToken(ctx, tok.AccessorID)
	if !errors.Is(err, api.ErrConflict) || api.StatusOf(err) != 409 {
		t.Fatalf("delete-token (12) with m3 at 11: %v, want a 409", err)
	}
	for _, want := range []string{"delete-token", "type 12", "upgrade m3 (applies types up to 11)"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("refusal %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "m2") {
		t.Fatalf("refusal %q names m2, which is up to date", err)
	}
	if len(r.applied) != before || len(m.fsm.Tokens()) != 1 {
		t.Fatalf("the refused deletion changed something: %d commands applied, %d tokens", len(r.applied)-before, len(m.fsm.Tokens()))
	}

	// m3 upgraded (same ID, new metadata): once the leader's reading of
	// gossip is fresh, the command goes through.
	g.set(managerMember("m1", cur, cluster.StateAlive), managerMember("m2", cur, cluster.StateAlive), managerMember("m3", cur, cluster.StateAlive))
	testkit.WaitFor(t, 5*time.Second, "delete-token to be accepted after m3's upgrade", func() bool {
		return m.DeleteToken(ctx, tok.AccessorID) == nil
	})
	if n := len(m.fsm.Tokens()); n != 0 {
		t.Fatalf("%d tokens after the deletion", n)
	}
}

// Who counts: a voter that is down keeps its last advertisement (it replays
// the log when back); a manager that advertises nothing runs a build from
// before the advertisement (types up to 13); a non-voter known to gossip
// counts; gossip's managers that are not in the configuration do not.
func TestManager_CommandGate_WhoCounts(t *testing.T) {
	cur := uint8(fsm.MaxCommand)
	for _, tc := range []struct {
		name    string
		members []cluster.Member
		servers []cluster.Server
		refused string // "" when delete-token is accepted
	}{
		{"dead voter behind", []cluster.Member{managerMember("m2", cur, cluster.StateAlive), managerMember("m3", 11, cluster.StateDead)}, nil, "m3"},
		{"unadvertised voter", []cluster.Member{managerMember("m2", cur, cluster.StateAlive), managerMember("m3", 0, cluster.StateAlive)}, nil, ""},
		{"voter never seen", []cluster.Member{managerMember("m2", cur, cluster.StateAlive)}, nil, ""},
		{"non-voter behind", []cluster.Member{managerMember("m2", cur, cluster.StateAlive), managerMember("m3", cur, cluster.StateAlive), managerMember("m4", 11, cluster.StateAlive)},
			[]cluster.Server{{ID: "m1", Voter: true}, {ID: "m2", Voter: true}, {ID: "m3", Voter: true}, {ID: "m4"}}, "m4"},
		{"removed manager behind", []cluster.Member{managerMember("m2", cur, cluster.StateAlive), managerMember("m3", cur, cluster.StateAlive), managerMember("m9", 11, cluster.StateLeft)}, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, r, _ := upgradeManager(t, 0, tc.members...)
			if tc.servers != nil {
				r.servers = tc.servers
			}
			err := m.DeleteToken(context.Background(), uuid.New())
			switch {
			case tc.refused == "" && err != nil:
				t.Fatalf("delete-token refused: %v", err)
			case tc.refused != "" && (!errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "upgrade "+tc.refused)):
				t.Fatalf("delete-token: %v, want a 409 naming %s", err, tc.refused)
			}
		})
	}
}

// A leader one version behind cannot propose what it does not know: the
// same 409, naming itself, not a failure to encode.
func TestManager_CommandGate_LeaderBehind(t *testing.T) {
	m, r, _ := upgradeManager(t, fsm.CmdCreateToken, managerMember("m2", uint8(fsm.MaxCommand), cluster.StateAlive))
	err := m.DeleteToken(context.Background(), uuid.New())
	if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "this manager m1, which applies types up to 11") {
		t.Fatalf("delete-token on a leader at 11: %v, want a 409 naming m1", err)
	}
	if len(r.applied) != 0 {
		t.Fatalf("applied %v", r.applied)
	}
	// Ignorable and known commands pass.
	if err := m.checkCommand(context.Background(), fsm.CmdPendingNote); err != nil {
		t.Fatal(err)
	}
	if err := m.checkCommand(context.Background(), fsm.CmdCreateToken); err != nil {
		t.Fatal(err)
	}
}

// stall makes f meet a delete-token it does not know (f applies up to 11).
func stall(t *testing.T, f *fsm.FSM, index uint64) {
	t.Helper()
	data := append([]byte{byte(fsm.CmdDeleteToken)}, []byte(`{"AccessorID":"`+uuid.NewString()+`"}`)...)
	f.Apply(&hraft.Log{Index: index, Type: hraft.LogCommand, Data: data})
	if f.Stalled() == nil {
		t.Fatal("the FSM did not stall")
	}
}

// A stalled manager proposes nothing, is not reported caught up to a
// promoting leader, hands leadership over, and its loop stops if it stalls
// while leading.
func TestManager_Stalled(t *testing.T) {
	m, r, _ := upgradeManager(t, fsm.CmdCreateToken)
	ctx := context.Background()
	loopCtx, stopWatch := m.watchStall(ctx)
	defer stopWatch()
	if m.handOverIfStalled(ctx) {
		t.Fatal("handed over while not stalled")
	}

	stall(t, m.fsm, 1)
	if _, _, err := m.SubmitTask(ctx, api.TaskEvent{Task: api.Task{Name: "a", Image: "cube-echo:latest"}}); !errors.Is(err, api.ErrUnavailable) || !errors.Is(err, fsm.ErrStalled) {
		t.Fatalf("submit on a stalled manager: %v, want ErrUnavailable with the stall", err)
	}
	if len(r.applied) != 0 {
		t.Fatalf("a stalled manager proposed %v", r.applied)
	}
	if _, err := m.ServerStatus(ctx); !errors.Is(err, fsm.ErrStalled) || api.StatusOf(err) != 503 {
		t.Fatalf("ServerStatus of a stalled manager: %v, want a 503 with the stall", err)
	}
	select {
	case <-loopCtx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the control loop's context did not end when the FSM stalled")
	}
	if !m.handOverIfStalled(ctx) {
		t.Fatal("a stalled leader did not hand over")
	}
	r.mu.Lock()
	n := r.transfers
	r.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d leadership transfers, want 1", n)
	}
	if err := m.Stalled(); !errors.Is(err, fsm.ErrStalled) {
		t.Fatalf("Stalled() = %v", err)
	}
	if err := m.Ready(ctx); !errors.Is(err, fsm.ErrStalled) {
		t.Fatalf("Ready() of a stalled manager = %v, want not ready with the stall", err)
	}
}

// ServerStatus advertises what this manager applies.
func TestManager_ServerStatus_MaxCommand(t *testing.T) {
	m, _, _ := upgradeManager(t, fsm.CmdCreateToken)
	st, err := m.ServerStatus(context.Background())
	if err != nil || st.MaxCommand != 11 {
		t.Fatalf("ServerStatus = %+v, %v; want MaxCommand 11", st, err)
	}
}

// The bootstrap token (type 13) refused while a voter is behind is stored
// once that voter is upgraded, by the same leader: it keeps trying.
func TestManager_BootstrapTokenAfterUpgrade(t *testing.T) {
	cur := uint8(fsm.MaxCommand)
	m, _, g := upgradeManager(t, 0,
		managerMember("m1", cur, cluster.StateAlive), managerMember("m2", cur, cluster.StateAlive), managerMember("m3", 11, cluster.StateAlive))
	m.cfg.BootstrapTokenHash = strings.Repeat("ab", 32)
	m.cfg.RetryMax = 20 * time.Millisecond
	ctx := context.Background()
	if m.bootstrapToken(ctx) {
		t.Fatal("bootstrap token stored with m3 at 11")
	}
	stop := m.keepBootstrapping(ctx)
	defer stop()
	time.Sleep(100 * time.Millisecond) // several retries, all refused
	if m.fsm.TokensBootstrapped() {
		t.Fatal("bootstrap token stored while m3 is behind")
	}
	g.set(managerMember("m1", cur, cluster.StateAlive), managerMember("m2", cur, cluster.StateAlive), managerMember("m3", cur, cluster.StateAlive))
	testkit.WaitFor(t, 10*time.Second, "the bootstrap token after m3's upgrade", m.fsm.TokensBootstrapped)
}

// A batch of reports is one report-tasks entry once every voter knows the
// command, and one report-task entry each while one does not (a rolling
// upgrade): either way every report applies, and the stale one is
// dropped without error.
func TestManager_ReportTasks_OneEntryOrOneEach(t *testing.T) {
	cur := uint8(fsm.MaxCommand)
	for _, tc := range []struct {
		name string
		m3   uint8
		want []string // the commands the batch wrote
	}{
		{name: "every voter knows it", m3: cur, want: []string{"report-tasks"}},
		{name: "m3 one version behind", m3: uint8(fsm.CmdSetHealth.Number()), want: []string{"report-task", "report-task", "report-task"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, r, _ := upgradeManager(t, 0,
				managerMember("m1", cur, cluster.StateAlive), managerMember("m2", cur, cluster.StateAlive), managerMember("m3", tc.m3, cluster.StateAlive))
			m.fsm.ApplyCommand(fsm.UpsertWorker{Node: api.Node{Name: "w1", API: "w1:api", State: api.NodeAlive, RuntimeAvailable: true}})
			var ts []api.Task
			for i := range 2 {
				id := uuid.New()
				m.fsm.ApplyCommand(fsm.SubmitTask{Task: api.Task{ID: id, Name: fmt.Sprint("t", i), Image: "cube-echo:latest"}, Time: time.Now()})
				m.fsm.ApplyCommand(fsm.AssignTask{ID: id, Worker: "w1", Generation: 1, Time: time.Now()})
				ts = append(ts, api.Task{ID: id, Worker: "w1", Generation: 1, State: api.Running, ContainerID: "c", StartTime: time.Now()})
			}
			ts = append(ts, api.Task{ID: ts[0].ID, Worker: "w1", Generation: 7, State: api.Failed}) // stale
			before := len(r.applied)
			if err := m.ReportTasks(context.Background(), ts); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, cmd := range r.applied[before:] {
				typ, _ := fsm.TypeOf(cmd)
				got = append(got, typ.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("the batch wrote %v, want %v", got, tc.want)
			}
			for _, task := range ts[:2] {
				if cur, _ := m.fsm.Task(task.ID); cur.State != api.Running {
					t.Fatalf("task %s is %s after the batch, want Running", task.ID, cur.State)
				}
			}
		})
	}
}

// A pass's assignments are one assign-tasks entry once every voter knows
// the command, one assign-task entry each while one does not; either way
// each gets its own result, and a refused one does not stop the others.
func TestLoop_Assign_OneEntryOrOneEach(t *testing.T) {
	cur := uint8(fsm.MaxCommand)
	for _, tc := range []struct {
		name string
		m3   uint8
		want []string
	}{
		{name: "every voter knows it", m3: cur, want: []string{"assign-tasks"}},
		{name: "m3 one version behind", m3: uint8(fsm.CmdReportTasks), want: []string{"assign-task", "assign-task", "assign-task"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, r, _ := upgradeManager(t, 0,
				managerMember("m1", cur, cluster.StateAlive), managerMember("m2", cur, cluster.StateAlive), managerMember("m3", tc.m3, cluster.StateAlive))
			m.fsm.ApplyCommand(fsm.UpsertWorker{Node: api.Node{Name: "w1", API: "w1:api", State: api.NodeAlive, RuntimeAvailable: true}})
			var cmds []any
			for i := range 3 {
				id := uuid.New()
				if i != 1 { // the second names a task that does not exist
					m.fsm.ApplyCommand(fsm.SubmitTask{Task: api.Task{ID: id, Name: fmt.Sprint("t", i), Image: "cube-echo:latest"}, Time: time.Now()})
				}
				cmds = append(cmds, fsm.AssignTask{ID: id, Worker: "w1", Generation: 1, Time: time.Now()})
			}
			before := len(r.applied)
			res, errs := newLoop(m).assign(context.Background(), cmds)
			var got []string
			for _, cmd := range r.applied[before:] {
				typ, _ := fsm.TypeOf(cmd)
				got = append(got, typ.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("the pass wrote %v, want %v", got, tc.want)
			}
			for i := range cmds {
				switch {
				case i == 1 && !errors.Is(errs[i], api.ErrNotFound):
					t.Fatalf("assignment of an unknown task: %v; want not found", errs[i])
				case i != 1 && (errs[i] != nil || res[i].Task.State != api.Scheduled || res[i].Task.Worker != "w1"):
					t.Fatalf("assignment %d: %+v, %v; want Scheduled on w1", i, res[i], errs[i])
				}
			}
		})
	}
}
