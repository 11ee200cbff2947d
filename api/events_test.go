package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
)

func TestPosition_ParseAndString(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Position
		ok   bool
	}{
		{"0", Position{0, SeqAll}, true},
		{"12", Position{12, SeqAll}, true},
		{"12.0", Position{12, 0}, true},
		{"12.3", Position{12, 3}, true},
		{"18446744073709551615.7", Position{1<<64 - 1, 7}, true},
		{"", Position{}, false},
		{"abc", Position{}, false},
		{"-1", Position{}, false},
		{"+1", Position{}, false},
		{"1.", Position{}, false},
		{".1", Position{}, false},
		{"1.-1", Position{}, false},
		{"1.+1", Position{}, false},
		{"1.2.3", Position{}, false},
		{"1.x", Position{}, false},
		{"1.2147483647", Position{}, false}, // SeqAll is spelled "1"
		{"18446744073709551616", Position{}, false},
	} {
		got, err := ParsePosition(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParsePosition(%q) = %+v, %v; want %+v, ok %v", tc.in, got, err, tc.want, tc.ok)
			continue
		}
		if tc.ok && got.String() != tc.in {
			t.Errorf("ParsePosition(%q).String() = %q", tc.in, got.String())
		}
	}
	// Order: a change, then the rest of its entry, then the next entry.
	order := []Position{{0, 0}, {0, SeqAll}, {1, 0}, {1, 1}, {1, SeqAll}, {2, 0}}
	for i := range order {
		for j := range order {
			if got := order[i].Less(order[j]); got != (i < j) {
				t.Errorf("%v.Less(%v) = %v", order[i], order[j], got)
			}
		}
	}
}

// FuzzParsePosition: any text either is refused or reads as a position
// whose text form reads back as itself.
func FuzzParsePosition(f *testing.F) {
	for _, s := range []string{"0", "12.3", "1.", "-1", "1.2147483647", "18446744073709551616"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePosition(s)
		if err != nil {
			return
		}
		q, err := ParsePosition(p.String())
		if err != nil || q != p || p.Seq < 0 || p.Seq > SeqAll {
			t.Fatalf("%q read as %+v, whose text %q reads as %+v, %v", s, p, p.String(), q, err)
		}
	})
}

// changeLog is the changes every manager applies, in order; a test
// appends to it as the cluster commits.
type changeLog struct {
	mu      sync.Mutex
	changes []Change
	wake    chan struct{}
}

func newChangeLog() *changeLog { return &changeLog{wake: make(chan struct{})} }

// add appends the change of one task at the next index.
func (l *changeLog) add(name string) Change {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := Change{Index: uint64(len(l.changes) + 1), Task: Task{ID: uuid.New(), Name: name}}
	l.changes = append(l.changes, c)
	close(l.wake)
	l.wake = make(chan struct{})
	return c
}

// after returns the changes after p and a channel closed at the next add.
func (l *changeLog) after(p Position) ([]Change, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i, _ := slices.BinarySearchFunc(l.changes, p, func(c Change, p Position) int {
		if p.Less(c.Position()) {
			return 1
		}
		return -1
	})
	return slices.Clone(l.changes[i:]), l.wake
}

func (l *changeLog) newest() Position {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.changes) == 0 {
		return Position{}
	}
	return l.changes[len(l.changes)-1].Position()
}

// logManager is a manager whose feed is the shared log: it streams the
// changes after a position, then new ones as they commit, as fsm's feed
// does, and refuses positions before floor with a *GapError.
type logManager struct {
	*fakeManager
	log   *changeLog
	floor Position
	wg    sync.WaitGroup
}

func (m *logManager) Changes(ctx context.Context, after *Position) (<-chan Change, Position, error) {
	m.mu.Lock()
	m.calls["Changes"]++
	m.mu.Unlock()
	m.mu.Lock()
	floor := m.floor
	m.mu.Unlock()
	var start Position
	switch {
	case after == nil:
		start = m.log.newest()
	case after.Index > m.log.newest().Index:
		return nil, Position{}, &ValidationError{Msg: fmt.Sprintf("position %s is beyond the cluster's last index %d", after, m.log.newest().Index)}
	case after.Less(floor):
		oldest := floor
		return nil, Position{}, &GapError{After: *after, Oldest: &oldest, Reason: "it keeps the last 2 changes"}
	default:
		start = *after
	}
	out := make(chan Change)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(out)
		p := start
		for {
			cs, wake := m.log.after(p)
			for _, c := range cs {
				select {
				case out <- c:
					p = c.Position()
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-wake:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, start, nil
}

// ServerStatus says how far the log goes: a heartbeat's Index.
func (m *logManager) ServerStatus(ctx context.Context) (ServerStatus, error) {
	st, err := m.fakeManager.ServerStatus(ctx)
	st.AppliedIndex = m.log.newest().Index
	return st, err
}

func (m *logManager) setFloor(p Position) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.floor = p
}

// eventCluster is n managers serving one change log through the real
// handler on real HTTP servers.
type eventCluster struct {
	log   *changeLog
	mgrs  []*logManager
	srvs  []*httptest.Server
	addrs []string
}

func newEventCluster(t *testing.T, n int) *eventCluster {
	t.Helper()
	c := &eventCluster{log: newChangeLog()}
	for range n {
		m := &logManager{fakeManager: newFakeManager(), log: c.log}
		srv := httptest.NewServer(NewManagerHandler(m, ManagerHandlerOptions{Logger: testkit.LoggerAt(t, "api", hclog.Debug)}))
		t.Cleanup(func() { c.kill(srv); m.wg.Wait() })
		c.mgrs = append(c.mgrs, m)
		c.srvs = append(c.srvs, srv)
		c.addrs = append(c.addrs, srv.Listener.Addr().String())
	}
	return c
}

// kill ends a server as a killed process would: its connections cut, its
// port closed.
func (c *eventCluster) kill(srv *httptest.Server) {
	srv.CloseClientConnections()
	srv.Close()
}

// follow runs EventsWith in the background and records what it delivers.
type follow struct {
	mu      sync.Mutex
	got     []Change
	resumes []Resume
	done    chan error
	cancel  context.CancelFunc
}

func startFollow(t *testing.T, cl *Client, opts EventsOptions) *follow {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	fl := &follow{done: make(chan error, 1), cancel: cancel}
	opts.OnResume = func(r Resume) {
		fl.mu.Lock()
		defer fl.mu.Unlock()
		fl.resumes = append(fl.resumes, r)
	}
	go func() {
		fl.done <- cl.EventsWith(ctx, opts, func(ch Change) error {
			fl.mu.Lock()
			defer fl.mu.Unlock()
			fl.got = append(fl.got, ch)
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-fl.done:
		case <-time.After(30 * time.Second):
			t.Error("EventsWith did not return when its context ended")
		}
	})
	return fl
}

// waitFor waits until n changes were delivered.
func (fl *follow) waitFor(t *testing.T, n int) {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, func() error {
		fl.mu.Lock()
		defer fl.mu.Unlock()
		if len(fl.got) < n {
			return fmt.Errorf("%d changes delivered, want %d", len(fl.got), n)
		}
		return nil
	})
}

func (fl *follow) names() []string {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	var out []string
	for _, c := range fl.got {
		out = append(out, c.Task.Name)
	}
	return out
}

// A stream whose manager dies resumes on the next manager after the last
// change delivered: every change once, in order, and the caller is told.
func TestEvents_ResumeOnAnotherManager(t *testing.T) {
	c := newEventCluster(t, 3)
	cl := newTestClient(t, c.addrs, ClientOptions{RetryFor: 20 * time.Second})
	fl := startFollow(t, cl, EventsOptions{})
	// Once the stream is open (its start is known), commit.
	testkit.Eventually(t, 30*time.Second, func() error {
		if c.mgrs[0].count("Changes") == 0 {
			return errors.New("no stream opened yet")
		}
		return nil
	})
	var want []string
	for i := range 5 {
		want = append(want, c.log.add(fmt.Sprint("a", i)).Task.Name)
	}
	fl.waitFor(t, 5)
	c.kill(c.srvs[0])
	for i := range 5 {
		want = append(want, c.log.add(fmt.Sprint("b", i)).Task.Name)
	}
	fl.waitFor(t, 10)
	time.Sleep(100 * time.Millisecond) // anything repeated would arrive now
	if got := fl.names(); !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v (each once, in order)", got, want)
	}
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if len(fl.resumes) != 1 || fl.resumes[0].From != c.addrs[0] || fl.resumes[0].To != c.addrs[1] ||
		fl.resumes[0].After != (Position{Index: 5}) || fl.resumes[0].Cause == nil {
		t.Fatalf("resumes %+v, want one from %s to %s after 5.0", fl.resumes, c.addrs[0], c.addrs[1])
	}
}

// A stream that ends before its first change resumes from where it
// started (HeaderEventsAfter): a change committed in between is not lost.
func TestEvents_ResumeBeforeTheFirstChange(t *testing.T) {
	c := newEventCluster(t, 2)
	c.log.add("before")
	cl := newTestClient(t, c.addrs, ClientOptions{RetryFor: 20 * time.Second})
	fl := startFollow(t, cl, EventsOptions{})
	testkit.Eventually(t, 30*time.Second, func() error {
		if c.mgrs[0].count("Changes") == 0 {
			return errors.New("no stream opened yet")
		}
		return nil
	})
	c.kill(c.srvs[0])
	c.log.add("between")
	fl.waitFor(t, 1)
	if got := fl.names(); !slices.Equal(got, []string{"between"}) {
		t.Fatalf("delivered %v, want [between]", got)
	}
}

// A manager that no longer holds the changes after the position answers
// 410; the client tries the others, resumes on one that holds them, and
// returns a *GapError at once only when none does.
func TestEvents_Gap(t *testing.T) {
	c := newEventCluster(t, 3)
	for i := range 6 {
		c.log.add(fmt.Sprint("c", i))
	}
	// 410 on the wire: an EventsGap naming both positions.
	c.mgrs[0].setFloor(Position{Index: 4, Seq: 0})
	r := doHTTP(t, http.MethodGet, c.srvs[0].URL+"/events?after=2.0", nil, nil)
	var eg EventsGap
	if r.status != http.StatusGone || json.Unmarshal(r.body, &eg) != nil || eg.HTTPStatusCode != http.StatusGone ||
		eg.After != (Position{Index: 2}) || eg.Oldest == nil || *eg.Oldest != (Position{Index: 4}) || !strings.Contains(eg.Message, "only those after 4.0") {
		t.Fatalf("GET /events?after=2.0 on a manager holding only the changes after 4.0: %d %s", r.status, r.body)
	}

	// m1 holds them: the stream starts there.
	cl := newTestClient(t, c.addrs, ClientOptions{RetryFor: 20 * time.Second})
	fl := startFollow(t, cl, EventsOptions{After: &Position{Index: 2, Seq: 0}})
	fl.waitFor(t, 4)
	if got := fl.names(); !slices.Equal(got, []string{"c2", "c3", "c4", "c5"}) {
		t.Fatalf("delivered %v, want c2..c5", got)
	}

	// None holds them: a *GapError at once, naming the smallest loss.
	c.mgrs[1].setFloor(Position{Index: 3, Seq: 0})
	c.mgrs[2].setFloor(Position{Index: 5, Seq: 0})
	cl = newTestClient(t, c.addrs, ClientOptions{RetryFor: time.Minute})
	start := time.Now()
	err := cl.EventsWith(testCtx(t), EventsOptions{After: &Position{Index: 1, Seq: 0}}, func(Change) error {
		t.Error("a change was delivered across a gap")
		return nil
	})
	var gap *GapError
	if !errors.As(err, &gap) || !errors.Is(err, ErrEventsGap) || gap.Manager != c.addrs[1] || *gap.Oldest != (Position{Index: 3}) ||
		gap.After != (Position{Index: 1}) || gap.Reason != "it keeps the last 2 changes" {
		t.Fatalf("every manager lacks changes after 1.0: %v (%+v)", err, gap)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the gap was reported after %s; want at once, not after RetryFor", took)
	}
}

// Bad input is refused (400) and not retried; a manager that does not
// confirm the position it streams from (one older than the client, which
// would stream from "now") counts as lacking the changes.
func TestEvents_BadInputAndOldManagers(t *testing.T) {
	c := newEventCluster(t, 1)
	for _, q := range []string{"abc", "1.x", "-1", "", "1.2.3"} {
		r := doHTTP(t, http.MethodGet, c.srvs[0].URL+"/events?after="+q, nil, nil)
		if er := r.errResponse(t); r.status != http.StatusBadRequest || !strings.Contains(er.Message, "after") || !strings.Contains(er.Message, "INDEX.SEQ") {
			t.Errorf("after=%q: %d %q, want 400 naming the parameter and its form", q, r.status, er.Message)
		}
	}
	if n := c.mgrs[0].count("Changes"); n != 0 {
		t.Errorf("a malformed position reached the manager %d times", n)
	}
	// The confirmation on the wire.
	c.log.add("x")
	for q, want := range map[string]string{"": "1.0", "?after=0": "0", "?after=1.0": "1.0"} {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.srvs[0].URL+"/events"+q, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.Header.Get(HeaderEventsAfter); resp.StatusCode != http.StatusOK || got != want {
			t.Errorf("GET /events%s: %d, %s %q, want %q", q, resp.StatusCode, HeaderEventsAfter, got, want)
		}
		cancel()
		resp.Body.Close()
	}

	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		_ = json.NewEncoder(w).Encode(Change{Index: 9, Task: Task{Name: "now"}})
	}))
	defer old.Close()
	cl := newTestClient(t, []string{old.Listener.Addr().String()}, ClientOptions{RetryFor: time.Minute})
	err := cl.EventsWith(testCtx(t), EventsOptions{After: &Position{Index: 3}}, func(ch Change) error {
		t.Errorf("delivered %+v from a manager that ignored after=", ch)
		return nil
	})
	if !errors.Is(err, ErrEventsGap) || !strings.Contains(err.Error(), "did not confirm") {
		t.Fatalf("an old manager: %v, want a gap that says it did not confirm", err)
	}
}

// openEvents sends GET /events+query to srv and returns the response of a
// 200 (the test fails otherwise) and a decoder of its lines, with the
// request ended at cleanup.
func openEvents(t *testing.T, srv *httptest.Server, query string) (*http.Response, *json.Decoder) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/events"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /events%s: %d", query, resp.StatusCode)
	}
	return resp, json.NewDecoder(resp.Body)
}

// lineOf decodes the next line of a stream as raw JSON, in a goroutine so
// that the test can give up after a generous deadline.
func lineOf(t *testing.T, dec *json.Decoder) map[string]json.RawMessage {
	t.Helper()
	got := make(chan map[string]json.RawMessage, 1)
	errc := make(chan error, 1)
	go func() {
		var m map[string]json.RawMessage
		if err := dec.Decode(&m); err != nil {
			errc <- err
			return
		}
		got <- m
	}()
	select {
	case m := <-got:
		return m
	case err := <-errc:
		t.Fatalf("the stream ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no line within 30 s")
	}
	return nil
}

// GET /events?heartbeat=D confirms D and sends {"Heartbeat":true,"Index":N}
// whenever the stream has been idle for D, and changes as ever; without
// the parameter (an old client, which would decode a heartbeat as a change
// of a zero task) it sends only changes. A malformed or unbounded interval
// is refused.
func TestEvents_Heartbeat(t *testing.T) {
	c := newEventCluster(t, 1)
	c.log.add("before")
	for _, q := range []string{"abc", "5", "1ms", "1h", "-5s", ""} {
		r := doHTTP(t, http.MethodGet, c.srvs[0].URL+"/events?heartbeat="+q, nil, nil)
		if er := r.errResponse(t); r.status != http.StatusBadRequest || !strings.Contains(er.Message, "heartbeat") || !strings.Contains(er.Message, "100ms to 10m0s") {
			t.Errorf("heartbeat=%q: %d %q, want 400 naming the parameter and its bounds", q, r.status, er.Message)
		}
	}

	old, oldLines := openEvents(t, c.srvs[0], "")
	if h := old.Header.Get(HeaderEventsHeartbeat); h != "" {
		t.Errorf("GET /events without ?heartbeat: %s %q, want none", HeaderEventsHeartbeat, h)
	}
	resp, lines := openEvents(t, c.srvs[0], "?heartbeat=100ms&after=1")
	if h := resp.Header.Get(HeaderEventsHeartbeat); h != "100ms" {
		t.Fatalf("GET /events?heartbeat=100ms: %s %q, want 100ms", HeaderEventsHeartbeat, h)
	}
	for range 3 {
		if m := lineOf(t, lines); len(m) != 2 || string(m["Heartbeat"]) != "true" || string(m["Index"]) != "1" {
			t.Fatalf("idle line %v, want exactly {\"Heartbeat\":true,\"Index\":1}", m)
		}
	}
	ch := c.log.add("after")
	m := lineOf(t, lines)
	for m["Heartbeat"] != nil { // one may have been on its way
		m = lineOf(t, lines)
	}
	var got Change
	raw, _ := json.Marshal(m)
	if err := json.Unmarshal(raw, &got); err != nil || got.Task.ID != ch.Task.ID || got.Heartbeat {
		t.Fatalf("line %s, want the change of %s", raw, ch.Task.Name)
	}
	// The stream without heartbeats was idle for three intervals and more,
	// yet its first line is the change.
	if m := lineOf(t, oldLines); m["Heartbeat"] != nil || !strings.Contains(string(m["Task"]), ch.Task.ID.String()) {
		t.Fatalf("first line without ?heartbeat: %v, want the change", m)
	}
}

// A stream that goes silent (its manager hung, or the path to it
// black-holed: no connection error, no line) is taken for dead after three
// heartbeat intervals, and resumed on the next manager after the last
// change delivered. A stream that heartbeats stays, however quiet; so does
// one whose manager did not confirm heartbeats (an older one), which would
// otherwise be left every few seconds.
func TestEvents_SilentStreamResumedElsewhere(t *testing.T) {
	c := newEventCluster(t, 1)
	c.log.add("before")
	var mu sync.Mutex
	hungCalls := 0
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hungCalls++
		mu.Unlock()
		w.Header().Set(HeaderEventsAfter, "1")
		w.Header().Set(HeaderEventsHeartbeat, r.URL.Query().Get("heartbeat"))
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done() // alive, connected, and silent
	}))
	t.Cleanup(func() { hung.CloseClientConnections(); hung.Close() })
	addrs := []string{hung.Listener.Addr().String(), c.addrs[0]}
	cl := newTestClient(t, addrs, ClientOptions{RetryFor: 20 * time.Second})
	fl := startFollow(t, cl, EventsOptions{After: &Position{Index: 1, Seq: SeqAll}, Heartbeat: 100 * time.Millisecond})
	testkit.Eventually(t, 30*time.Second, func() error {
		fl.mu.Lock()
		defer fl.mu.Unlock()
		if len(fl.resumes) == 0 {
			return errors.New("not resumed yet")
		}
		return nil
	})
	fl.mu.Lock()
	r := fl.resumes[0]
	fl.mu.Unlock()
	if r.From != addrs[0] || r.To != addrs[1] || r.After != (Position{Index: 1, Seq: SeqAll}) || r.Cause == nil || !strings.Contains(r.Cause.Error(), "went silent: no change and no heartbeat for 300ms") {
		t.Fatalf("resume %+v, want from the silent manager to the next after 1, saying it went silent", r)
	}
	// On the manager that heartbeats, quiet for many intervals: it stays.
	testkit.Eventually(t, 30*time.Second, func() error {
		if n := c.mgrs[0].count("ServerStatus"); n < 4*deadBeats {
			return fmt.Errorf("%d heartbeats sent, want %d (four silences' worth)", n, 4*deadBeats)
		}
		return nil
	})
	c.log.add("after")
	fl.waitFor(t, 1)
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if got := len(fl.resumes); got != 1 || len(fl.got) != 1 || fl.got[0].Task.Name != "after" {
		t.Fatalf("%d resumes, delivered %+v; want one resume, and only the change (heartbeats are not changes)", got, fl.got)
	}
}

// A manager that does not confirm heartbeats (older than the client) is
// not watched for silence: its quiet stream is kept.
func TestEvents_NoHeartbeatNoWatch(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	release := make(chan struct{})
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
		w.Header().Set(HeaderEventsAfter, "1")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_ = json.NewEncoder(w).Encode(Change{Index: 2, Task: Task{Name: "late"}})
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(func() { old.CloseClientConnections(); old.Close() })
	cl := newTestClient(t, []string{old.Listener.Addr().String()}, ClientOptions{RetryFor: 20 * time.Second})
	fl := startFollow(t, cl, EventsOptions{After: &Position{Index: 1, Seq: SeqAll}, Heartbeat: 100 * time.Millisecond})
	// Silent for ten times what a heartbeating stream may be.
	time.AfterFunc(10*deadBeats*100*time.Millisecond, func() { close(release) })
	fl.waitFor(t, 1)
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 {
		t.Fatalf("%d requests, want 1: a stream without heartbeats was left for its silence", calls)
	}
}

// A position past the cluster's log is refused (400) and not retried on
// the other managers: it is the caller's mistake, and every manager would
// say the same. A heartbeat out of bounds is refused before any request.
func TestEvents_BeyondTheLogAndBadHeartbeat(t *testing.T) {
	c := newEventCluster(t, 2)
	c.log.add("x")
	cl := newTestClient(t, c.addrs, ClientOptions{RetryFor: time.Minute})
	start := time.Now()
	err := cl.EventsWith(testCtx(t), EventsOptions{After: &Position{Index: 99999999, Seq: SeqAll}}, func(Change) error { return nil })
	if StatusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "beyond the cluster's last index 1") {
		t.Fatalf("after 99999999: %v, want 400 naming the last index", err)
	}
	if took := time.Since(start); took > 10*time.Second || c.mgrs[1].count("Changes") != 0 {
		t.Errorf("refused after %s, %d requests to the second manager; want at once, from the first", took, c.mgrs[1].count("Changes"))
	}
	err = cl.EventsWith(testCtx(t), EventsOptions{Heartbeat: time.Millisecond}, func(Change) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "EventsOptions.Heartbeat (1ms)") || c.mgrs[0].count("Changes") != 1 {
		t.Fatalf("Heartbeat 1ms: %v, want refused before any request", err)
	}
}
