package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// steadyStream is how long an event stream must stay open, without a
// change, to count as served: its end then starts a new retry window
// instead of adding to the current one, so that a cluster idle for hours
// is followed through any number of manager deaths, while managers that
// accept streams and end them at once are given up on after RetryFor.
const steadyStream = time.Second

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
// (GET /events?after=). Every manager applies every change, and a manager
// serves a resumed stream only if it holds every change since, or it
// answers 410. So nothing is skipped silently: when every manager said it
// lacks some of the changes, or RetryFor passed without a stream and one
// had said so, EventsWith returns a *GapError (errors.Is ErrEventsGap), and
// the caller re-reads the state. Without a gap it gives up after RetryFor
// without a stream, with an error wrapping ErrUnavailable, or with an
// *UnreachableError after GiveUpUnreachable when no manager could even be
// connected to from the start.
func (c *Client) EventsWith(ctx context.Context, opts EventsOptions, fn func(Change) error) error {
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
	body, start, err := f.open(ctx, base)
	if err != nil {
		return false, err
	}
	defer body.Close()
	opened := time.Now()
	if f.pos == nil {
		f.pos = start
	}
	if f.ended != "" && f.opts.OnResume != nil && f.pos != nil {
		f.opts.OnResume(Resume{From: hostOf(f.ended), To: hostOf(base), After: *f.pos, Cause: f.cause})
	}
	f.started, f.ended, f.cause = true, "", nil
	delivered, err := f.read(body, base)
	f.ended, f.cause = base, err
	return delivered > 0 || time.Since(opened) >= steadyStream, err
}

// open sends GET /events (after pos, once known) to base and returns the
// body of a 200 and the position the stream starts after (nil when the
// manager does not say). Only the wait for the answer's header is bounded
// (the Client's Timeout); the stream runs until ctx ends or the body is
// closed.
func (f *follower) open(ctx context.Context, base string) (io.ReadCloser, *Position, error) {
	path := "/events"
	if f.pos != nil {
		path += "?after=" + f.pos.String()
	}
	sctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, base+path, nil)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	timer := time.AfterFunc(f.c.timeout, cancel)
	resp, err := f.c.hc.Do(req)
	if !timer.Stop() {
		if err == nil {
			resp.Body.Close()
		}
		cancel()
		return nil, nil, fmt.Errorf("GET %s%s: no answer within %s", hostOf(base), path, f.c.timeout)
	}
	if err != nil {
		cancel()
		return nil, nil, err
	}
	body := &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		body.Close()
		if resp.StatusCode == http.StatusGone {
			var eg EventsGap
			if json.Unmarshal(b, &eg) == nil {
				return nil, nil, &GapError{Manager: hostOf(base), After: eg.After, Oldest: eg.Oldest, Reason: eg.Reason}
			}
		}
		return nil, nil, fmt.Errorf("GET %s%s: %w", hostOf(base), path, responseError(resp.StatusCode, b))
	}
	hdr := resp.Header.Get(HeaderEventsAfter)
	if f.pos != nil {
		if hdr != f.pos.String() {
			body.Close()
			return nil, nil, &GapError{Manager: hostOf(base), After: *f.pos, Reason: "it did not confirm that it streams from that position (a manager older than this client?)"}
		}
		return body, f.pos, nil
	}
	if p, err := ParsePosition(hdr); err == nil {
		return body, &p, nil
	}
	return body, nil, nil
}

// read delivers the changes of one stream to fn, in order, skipping any
// before the last one delivered, and returns how many it delivered and why
// the stream ended.
func (f *follower) read(body io.Reader, base string) (int, error) {
	dec := json.NewDecoder(body)
	n := 0
	for {
		var ch Change
		if err := dec.Decode(&ch); err != nil {
			return n, fmt.Errorf("event stream from %s ended: %w", hostOf(base), err)
		}
		if ch.Error != "" {
			return n, fmt.Errorf("event stream from %s was dropped: %s", hostOf(base), ch.Error)
		}
		p := ch.Position()
		if f.pos != nil && p.Less(*f.pos) {
			continue // never twice (a manager sends nothing before after=)
		}
		if err := f.fn(ch); err != nil {
			return n, fnError{err}
		}
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
