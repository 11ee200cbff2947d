package manager

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/fsm"
)

// unadvertisedMax is the command types a manager is taken to know when its
// gossip metadata carries no MaxCommand: it runs a build from before the
// advertisement, whose table ended at bootstrap-token (13). Append-only:
// it never changes, whatever commands come later.
const unadvertisedMax = fsm.CmdBootstrapToken

// versionsTTL bounds how long the leader reuses its reading of the
// managers' advertised versions: every command is checked, and reading
// gossip's whole table for each would cost the leader loop more than the
// check is worth. It is below gossip's own propagation of a metadata change
// (about 0.1 s), so it adds nothing to how stale the view can be.
const versionsTTL = 100 * time.Millisecond

// versions caches each manager's advertised MaxCommand by raft ID.
type versions struct {
	mu   sync.Mutex
	at   time.Time
	byID map[string]fsm.CmdType
}

// advertised returns each manager's advertised MaxCommand by raft ID, read
// from gossip at most every versionsTTL. Dead and left managers keep their
// last advertisement: a voter that is down still replays the log when it
// comes back.
func (m *Manager) advertised() map[string]fsm.CmdType {
	m.versions.mu.Lock()
	defer m.versions.mu.Unlock()
	if m.versions.byID != nil && time.Since(m.versions.at) < versionsTTL {
		return m.versions.byID
	}
	byID := make(map[string]fsm.CmdType)
	for _, mem := range m.gossip.Members() {
		if mem.Meta.Role != cluster.RoleManager || mem.Meta.RaftID == "" {
			continue
		}
		max := fsm.CmdType(mem.Meta.MaxCommand)
		if max == 0 {
			max = unadvertisedMax
		}
		byID[mem.Meta.RaftID] = max
	}
	// This manager's own FSM is the truth about itself.
	byID[m.cfg.ID] = m.fsm.MaxCommand()
	m.versions.byID, m.versions.at = byID, time.Now()
	return byID
}

// checkCommand refuses, with a 409 naming the managers to upgrade, a
// command that some raft voter would not know: applying it would stall
// that voter's state machine (fsm.StallError). Ignorable commands pass (an
// older manager skips them), as do commands every manager gossip knows
// about applies; only then is the raft configuration read, so the common
// case costs one map walk. A voter gossip has never seen is unknown: it
// blocks only commands newer than unadvertisedMax. Non-voters are checked
// when gossip knows them (they apply the log too), never blocked on when
// not (a server added with a wrong address would block upgrades for ever).
func (m *Manager) checkCommand(ctx context.Context, t fsm.CmdType) error {
	if t.Ignorable() {
		return nil
	}
	if own := m.fsm.MaxCommand(); t.Number() > own {
		// A build one version behind, leading: it cannot even encode it.
		return fmt.Errorf("%w: command %s (type %d) is unknown to this manager %s, which applies types up to %d: upgrade it (then the others' leader, or this one, can propose it)",
			api.ErrConflict, t, t.Number(), m.cfg.ID, own)
	}
	known := m.advertised()
	if t.Number() <= unadvertisedMax && allKnow(known, t) {
		return nil
	}
	servers, err := m.raft.Servers(ctx)
	if err != nil {
		return m.clusterError("read the raft configuration to check the managers' versions", err)
	}
	var behind []string
	for _, s := range servers {
		max, seen := known[s.ID]
		switch {
		case seen && max < t.Number():
			behind = append(behind, fmt.Sprintf("%s (applies types up to %d)", s.ID, max))
		case !seen && s.Voter && t.Number() > unadvertisedMax:
			behind = append(behind, fmt.Sprintf("%s (version unknown: not seen in gossip)", s.ID))
		}
	}
	if len(behind) == 0 {
		return nil
	}
	sort.Strings(behind)
	return fmt.Errorf("%w: command %s (type %d) is not known to every manager; upgrade %s first: a manager that met it could not apply it (rolling upgrade: until every manager runs the new version, what needs it is refused)",
		api.ErrConflict, t, t.Number(), strings.Join(behind, ", "))
}

// allKnow reports whether every manager in known applies type t.
func allKnow(known map[string]fsm.CmdType, t fsm.CmdType) bool {
	for _, max := range known {
		if max < t.Number() {
			return false
		}
	}
	return true
}

// Stalled returns nil, or why this manager's state machine stopped applying
// the log (an fsm.StallError: a command it does not know; upgrade it). The
// API answers 503 with it, and readiness fails.
func (m *Manager) Stalled() error { return m.fsm.Stalled() }

var _ api.Staller = (*Manager)(nil)

// errStalledLeader is logged when a stalled manager wins an election.
var errStalledLeader = errors.New("this manager leads but its state machine is stalled; handing leadership over")

// stallPoll is how often a leader checks whether its state machine stalled.
const stallPoll = 250 * time.Millisecond

// watchStall returns a context for the control loop that ends with ctx or
// as soon as this manager's state machine stalls (a command got past the
// check, as when a voter was downgraded after it was written), and a
// function that stops the watcher and waits for it.
func (m *Manager) watchStall(ctx context.Context) (context.Context, func()) {
	loopCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(stallPoll)
		defer t.Stop()
		for {
			select {
			case <-loopCtx.Done():
				return
			case <-t.C:
				if m.Stalled() != nil {
					cancel()
					return
				}
			}
		}
	}()
	return loopCtx, func() { cancel(); <-done }
}

// handOverIfStalled, on a leader whose state machine is stalled, logs it and
// transfers leadership to another voter, retrying every second until it
// succeeds or ctx ends; it reports whether the manager was stalled. Raft
// cannot refuse a stalled manager the election (its log is as long as the
// others'): its state is what is behind.
func (m *Manager) handOverIfStalled(ctx context.Context) bool {
	stall := m.Stalled()
	if stall == nil {
		return false
	}
	m.log.Error("not acting as leader", "id", m.cfg.ID, "reason", errStalledLeader, "error", stall)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		err := m.raft.LeadershipTransfer()
		if err == nil || errors.Is(err, cluster.ErrNotLeader) {
			return true
		}
		m.log.Warn("leadership transfer failed; retrying", "error", err)
		select {
		case <-ctx.Done():
			return true
		case <-t.C:
		}
	}
}
