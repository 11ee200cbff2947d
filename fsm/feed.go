package fsm

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/cube-orch/cube/api"
)

// DefaultFeedSize is how many task changes the feed keeps: a subscriber may
// fall that many changes behind before it is dropped, and a client may
// resume (GET /events?after=) from any of them, on any manager. About
// 0.5 KiB each, about 2 MiB in all, held once for all subscribers.
const DefaultFeedSize = 4096

// ErrFellBehind is returned by Subscription.Next when the subscriber fell
// further behind than the feed keeps: changes it has not read are gone, so
// it must re-read the state and subscribe again.
var ErrFellBehind = errors.New("fell behind the change feed")

// feed is the bounded queue between Apply and the subscribers of task
// changes: one ring of the last changes, shared by every subscriber, each
// of which keeps only its position. Apply appends in O(1) per change under
// the feed's own lock and never waits; fan-out happens on the subscribers'
// goroutines, each copying the next change out of the ring. A subscriber
// costs a cursor, not a buffer of its own.
//
// The ring is kept whether or not anyone subscribes, because every manager
// applies every committed entry: a client whose manager died resumes on
// another after the last change it saw (its api.Position, the same on every
// manager), and the feed either holds every change since or says so
// (subscribeAfter's *api.GapError). What it can vouch for is bounded below
// by floor.
type feed struct {
	mu   sync.Mutex
	ring []api.Change // grows to size, then wraps
	size int
	// next is the feed's own number of the next change published; the
	// ring holds numbers max(0, next-len(ring)) to next-1 (ring[n%size]).
	next uint64
	// start is the number of the first change published since the last
	// Restore: a subscription from a position reads no change of a state
	// that was replaced.
	start uint64
	// floor: the feed holds every change after it that this FSM applied
	// since start (or has let subscribers read it before evicting it). A
	// change at or before it is unknown here: evicted from the ring, or
	// folded into a snapshot this FSM restored.
	floor api.Position
	// why says why the floor is where it is, for GapError.
	why string
	// pending: a Restore at an index nobody noted (restoringAt); the
	// floor is set by the next entry applied, and until then the feed
	// cannot say which changes it holds.
	pending bool
	// noted is the highest snapshot index noted since the last Restore.
	noted uint64
	// wake is closed (and replaced) by publish when a subscriber waits.
	wake    chan struct{}
	waiting bool
	// epoch counts cuts; cuts[e] ends epoch e: a subscription of that
	// epoch reads the changes before cuts[e].at, then gets cuts[e].err.
	epoch uint64
	cuts  map[uint64]cutMark
}

// cutMark is where a cut ended an epoch, and what its subscribers are told.
type cutMark struct {
	at  uint64
	err error
}

func newFeed(size int) *feed {
	if size < 1 {
		size = 1
	}
	return &feed{size: size, wake: make(chan struct{})}
}

// publish records that the log entry at index was applied and appends the
// changes it made, numbered from 0 in the order given (which Apply makes
// the same on every manager). It never blocks; it is called for every
// command entry, with no task for those that changed none, so that a feed
// waiting to learn where a restored snapshot ended (pending) learns it.
func (fd *feed) publish(index uint64, tasks ...api.Task) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	if fd.pending {
		// Every entry after the snapshot is applied here in order, so
		// nothing before this one is missing since the restore.
		fd.floor, fd.pending = api.Position{Index: max(index, 1) - 1, Seq: api.SeqAll}, false
		fd.why = fmt.Sprintf("it restored a snapshot of the state before index %d: a restart, catching up from the leader, or a restored backup", index)
	}
	for seq, t := range tasks {
		c := api.Change{Index: index, Seq: seq, Task: t}
		if len(fd.ring) < fd.size {
			fd.ring = append(fd.ring, c)
		} else {
			slot := fd.next % uint64(fd.size)
			if fd.next-uint64(fd.size) >= fd.start {
				// Evicting a change of the current state: the feed no
				// longer vouches for it.
				fd.floor = fd.ring[slot].Position()
				fd.why = fmt.Sprintf("it keeps the last %d changes", fd.size)
			}
			fd.ring[slot] = c
		}
		fd.next++
	}
	if len(tasks) > 0 && fd.waiting {
		fd.wakeLocked()
	}
}

func (fd *feed) wakeLocked() {
	close(fd.wake)
	fd.wake = make(chan struct{})
	fd.waiting = false
}

// newestLocked is the position of the newest change of the current state
// the feed holds, or its floor when it holds none since it was replaced.
func (fd *feed) newestLocked() api.Position {
	if fd.next > fd.start {
		return fd.ring[(fd.next-1)%uint64(fd.size)].Position()
	}
	return fd.floor
}

// errRestoring is returned by subscribe while the feed cannot say which
// changes it holds.
var errRestoring = fmt.Errorf("%w: this manager has just replaced its state with a snapshot and applied no entry since, so it cannot yet say which changes it holds; retry, or ask another manager", api.ErrUnavailable)

// subscribe returns a subscription starting at the next change, and the
// position it starts after.
func (fd *feed) subscribe() (*Subscription, api.Position, error) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	if fd.pending {
		return nil, api.Position{}, errRestoring
	}
	return &Subscription{fd: fd, pos: fd.next, epoch: fd.epoch}, fd.newestLocked(), nil
}

// subscribeAfter returns a subscription to the changes after p, or a
// *api.GapError when some of them are unknown here. When p is ahead of
// what this FSM applied (it lags the manager the client came from), the
// subscription skips changes until it passes p.
func (fd *feed) subscribeAfter(p api.Position) (*Subscription, error) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	if fd.pending {
		return nil, errRestoring
	}
	if p.Less(fd.floor) {
		oldest := fd.floor
		return nil, &api.GapError{After: p, Oldest: &oldest, Reason: fd.why}
	}
	// The changes after floor are those from lo on, in position order.
	lo := max(fd.start, fd.next-uint64(len(fd.ring)))
	n := sort.Search(int(fd.next-lo), func(i int) bool {
		return p.Less(fd.ring[(lo+uint64(i))%uint64(fd.size)].Position())
	})
	return &Subscription{fd: fd, pos: lo + uint64(n), epoch: fd.epoch, after: &p}, nil
}

// maxCuts is how many cuts the feed remembers.
const maxCuts = 16

// cut ends every current subscription with err, after the changes
// published before it: the state changed in a way the feed cannot express
// as task changes (a snapshot restored over it, or the FSM stalled), so a
// subscriber must re-read the state, resume elsewhere, or stop. New
// subscriptions start afresh. It never blocks.
func (fd *feed) cut(err error) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	fd.cutLocked(err)
}

func (fd *feed) cutLocked(err error) {
	if fd.cuts == nil {
		fd.cuts = make(map[uint64]cutMark)
	}
	fd.cuts[fd.epoch] = cutMark{at: fd.next, err: err}
	delete(fd.cuts, fd.epoch-maxCuts) // a subscription that old has fallen behind anyway
	fd.epoch++
	if fd.waiting {
		fd.wakeLocked()
	}
}

// restoringAt notes that a snapshot of the state at index is about to be
// restored (raft opens it just before calling Restore). Several notes
// before one Restore keep the highest: a note of a backup read meanwhile
// can only raise the floor, which makes the feed refuse positions it
// could have served, never serve a gap.
func (fd *feed) restoringAt(index uint64) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	fd.noted = max(fd.noted, index)
}

// restored cuts the feed when Restore replaced the state: the changes after
// the snapshot's index are the only ones it can vouch for from now on.
func (fd *feed) restored() {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	fd.cutLocked(ErrStateReplaced)
	fd.start = fd.next
	if fd.noted > 0 {
		fd.floor = api.Position{Index: fd.noted, Seq: api.SeqAll}
		fd.why = fmt.Sprintf("it restored a snapshot of the state at index %d: a restart, catching up from the leader, or a restored backup", fd.noted)
		fd.pending, fd.noted = false, 0
		return
	}
	fd.pending = true
}

// Subscription is one reader of the change feed. Its methods are for one
// goroutine.
type Subscription struct {
	fd     *feed
	pos    uint64
	epoch  uint64
	closed bool
	// after, if set, skips changes up to it: this FSM had not applied
	// them yet when the subscriber asked to resume after it.
	after *api.Position
}

// Next returns the next change, waiting for one until ctx ends. It returns
// ErrFellBehind once the subscriber has missed changes, the cut's error
// once the state was replaced (ErrStateReplaced) or the FSM stalled, and
// ctx's error when ctx ends.
func (s *Subscription) Next(ctx context.Context) (api.Change, error) {
	fd := s.fd
	for {
		fd.mu.Lock()
		if s.closed {
			fd.mu.Unlock()
			return api.Change{}, errors.New("subscription closed")
		}
		if s.epoch != fd.epoch {
			mark, ok := fd.cuts[s.epoch]
			if !ok || s.pos >= mark.at {
				err := mark.err
				if !ok {
					err = fmt.Errorf("%w: the state was replaced more than %d times since it subscribed", ErrFellBehind, maxCuts)
				}
				fd.mu.Unlock()
				return api.Change{}, err
			}
		}
		oldest := fd.next - uint64(len(fd.ring))
		if s.pos < oldest && s.after != nil && s.epoch == fd.epoch && !s.after.Less(fd.floor) {
			// Only changes the subscriber had were evicted unread (this
			// FSM replays its log faster than it is read): not a gap.
			s.pos = oldest
		}
		switch {
		case s.pos < oldest:
			missed := oldest - s.pos
			fd.mu.Unlock()
			return api.Change{}, fmt.Errorf("%w: %d changes were not read in time (the feed keeps %d)", ErrFellBehind, missed, fd.size)
		case s.pos < fd.next:
			c := fd.ring[s.pos%uint64(fd.size)]
			s.pos++
			if s.after != nil {
				if !s.after.Less(c.Position()) {
					fd.mu.Unlock()
					continue // applied here only now; the subscriber had it
				}
				s.after = nil // positions only grow from here
			}
			fd.mu.Unlock()
			return c, nil
		}
		fd.waiting = true
		wake := fd.wake
		fd.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return api.Change{}, ctx.Err()
		}
	}
}

// Close ends the subscription; it is idempotent.
func (s *Subscription) Close() {
	s.fd.mu.Lock()
	defer s.fd.mu.Unlock()
	s.closed = true
}
