package manager

import (
	"context"
	"fmt"
	"time"

	"github.com/cube-orch/cube/api"
)

// This file holds what keeps a reader of GET /events from waiting on a
// manager that cannot serve it: one out of touch with the cluster, or one
// asked for a position the cluster has not reached (issue 16). A broken
// connection already moved a reader on; these two were quiet forever.

// contactNow re-reads how long this manager has been out of touch with a
// raft leader (cluster.Raft.LeaderContact) and returns the context its
// event streams follow: cancelled, with the reason as its cause, once that
// is longer than EventsLeaderTimeout; a fresh one once contact is back.
// Changes calls it for every new stream, so a stream never opens on a
// stale answer, and the watch (startContactWatch) calls it periodically,
// which ends the open streams.
//
// A follower cut off by a partition, or whose raft stalled, applies no
// new entry: its streams would stay open, with nothing to say (and, with
// heartbeats, saying all is well), while the cluster goes on. Ended with
// a reason, their readers resume after the last change they read on a
// manager that follows the cluster. A leader needs no check of its own:
// raft steps it down once it has not heard from a quorum for
// LeaderLeaseTimeout, and it counts from then.
func (m *Manager) contactNow() context.Context {
	ago := m.raft.LeaderContact()
	bound := m.cfg.EventsLeaderTimeout
	m.contactMu.Lock()
	defer m.contactMu.Unlock()
	out := ago > bound
	switch {
	case out && m.contact.Err() == nil:
		m.contactCancel(fmt.Errorf("%w: this manager (%s) has not heard from a raft leader for %s (more than %s): it may be cut off from the other managers and would not learn of new changes; resume after the last change read (?after=) on another manager",
			api.ErrUnavailable, m.cfg.ID, ago.Round(time.Millisecond), bound))
		m.log.Warn("out of touch with a raft leader: ending the event streams, so that their readers resume on another manager",
			"for", ago.Round(time.Millisecond), "bound", bound, "streams", m.streams.Load())
	case !out && m.contact.Err() != nil:
		m.contact, m.contactCancel = context.WithCancelCause(context.Background())
		m.log.Info("in touch with a raft leader again: serving event streams")
	}
	return m.contact
}

// startContactWatch runs contactNow every quarter EventsLeaderTimeout until
// Shutdown, so that streams end at most 1.25 times it after the last
// contact with a leader.
func (m *Manager) startContactWatch() {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(max(m.cfg.EventsLeaderTimeout/4, time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-m.ctx.Done():
				return
			case <-t.C:
				m.contactNow()
			}
		}
	}()
}

// checkReached refuses a position no change has yet: one in an entry past
// the end of the cluster's log (a typo: cube events --after 99999999), on
// which a stream would wait forever. A position in an entry this manager
// has not applied is the normal case of a reader coming from a manager
// ahead of this one: it is accepted, and the stream waits for this manager
// to catch up, when the entry is in this manager's log or the leader's.
//
// The leader's log, not its commit index: a committed entry is in the log
// of every later leader (raft's Leader Completeness), but a new leader's
// commit index lags until it commits an entry of its own term, so a
// position another manager served could be past it for a moment. The
// answer of a manager that does not lead, or leads in an older term than
// this one knows, proves nothing: its log may lack what a newer leader
// committed. Then, as with no leader known, the request is refused as
// unavailable (503), and the client tries another manager.
func (m *Manager) checkReached(ctx context.Context, p api.Position) error {
	last := m.raft.LastIndex()
	if p.Index <= last {
		return nil // in this manager's log: committed, or soon replaced
	}
	if m.raft.IsLeader() {
		return beyondLog(p, last, m.cfg.ID)
	}
	unsure := func(why string) error {
		return fmt.Errorf("%w: this manager's log ends at index %d, before position %s, and %s, so it cannot tell whether the cluster has reached that position; retry, or ask another manager", api.ErrUnavailable, last, p, why)
	}
	addr, _ := m.Leader()
	if addr == "" || m.leaderStatus == nil {
		return unsure("it knows no leader to ask")
	}
	term := m.raft.Term()
	st, err := m.leaderStatus(ctx, addr)
	switch {
	case err != nil:
		return unsure(fmt.Sprintf("the leader at %s did not answer: %v", addr, err))
	case st.State != "leader" || st.Term < term:
		return unsure(fmt.Sprintf("the manager at %s, %s in term %d, no longer leads (this manager knows term %d)", addr, st.State, st.Term, term))
	case p.Index <= st.LastIndex:
		return nil
	}
	return beyondLog(p, st.LastIndex, st.ID)
}

// beyondLog is the error of a position past the cluster's last index: the
// end of the log of the leader named.
func beyondLog(p api.Position, last uint64, leader string) error {
	return &api.ValidationError{Msg: fmt.Sprintf("position %s is beyond the cluster's last index %d (the end of the leader %s's log): no change has that position yet; resume after a position a stream gave (INDEX or INDEX.SEQ, as cube events prints it), or give none to start with the next change", p, last, leader)}
}
