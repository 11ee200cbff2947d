package fsm

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/cube-orch/cube/api"
)

// DefaultFeedSize is how many task changes the feed keeps for subscribers
// to read: a subscriber may fall that many changes behind before it is
// dropped. About 0.5 KiB each, held once for all subscribers.
const DefaultFeedSize = 4096

// ErrFellBehind is returned by Subscription.Next when the subscriber fell
// further behind than the feed keeps: changes it has not read are gone, so
// it must re-read the state and subscribe again.
var ErrFellBehind = errors.New("fell behind the change feed")

// feed is the bounded queue between Apply and the subscribers of task
// changes: one ring of the last changes, shared by every subscriber, each
// of which keeps only its position. Apply appends in O(1) under the feed's
// own lock and never waits; fan-out happens on the subscribers' goroutines,
// each copying the next change out of the ring. A subscriber costs a
// cursor, not a buffer of its own.
type feed struct {
	mu   sync.Mutex
	ring []api.Change // grows to size, then wraps
	size int
	// next is the sequence number of the next change published; the ring
	// holds numbers max(0, next-len(ring)) to next-1.
	next uint64
	// wake is closed (and replaced) by publish when a subscriber waits.
	wake    chan struct{}
	waiting bool
	subs    int
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

// publish appends a change. It never blocks. With no subscriber the change
// is not kept: a new subscriber starts at the next one anyway.
func (fd *feed) publish(c api.Change) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	if fd.subs == 0 {
		fd.ring, fd.next = nil, 0 // release the ring's memory
		return
	}
	if len(fd.ring) < fd.size {
		fd.ring = append(fd.ring, c)
	} else {
		fd.ring[fd.next%uint64(fd.size)] = c
	}
	fd.next++
	if fd.waiting {
		close(fd.wake)
		fd.wake = make(chan struct{})
		fd.waiting = false
	}
}

// subscribe returns a subscription starting at the next change.
func (fd *feed) subscribe() *Subscription {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	fd.subs++
	return &Subscription{fd: fd, pos: fd.next, epoch: fd.epoch}
}

// maxCuts is how many cuts the feed remembers.
const maxCuts = 16

// cut ends every current subscription with err, after the changes
// published before it: the state changed in a way
// the feed cannot express as task changes (a snapshot restored over it, or
// the FSM stalled), so a subscriber must re-read the state, or stop. New
// subscriptions start afresh. It never blocks.
func (fd *feed) cut(err error) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	if fd.cuts == nil {
		fd.cuts = make(map[uint64]cutMark)
	}
	fd.cuts[fd.epoch] = cutMark{at: fd.next, err: err}
	delete(fd.cuts, fd.epoch-maxCuts) // a subscription that old has fallen behind anyway
	fd.epoch++
	if fd.waiting {
		close(fd.wake)
		fd.wake = make(chan struct{})
		fd.waiting = false
	}
}

// Subscription is one reader of the change feed. Its methods are for one
// goroutine.
type Subscription struct {
	fd     *feed
	pos    uint64
	epoch  uint64
	closed bool
}

// Next returns the next change, waiting for one until ctx ends. It returns
// ErrFellBehind once the subscriber has missed changes, and ctx's error
// when ctx ends.
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
		switch {
		case s.pos < oldest:
			missed := oldest - s.pos
			fd.mu.Unlock()
			return api.Change{}, fmt.Errorf("%w: %d changes were not read in time (the feed keeps %d)", ErrFellBehind, missed, fd.size)
		case s.pos < fd.next:
			c := fd.ring[s.pos%uint64(fd.size)]
			s.pos++
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
	fd := s.fd
	fd.mu.Lock()
	defer fd.mu.Unlock()
	if !s.closed {
		s.closed = true
		fd.subs--
	}
}
