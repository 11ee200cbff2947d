package chaos

import (
	"cmp"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// EventConn is what one connection to GET /events on one manager received,
// from the response's 200 to its end: the run's subscriber reconnects when a
// stream ends, so a run holds many per manager.
type EventConn struct {
	// Manager is the manager the stream came from; Seq numbers its
	// connections from 1.
	Manager string
	Seq     int
	// Changes are the changes received, in arrival order.
	Changes []EventChange
	// Dropped is the Error of the stream's last line when the manager said
	// it dropped the subscriber ("" when it did not).
	Dropped string
	// End says how the stream ended: "dropped", "eof" (the body ended
	// without a word), "error: …" (a broken connection, the manager
	// killed), "open" (still connected when the run ended).
	End string
}

// EventChange is one received api.Change, its task reduced to a hash of
// its JSON encoding (Hash), enough to compare two receptions of one index.
type EventChange struct {
	Index  uint64
	TaskID uuid.UUID
	Hash   uint64
}

// NewEventChange reduces a received change to an EventChange.
func NewEventChange(c api.Change) EventChange {
	b, _ := json.Marshal(c.Task) // a Task always encodes
	h := fnv.New64a()
	_, _ = h.Write(b)
	return EventChange{Index: c.Index, TaskID: c.Task.ID, Hash: h.Sum64()}
}

// CheckEvents checks what the /events subscribers received and returns one
// line per violation (nil for none). A committed raft entry changes one
// task, or several (DeleteService stops the service's tasks in the entry
// that removes it), and fsm.Apply publishes one change per task, all with
// the entry's index: so a change is known by its index and task. The
// rules:
//
//   - once: no change (index and task) arrives twice on one connection;
//   - in order: on one connection, indexes never decrease;
//   - the same change everywhere: a change received on several connections
//     (of any manager, or of one manager before and after a restart, which
//     replays its log) is the same, byte for byte;
//   - no gap while connected: a change that any connection received, whose
//     index lies strictly between the first and the last index a
//     connection received, was received by that connection too (at its
//     first and last index a connection may have started or ended in the
//     middle of an entry's changes). A manager that drops a slow
//     subscriber says so on the stream's last line and ends it, so a
//     dropped stream has no gap inside its range either: what it missed
//     comes after its last index.
//
// Gaps that every connection missed alike are not seen; the final-view
// check of the caller (the subscriber's folded view equals the manager's
// state) covers the last connection of each manager.
func CheckEvents(conns []EventConn) []string {
	var out []string
	type key struct {
		index uint64
		task  uuid.UUID
	}
	type seen struct {
		hash uint64
		conn string
	}
	union := make(map[key]seen)
	name := func(c EventConn) string { return fmt.Sprintf("%s#%d", c.Manager, c.Seq) }
	for _, c := range conns {
		var prev uint64
		got := make(map[key]bool, len(c.Changes))
		for i, ch := range c.Changes {
			k := key{ch.Index, ch.TaskID}
			switch {
			case got[k]:
				out = append(out, fmt.Sprintf("stream %s: index %d (task %s) arrived twice", name(c), ch.Index, ch.TaskID))
			case i > 0 && ch.Index < prev:
				out = append(out, fmt.Sprintf("stream %s: index %d (task %s) arrived after index %d", name(c), ch.Index, ch.TaskID, prev))
			}
			got[k] = true
			prev = max(prev, ch.Index)
			if s, ok := union[k]; !ok {
				union[k] = seen{ch.Hash, name(c)}
			} else if s.hash != ch.Hash {
				out = append(out, fmt.Sprintf("index %d: stream %s received task %s, stream %s a different change of it", ch.Index, s.conn, ch.TaskID, name(c)))
			}
		}
	}
	keys := slices.SortedFunc(maps.Keys(union), func(a, b key) int {
		if a.index != b.index {
			return cmp.Compare(a.index, b.index)
		}
		return slices.Compare(a.task[:], b.task[:])
	})
	for _, c := range conns {
		if len(c.Changes) < 2 {
			continue
		}
		got := make(map[key]bool, len(c.Changes))
		lo, hi := c.Changes[0].Index, c.Changes[0].Index
		for _, ch := range c.Changes {
			got[key{ch.Index, ch.TaskID}] = true
			lo, hi = min(lo, ch.Index), max(hi, ch.Index)
		}
		var missed []key
		start, _ := slices.BinarySearchFunc(keys, lo+1, func(k key, idx uint64) int { return cmp.Compare(k.index, idx) })
		for _, k := range keys[start:] {
			if k.index >= hi {
				break
			}
			if !got[k] {
				missed = append(missed, k)
			}
		}
		if len(missed) > 0 {
			s := union[missed[0]]
			out = append(out, fmt.Sprintf("stream %s (indexes %d…%d, ended %s): %d change(s) other streams received are missing, first index %d (task %s, received by %s)",
				name(c), lo, hi, c.End, len(missed), missed[0].index, missed[0].task, s.conn))
		}
	}
	return out
}

// EventStats sums up the subscribers' connections for the report.
type EventStats struct {
	Conns, Changes, Dropped int
}

// SumEvents counts connections, changes received and streams the managers
// said they dropped.
func SumEvents(conns []EventConn) EventStats {
	var s EventStats
	for _, c := range conns {
		s.Conns++
		s.Changes += len(c.Changes)
		if c.Dropped != "" {
			s.Dropped++
		}
	}
	return s
}
