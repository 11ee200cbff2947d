package api

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// This file holds what GET /events and its clients share: the position of
// a change in the order of all changes, the header that confirms where a
// stream starts, and the error of a position a manager can no longer serve
// (410 Gone).

// HeaderEventsAfter is on every 200 answer to GET /events: the position the
// stream starts after (Position's text form). With ?after=P it is P, which
// is how a client knows the manager honoured the parameter (a manager older
// than it would stream from "now" and say nothing); without, it is the
// newest change the manager had applied when the stream began, so that the
// client can resume from there even if the stream ends before its first
// change.
const HeaderEventsAfter = "X-Cube-Events-After"

// HeaderEventsHeartbeat is on a 200 answer to GET /events?heartbeat=D: the
// interval the manager keeps (D), confirming that it sends an
// EventsHeartbeat line whenever the stream has been idle that long. A
// client watches for silence only when it is there: a manager older than
// it ignores the parameter and sends none.
const HeaderEventsHeartbeat = "X-Cube-Events-Heartbeat"

// The bounds of GET /events?heartbeat=: often enough to notice a dead
// stream within seconds, seldom enough to cost nothing (a line of 40 bytes
// per stream per interval, at most max_event_streams streams).
const (
	MinEventsHeartbeat = 100 * time.Millisecond
	MaxEventsHeartbeat = 10 * time.Minute
)

// EventsHeartbeat is the line GET /events?heartbeat=D sends when the
// stream has been idle for D: {"Heartbeat":true,"Index":N}. It is sent only
// to a client that asked, because a reader that knows nothing of it would
// decode it as a Change of a zero task. It is not a change and has no
// position: a reader resumes after the last change, never after a
// heartbeat.
type EventsHeartbeat struct {
	// Heartbeat is always true (Change.Heartbeat).
	Heartbeat bool
	// Index is the raft index this manager had applied when it sent the
	// line (0 when it could not say), to show how far it is.
	Index uint64 `json:",omitempty"`
}

// SeqAll as a Position's Seq means "every change of the entry": the
// position after the last change log entry Index made, whatever their
// number. It is what "INDEX" without ".SEQ" stands for.
const SeqAll = math.MaxInt32

// ErrEventsGap: the changes after the position a client asked for are not
// all held by the manager (it keeps the last few thousand, and none from
// before its last restart or snapshot install), so streaming on would skip
// some silently. HTTP 410. The client must re-read the state (GET /tasks)
// and follow on from a new position.
var ErrEventsGap = errors.New("changes missing from the event stream")

// Position is where a change stands in the order of all task changes, the
// same on every manager: the raft index of the entry that made it, and its
// place among that entry's changes (one entry can change several tasks:
// deleting a service stops its tasks). Its text form is "INDEX.SEQ", or
// "INDEX" for the position after every change of that entry (Seq SeqAll);
// "0" is before every change.
type Position struct {
	Index uint64
	// Seq numbers the changes of one entry from 0, or is SeqAll.
	Seq int
}

// Less reports whether p comes before q.
func (p Position) Less(q Position) bool {
	return p.Index < q.Index || (p.Index == q.Index && p.Seq < q.Seq)
}

// String is the text form: "INDEX.SEQ", or "INDEX" for SeqAll.
func (p Position) String() string {
	if p.Seq == SeqAll {
		return strconv.FormatUint(p.Index, 10)
	}
	return strconv.FormatUint(p.Index, 10) + "." + strconv.Itoa(p.Seq)
}

// MarshalText encodes the text form (a JSON string).
func (p Position) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText decodes the text form.
func (p *Position) UnmarshalText(b []byte) error {
	q, err := ParsePosition(string(b))
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// ParsePosition reads "INDEX" (after every change of that entry) or
// "INDEX.SEQ" (after that one change).
func ParsePosition(s string) (Position, error) {
	bad := func() (Position, error) {
		return Position{}, fmt.Errorf("position %q is not INDEX or INDEX.SEQ (a raft index, and the place of a change among that entry's changes, from 0)", s)
	}
	idx, seq, dotted := strings.Cut(s, ".")
	i, err := strconv.ParseUint(idx, 10, 64)
	if err != nil || idx == "" || idx[0] == '+' {
		return bad()
	}
	if !dotted {
		return Position{Index: i, Seq: SeqAll}, nil
	}
	n, err := strconv.Atoi(seq)
	if err != nil || seq == "" || seq[0] == '+' || seq[0] == '-' || n >= SeqAll {
		return bad()
	}
	return Position{Index: i, Seq: n}, nil
}

// Position is where the change stands.
func (c Change) Position() Position { return Position{Index: c.Index, Seq: c.Seq} }

// GapError is the error of a stream that cannot resume after a position:
// the manager does not hold every change after it. It wraps ErrEventsGap.
type GapError struct {
	// Manager is the manager that answered (host:port), when known.
	Manager string
	// After is the position asked for: the last change the caller saw.
	After Position
	// Oldest is the position after which the manager holds every change,
	// when it said: the changes after After up to and including Oldest are
	// unknown to it.
	Oldest *Position
	// Reason is why, in the manager's words.
	Reason string
}

// Error says which changes are missing where, and what to do.
func (e *GapError) Error() string {
	who := "the manager"
	if e.Manager != "" {
		who = e.Manager
	}
	msg := fmt.Sprintf("%v: %s cannot stream the changes after %s", ErrEventsGap, who, e.After)
	if e.Oldest != nil {
		msg += fmt.Sprintf(", only those after %s", e.Oldest)
	}
	if e.Reason != "" {
		msg += " (" + e.Reason + ")"
	}
	return msg + "; re-read the tasks (GET /tasks) and follow on from there"
}

// Unwrap makes errors.Is(err, ErrEventsGap) hold.
func (e *GapError) Unwrap() error { return ErrEventsGap }

// EventsGap is the body of a 410 answer to GET /events?after=P: an
// ErrResponse with the positions, for clients that do not parse Message.
type EventsGap struct {
	HTTPStatusCode int
	Message        string
	// After is the position asked for.
	After Position
	// Oldest, if set, is the position after which this manager holds
	// every change.
	Oldest *Position `json:",omitempty"`
	// Reason is why this manager lacks changes after After.
	Reason string `json:",omitempty"`
}

// QueryPosition reads the position in query parameter name: nil when the
// parameter is absent, a *ValidationError (400) when it is malformed.
func QueryPosition(r *http.Request, name string) (*Position, error) {
	q := r.URL.Query()
	if !q.Has(name) {
		return nil, nil
	}
	p, err := ParsePosition(q.Get(name))
	if err != nil {
		return nil, &ValidationError{Msg: fmt.Sprintf("query parameter %s: %v", name, err)}
	}
	return &p, nil
}

// QueryHeartbeat reads GET /events?heartbeat=D (a Go duration: 5s, 500ms):
// 0 when absent, a *ValidationError (400) when malformed or outside
// [MinEventsHeartbeat, MaxEventsHeartbeat].
func QueryHeartbeat(r *http.Request) (time.Duration, error) {
	q := r.URL.Query()
	if !q.Has("heartbeat") {
		return 0, nil
	}
	d, err := time.ParseDuration(q.Get("heartbeat"))
	if err != nil || d < MinEventsHeartbeat || d > MaxEventsHeartbeat {
		return 0, &ValidationError{Msg: fmt.Sprintf("query parameter heartbeat: %q is not a duration from %s to %s (such as 5s): how long the stream may stay idle before the manager sends a heartbeat line", q.Get("heartbeat"), MinEventsHeartbeat, MaxEventsHeartbeat)}
	}
	return d, nil
}

// writeGap answers a *GapError with 410 and an EventsGap body.
func writeGap(w http.ResponseWriter, gap *GapError) {
	writeJSON(w, http.StatusGone, EventsGap{HTTPStatusCode: http.StatusGone, Message: gap.Error(), After: gap.After, Oldest: gap.Oldest, Reason: gap.Reason})
}
