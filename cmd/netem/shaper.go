package main

import (
	"container/heap"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// shaper decides the fate of each packet: dropped with probability loss, or
// else held for delay ± a uniform jitter (never less than zero).
type shaper struct {
	delay, jitter time.Duration
	loss          float64 // probability, 0..1
	rng           *rand.Rand
}

func newShaper(delay, jitter time.Duration, lossPercent float64, seed uint64) *shaper {
	return &shaper{delay: delay, jitter: jitter, loss: lossPercent / 100,
		rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// next is the fate of the next packet.
func (s *shaper) next() (drop bool, hold time.Duration) {
	if s.loss > 0 && s.rng.Float64() < s.loss {
		return true, 0
	}
	d := s.delay
	if s.jitter > 0 {
		d += time.Duration(s.rng.Int64N(2*int64(s.jitter)+1)) - s.jitter
	}
	return false, max(d, 0)
}

// verdicter sends a verdict for a queued packet.
type verdicter interface {
	verdict(id, verdict uint32) error
}

// counts are what the program reports.
type counts struct {
	received, accepted, dropped atomic.Uint64
	failed                      atomic.Uint64 // verdicts not sent or refused
	overruns                    atomic.Uint64 // ENOBUFS: the kernel accepted packets unseen (fail-open)
	late                        atomic.Uint64 // accepted over lateBy after their time
	lateMax                     atomic.Int64  // the latest, in nanoseconds
}

// lateBy is when an accept verdict counts as late: the program or the
// machine did not keep up.
const lateBy = 10 * time.Millisecond

// held is a packet waiting for its accept verdict.
type held struct {
	due time.Time
	id  uint32
}

type heldHeap []held

func (h heldHeap) Len() int           { return len(h) }
func (h heldHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h heldHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *heldHeap) Push(x any)        { *h = append(*h, x.(held)) }
func (h *heldHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// scheduler owns the packets between their arrival and their verdict. It runs
// in one goroutine (run): packet ids come in on in, in arrival order, so the
// shaper's draws, and with a fixed seed the fates, follow that order.
type scheduler struct {
	sh  *shaper
	out verdicter
	n   *counts
	now func() time.Time

	in       chan uint32   // packet ids; closed by the reader when it stops
	pass     chan struct{} // closed: accept everything now, held or new
	released chan struct{} // closed by run once the held packets are accepted
}

func newScheduler(sh *shaper, out verdicter, n *counts) *scheduler {
	return &scheduler{sh: sh, out: out, n: n, now: time.Now,
		in: make(chan uint32, 4096), pass: make(chan struct{}), released: make(chan struct{})}
}

func (s *scheduler) send(id, v uint32) {
	if err := s.out.verdict(id, v); err != nil {
		s.n.failed.Add(1)
		return
	}
	if v == nfAccept {
		s.n.accepted.Add(1)
	} else {
		s.n.dropped.Add(1)
	}
}

// run shapes until pass is closed, then accepts what it holds and whatever
// still comes in, and returns once in is closed.
func (s *scheduler) run() {
	var h heldHeap
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	pass := s.pass
	for {
		if pass == nil { // passing: nothing is held
			id, ok := <-s.in
			if !ok {
				return
			}
			s.send(id, nfAccept)
			continue
		}
		if len(h) > 0 {
			timer.Reset(h[0].due.Sub(s.now())) // (Go ≥ 1.23: no stale fire survives a Reset or Stop)
		} else {
			timer.Stop()
		}
		select {
		case id, ok := <-s.in:
			if !ok {
				s.flush(&h)
				return
			}
			drop, hold := s.sh.next()
			switch {
			case drop:
				s.send(id, nfDrop) // frees the kernel's queue entry at once
			case hold <= 0:
				s.send(id, nfAccept)
			default:
				heap.Push(&h, held{due: s.now().Add(hold), id: id})
			}
		case <-timer.C:
		case <-pass:
			s.flush(&h)
			pass = nil
			close(s.released)
			continue
		}
		now := s.now()
		for len(h) > 0 && !h[0].due.After(now) {
			p := heap.Pop(&h).(held)
			if late := now.Sub(p.due); late > lateBy {
				s.n.late.Add(1)
				if int64(late) > s.n.lateMax.Load() {
					s.n.lateMax.Store(int64(late))
				}
			}
			s.send(p.id, nfAccept)
		}
	}
}

func (s *scheduler) flush(h *heldHeap) {
	for h.Len() > 0 {
		s.send(heap.Pop(h).(held).id, nfAccept)
	}
}
