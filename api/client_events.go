package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// steadyStream is how long an event stream must stay open, without a
// change, to count as served: its end then starts a new retry window
// instead of adding to the current one, so that a cluster idle for hours
// is followed through any number of manager deaths, while managers that
// accept streams and end them at once are given up on after RetryFor.
const steadyStream = time.Second

// DefaultEventsHeartbeat is the heartbeat EventsWith asks of a manager
// (GET /events?heartbeat=) when EventsOptions.Heartbeat is zero.
const DefaultEventsHeartbeat = 5 * time.Second

// deadBeats is how many heartbeat intervals a stream may stay silent (no
// change, no heartbeat) before EventsWith takes it for dead: one late
// heartbeat is a slow network, three is a manager or a path that stopped.
const deadBeats = 3

// EventsOptions are the choices of EventsWith; the zero value is Events'.
type EventsOptions struct {
	// After, if set, is the position of the last change the caller saw
	// (Change.Position): the stream starts after it, or fails with a
	// *GapError if no manager holds every change since. Nil starts with
	// the next change to commit.
	After *Position
	// OnResume, if set, is called (on the caller's goroutine) each time
	// the stream resumes after a stream ended or its manager stopped
	// answering.
	OnResume func(Resume)
	// Heartbeat is how long a stream may stay idle before its manager
	// sends a heartbeat line (GET /events?heartbeat=, from
	// MinEventsHeartbeat to MaxEventsHeartbeat); a stream that then stays
	// silent for three of these (its manager hung, or the path to it
	// black-holed, with no connection error to tell) is taken for dead
	// and resumed on another manager. Only managers that confirm it are
	// watched (an older one sends no heartbeat). 0: DefaultEventsHeartbeat;
	// negative: none asked, a stream is trusted while its connection is.
	Heartbeat time.Duration
}

// Resume describes a stream resumed after an interruption.
type Resume struct {
	// From is the manager whose stream ended and To the one that took
	// over (host:port; the same one when it came back first).
	From, To string
	// After is the position the stream resumed after: the last change
	// delivered (or where the first stream started).
	After Position
	// Cause is why the previous stream ended.
	Cause error
}

// Events streams task changes, from the next to commit, and calls fn for
// each until ctx ends or fn returns an error; it is EventsWith with the
// zero options.
func (c *Client) Events(ctx context.Context, fn func(Change) error) error {
	return c.EventsWith(ctx, EventsOptions{}, fn)
}

// EventsWith streams task changes and calls fn for each, in commit order,
// each once, until ctx ends or fn returns an error (which it returns).
//
// It follows the cluster, not one manager: it streams from the first
// manager listed that answers, and when that stream ends or its manager
// stops answering it resumes on the next manager (round-robin, with
// back-off once every manager failed) after the last change delivered
// (GET /events?after=). A stream ends when its manager dies, when it
// falls behind, when the manager is out of touch with a raft leader (it
// says so in a last line), and when it stays silent for three heartbeat
// intervals (opts.Heartbeat). Every manager applies every change, and a manager
// serves a resumed stream only if it holds every change since, or it
// answers 410. So nothing is skipped silently: when every manager said it
// lacks some of the changes, or RetryFor passed without a stream and one
// had said so, EventsWith returns a *GapError (errors.Is ErrEventsGap), and
// the caller re-reads the state. Without a gap it gives up after RetryFor
// without a stream, with an error wrapping ErrUnavailable, or with an
// *UnreachableError after GiveUpUnreachable when no manager could even be
// connected to from the start.
func (c *Client) EventsWith(ctx context.Context, opts EventsOptions, fn func(Change) error) error {
	if opts.Heartbeat == 0 {
		opts.Heartbeat = DefaultEventsHeartbeat
	}
	if opts.Heartbeat > 0 && (opts.Heartbeat < MinEventsHeartbeat || opts.Heartbeat > MaxEventsHeartbeat) {
		return fmt.Errorf("follow events: EventsOptions.Heartbeat (%s) must be from %s to %s, 0 for %s, or negative for none", opts.Heartbeat, MinEventsHeartbeat, MaxEventsHeartbeat, DefaultEventsHeartbeat)
	}
	f := &follower{c: c, opts: opts, fn: fn}
	if opts.After != nil {
		p := *opts.After
		f.pos = &p
	}
	return f.run(ctx)
}

// follower is one EventsWith call.
type follower struct {
	c    *Client
	opts EventsOptions
	fn   func(Change) error
	// pos is the position of the last change delivered, or where the
	// stream started; nil until known.
	pos *Position
	// started: a stream was open once (so "from the next change" has
	// begun, and a resume needs pos).
	started bool
	// ended and cause: the manager whose stream ended last, and why,
	// until a stream resumes (OnResume).
	ended string
	cause error
}

// fnError carries the error of the caller's fn out of the stream.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

// run is the retry loop of EventsWith.
func (f *follower) run(ctx context.Context) error {
	c := f.c
	n := len(c.managers)
	begun := time.Now()
	var (
		cur     int       // index of the manager to try next
		failing time.Time // when the current run of failures began
		backoff = minBackoff
		tries   int                   // attempts since the last served stream
		gaps    = map[int]*GapError{} // managers that lack changes after pos
		refused = map[string]error{}  // managers that refused the connection
		lastErr error
	)
	for {
		served, err := f.attempt(ctx, cur)
		var fe fnError
		switch {
		case errors.As(err, &fe):
			return fe.err
		case ctx.Err() != nil:
			return ctx.Err()
		}
		if served {
			failing, backoff, tries = time.Time{}, minBackoff, 0
			clear(gaps)
			clear(refused)
		}
		if failing.IsZero() {
			failing = time.Now()
		}
		var gap *GapError
		var status *StatusError
		switch {
		case errors.As(err, &gap):
			gaps[cur] = gap
		case errors.As(err, &status) && !retryable(status.StatusCode) && status.StatusCode != http.StatusTooManyRequests:
			return fmt.Errorf("follow events: %w", err) // refused for good: credentials, a bad position
		default:
			if _, ok := dialError(err); ok {
				refused[c.managers[cur]] = err
			}
			lastErr = err
		}
		if len(gaps) == n {
			return bestGap(gaps, n)
		}
		if f.started && f.pos == nil {
			// Only a manager older than this client says nothing of where
			// its stream starts; with no change seen, none can resume it.
			return &GapError{Manager: hostOf(f.ended), Reason: "its stream ended before its first change, and it did not say where the stream started (a manager older than this client?)"}
		}
		if !f.started && c.giveUp > 0 && len(refused) == n && time.Since(begun) >= c.giveUp {
			ue := &UnreachableError{}
			for _, m := range c.managers {
				ue.Addrs, ue.Errs = append(ue.Addrs, m), append(ue.Errs, refused[m])
			}
			return fmt.Errorf("follow events: %w", ue)
		}
		remaining := c.retryFor - time.Since(failing)
		if remaining <= 0 {
			if len(gaps) > 0 {
				return bestGap(gaps, n)
			}
			return fmt.Errorf("follow events: no manager could stream within %s: %w: %w", c.retryFor, ErrUnavailable, lastErr)
		}
		// The next manager that did not say it lacks changes.
		for i := 1; i <= n; i++ {
			if _, ok := gaps[(cur+i)%n]; !ok {
				cur = (cur + i) % n
				break
			}
		}
		if tries++; tries < n {
			continue // a whole round first, at once: another manager is likely up
		}
		tries = 0
		timer := time.NewTimer(min(Jitter(backoff), remaining))
		backoff = min(2*backoff, maxBackoff)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}

// attempt opens a stream on manager i and reads it until it ends. served
// says the stream delivered a change or stayed open steadyStream; err is
// why it could not open or why it ended (an fnError from fn).
func (f *follower) attempt(ctx context.Context, i int) (served bool, err error) {
	base := f.c.managers[i]
	st, err := f.open(ctx, base)
	if err != nil {
		return false, err
	}
	defer st.body.Close()
	opened := time.Now()
	if f.pos == nil {
		f.pos = st.start
	}
	if f.ended != "" && f.opts.OnResume != nil && f.pos != nil {
		f.opts.OnResume(Resume{From: hostOf(f.ended), To: hostOf(base), After: *f.pos, Cause: f.cause})
	}
	f.started, f.ended, f.cause = true, "", nil
	delivered, err := f.read(st, base)
	f.ended, f.cause = base, err
	return delivered > 0 || time.Since(opened) >= steadyStream, err
}

// stream is an open GET /events answer.
type stream struct {
	body *cancelBody
	// start is the position the stream starts after; nil when the
	// manager does not say.
	start *Position
	// beat is the heartbeat interval the manager confirmed
	// (HeaderEventsHeartbeat); 0: it sends none.
	beat time.Duration
}

// open sends GET /events (after pos, once known; with the heartbeat asked)
// to base and returns the stream of a 200. Only the wait for the answer's
// header is bounded (the Client's Timeout); the stream runs until ctx ends
// or the body is closed.
func (f *follower) open(ctx context.Context, base string) (*stream, error) {
	q := url.Values{}
	if f.pos != nil {
		q.Set("after", f.pos.String())
	}
	if f.opts.Heartbeat > 0 {
		q.Set("heartbeat", f.opts.Heartbeat.String())
	}
	path := "/events"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	sctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, base+path, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	timer := time.AfterFunc(f.c.timeout, cancel)
	resp, err := f.c.hc.Do(req)
	if !timer.Stop() {
		if err == nil {
			resp.Body.Close()
		}
		cancel()
		return nil, fmt.Errorf("GET %s%s: no answer within %s", hostOf(base), path, f.c.timeout)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	st := &stream{body: &cancelBody{ReadCloser: resp.Body, cancel: cancel}}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		st.body.Close()
		if resp.StatusCode == http.StatusGone {
			var eg EventsGap
			if json.Unmarshal(b, &eg) == nil {
				return nil, &GapError{Manager: hostOf(base), After: eg.After, Oldest: eg.Oldest, Reason: eg.Reason}
			}
		}
		return nil, fmt.Errorf("GET %s%s: %w", hostOf(base), path, responseError(resp.StatusCode, b))
	}
	if d, err := time.ParseDuration(resp.Header.Get(HeaderEventsHeartbeat)); err == nil && d > 0 {
		st.beat = d
	}
	hdr := resp.Header.Get(HeaderEventsAfter)
	if f.pos != nil {
		if hdr != f.pos.String() {
			st.body.Close()
			return nil, &GapError{Manager: hostOf(base), After: *f.pos, Reason: "it did not confirm that it streams from that position (a manager older than this client?)"}
		}
		st.start = f.pos
		return st, nil
	}
	if p, err := ParsePosition(hdr); err == nil {
		st.start = &p
	}
	return st, nil
}

// read delivers the changes of one stream to fn, in order, skipping any
// before the last one delivered, and returns how many it delivered and why
// the stream ended. On a stream with heartbeats, silence for deadBeats
// intervals (fn's time aside) ends it.
func (f *follower) read(st *stream, base string) (int, error) {
	var silent atomic.Bool
	watch := func(bool) {}
	if st.beat > 0 {
		dead := deadBeats * st.beat
		// Cancelling the request's context, not closing the body from
		// another goroutine, is how net/http ends a read in flight.
		wd := time.AfterFunc(dead, func() { silent.Store(true); st.body.cancel() })
		defer wd.Stop()
		watch = func(on bool) {
			if on {
				wd.Reset(dead)
			} else {
				wd.Stop()
			}
		}
	}
	dec := json.NewDecoder(st.body)
	n := 0
	for {
		var ch Change
		if err := dec.Decode(&ch); err != nil {
			if silent.Load() {
				return n, fmt.Errorf("event stream from %s went silent: no change and no heartbeat for %s (it sends one after %s idle), so its manager or the path to it has stopped", hostOf(base), deadBeats*st.beat, st.beat)
			}
			return n, fmt.Errorf("event stream from %s ended: %w", hostOf(base), err)
		}
		switch {
		case ch.Error != "":
			return n, fmt.Errorf("event stream from %s was dropped: %s", hostOf(base), ch.Error)
		case ch.Heartbeat:
			watch(true)
			continue
		}
		p := ch.Position()
		if f.pos != nil && p.Less(*f.pos) {
			watch(true)
			continue // never twice (a manager sends nothing before after=)
		}
		watch(false) // fn may take its time (a full pipe): not the stream's silence
		if err := f.fn(ch); err != nil {
			return n, fnError{err}
		}
		watch(true)
		f.pos = &p
		n++
	}
}

// cancelBody is a response body whose Close also ends its request's context.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// bestGap is the gap of the manager that lacks the fewest changes (the
// lowest Oldest; one that did not say counts as lacking the most), in the
// order of the managers on a tie: the error of a stream that cannot resume.
func bestGap(gaps map[int]*GapError, n int) *GapError {
	var best *GapError
	for i := range n {
		g, ok := gaps[i]
		if ok && (best == nil || g.Oldest != nil && (best.Oldest == nil || g.Oldest.Less(*best.Oldest))) {
			best = g
		}
	}
	return best
}

// hostOf is a manager's base URL without its scheme.
func hostOf(base string) string {
	return strings.TrimPrefix(strings.TrimPrefix(base, "http://"), "https://")
}
