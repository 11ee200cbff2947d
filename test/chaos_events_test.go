package test

// The /events subscribers of a chaos run: one on each of the first two
// managers, connected from before the first fault until the run's checks
// are done, reconnecting whenever a stream ends. Each does what the API
// asks of a client that wants the state as well as the changes: subscribe,
// then read GET /tasks from the same manager, then fold every change into
// that view; after a stream ends (the manager said it dropped it, or the
// connection broke), subscribe again and re-read. What every connection
// received goes to chaos.CheckEvents; after convergence each subscriber's
// view must equal its manager's state.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/chaos"
	"github.com/google/uuid"
)

// eventLine is one line of GET /events: an api.Change, or, on a stream's
// last line, the manager's word that it dropped the subscriber (Error).
type eventLine struct {
	Index uint64
	Task  api.Task
	Error string
}

// eventSub is one subscriber, on one manager.
type eventSub struct {
	r  *chaosRun
	m  *Proc
	hc *http.Client

	mu    sync.Mutex
	conns []chaos.EventConn
	view  map[uuid.UUID]api.Task // the current connection's folded view; nil between connections
}

// startSubscribers starts the subscribers; they run until ctx ends.
func (r *chaosRun) startSubscribers(ctx context.Context, wg *sync.WaitGroup) {
	hc := &http.Client{Transport: api.NewTLSTransport("", nil)}
	if r.c.Sec != nil {
		// The operator's client certificate: a restarted manager admits it
		// before it has replayed the token table.
		hc = &http.Client{Transport: api.NewTLSTransport("", r.c.Sec.TLS())}
	}
	ms := r.managers()
	for _, m := range ms[:min(2, len(ms))] {
		s := &eventSub{r: r, m: m, hc: hc}
		r.subs = append(r.subs, s)
		wg.Add(1)
		go func() { defer wg.Done(); s.run(ctx) }()
	}
}

// subscribed reports whether a subscriber follows manager m (which is then
// never removed from the cluster).
func (r *chaosRun) subscribed(m *Proc) bool {
	for _, s := range r.subs {
		if s.m == m {
			return true
		}
	}
	return false
}

func (s *eventSub) run(ctx context.Context) {
	for ctx.Err() == nil {
		s.connect(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.view = nil
}

// connect follows one stream until it ends.
func (s *eventSub) connect(ctx context.Context) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.r.c.URL(s.m, "/events"), nil)
	if err != nil {
		s.r.t.Error(err)
		return
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return // the manager is down or stopped; try again
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		s.r.t.Logf("events on %s: %d %s", s.m.Name, resp.StatusCode, body)
		return
	}
	// Subscribed (the manager subscribes before it answers 200): read the
	// state from the same manager; every change after the state read comes
	// on the stream, and so does every change between the subscription and
	// the read, which folding again leaves the same.
	cl, err := api.NewClient([]string{s.m.HTTPAddr}, s.r.c.ClientOptions(api.ClientOptions{Timeout: 5 * time.Second, RetryFor: time.Second}))
	if err != nil {
		s.r.t.Error(err)
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	tasks, err := cl.Tasks(rctx, false)
	cancel()
	if err != nil {
		return
	}
	s.mu.Lock()
	s.conns = append(s.conns, chaos.EventConn{Manager: s.m.Name, Seq: len(s.conns) + 1, End: "open"})
	cur := len(s.conns) - 1
	s.view = make(map[uuid.UUID]api.Task, len(tasks))
	for _, t := range tasks {
		s.view[t.ID] = t
	}
	s.mu.Unlock()

	dec := json.NewDecoder(resp.Body)
	end := "open"
	for {
		var l eventLine
		if err := dec.Decode(&l); err != nil {
			switch {
			case ctx.Err() != nil:
			case errors.Is(err, io.EOF):
				end = "eof"
			default:
				end = "error: " + err.Error()
			}
			break
		}
		if l.Error != "" {
			s.mu.Lock()
			s.conns[cur].Dropped = l.Error
			s.mu.Unlock()
			end = "dropped"
			s.r.t.Logf("events on %s: the manager dropped the stream: %s", s.m.Name, l.Error)
			break
		}
		s.mu.Lock()
		s.conns[cur].Changes = append(s.conns[cur].Changes, chaos.NewEventChange(api.Change{Index: l.Index, Task: l.Task}))
		s.view[l.Task.ID] = l.Task
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.conns[cur].End = end
	if end != "open" {
		s.view = nil
	}
	s.mu.Unlock()
}

// eventConns returns every subscriber's connections.
func (r *chaosRun) eventConns() []chaos.EventConn {
	var out []chaos.EventConn
	for _, s := range r.subs {
		s.mu.Lock()
		out = append(out, s.conns...)
		s.mu.Unlock()
	}
	return out
}

// checkViews waits (generously) until each subscriber's folded view
// equals its manager's own state, read from it, and returns a line per
// subscriber for which that never happened. Called once the cluster
// converged: the state changes rarely by then.
func (r *chaosRun) checkViews() []string {
	var out []string
	for _, s := range r.subs {
		var last error
		deadline := time.Now().Add(60 * time.Second)
		for {
			last = s.viewMatches()
			if last == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		if last != nil {
			out = append(out, fmt.Sprintf("subscriber on %s: its view never matched the manager's state within 60 s: %v", s.m.Name, last))
		}
	}
	return out
}

// viewMatches compares the view with the manager's state once.
func (s *eventSub) viewMatches() error {
	cl, err := api.NewClient([]string{s.m.HTTPAddr}, s.r.c.ClientOptions(api.ClientOptions{Timeout: 5 * time.Second, RetryFor: time.Second}))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tasks, err := cl.Tasks(ctx, false)
	if err != nil {
		return fmt.Errorf("read the state: %w", err)
	}
	s.mu.Lock()
	if s.view == nil {
		s.mu.Unlock()
		return errors.New("not connected")
	}
	view := make([]api.Task, 0, len(s.view))
	for _, t := range s.view {
		view = append(view, t)
	}
	s.mu.Unlock()
	byID := func(ts []api.Task) {
		sort.Slice(ts, func(i, j int) bool { return ts[i].ID.String() < ts[j].ID.String() })
	}
	byID(view)
	byID(tasks)
	if diffs := chaos.CheckSameState(map[string][]api.Task{"manager": tasks, "subscriber": view}); len(diffs) > 0 {
		return errors.New(diffs[0])
	}
	return nil
}
