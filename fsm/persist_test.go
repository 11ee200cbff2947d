package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// Persist writes one task at a time the bytes that encoding/json's
// Encoder wrote for the whole state at once (the format is unchanged: an
// older manager restores it), with and without tasks, services, tokens.
func TestPersist_StreamsTheSameBytesAsEncodingTheWholeState(t *testing.T) {
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	var tasks []*api.Task
	for i := range 50 {
		tasks = append(tasks, &api.Task{ID: uuid.New(), Name: "web-<&>", Image: "cube-echo:latest", State: api.Running,
			Env: []string{"QUOTE=\"x\"", "HTML=<b>&</b>"}, SubmitTime: at.Add(time.Duration(50-i) * time.Second), Worker: "w1"})
	}
	full := func() *snapshot {
		return &snapshot{
			tasks:       tasks,
			workers:     []api.Node{{Name: "w2"}, {Name: "w1"}},
			tokens:      []Token{{AccessorID: uuid.New(), Name: "ci", Role: api.RoleRead, Hash: "h", CreateTime: at}},
			tokensUsed:  true,
			unconfirmed: []uuid.UUID{uuid.New(), uuid.New()},
			services:    []api.Service{{Name: "web", Count: 2}},
		}
	}
	for _, c := range []struct {
		name string
		snap *snapshot
	}{
		{"everything", full()},
		{"no tasks", &snapshot{workers: []api.Node{{Name: "w1"}}}},
		{"empty", &snapshot{}},
		{"tasks only", &snapshot{tasks: tasks}},
	} {
		t.Run(c.name, func(t *testing.T) {
			sink := &memSink{}
			if err := c.snap.Persist(sink); err != nil {
				t.Fatal(err)
			}
			// What Persist wrote before: the whole snapshotData through an Encoder.
			version := snapshotVersion
			if len(c.snap.services) == 0 {
				version = snapshotVersionNoServices
			}
			want := &bytes.Buffer{}
			d := snapshotData{Version: version, Tasks: values(refsInOrder(c.snap.tasks)), Workers: c.snap.workers, Tokens: c.snap.tokens,
				TokensUsed: c.snap.tokensUsed, Unconfirmed: c.snap.unconfirmed, Services: c.snap.services}
			if err := json.NewEncoder(want).Encode(d); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(sink.Bytes(), want.Bytes()) {
				t.Fatalf("Persist wrote\n%.600s\nwant\n%.600s", sink.Bytes(), want.Bytes())
			}
			f := New()
			if err := f.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
				t.Fatalf("restore what Persist wrote: %v", err)
			}
			if got := len(f.Tasks()); got != len(c.snap.tasks) {
				t.Fatalf("restored %d tasks, want %d", got, len(c.snap.tasks))
			}
		})
	}
}

// A sink that fails makes Persist fail and cancel it.
func TestPersist_FailingSinkIsCancelled(t *testing.T) {
	var tasks []*api.Task
	for range 2000 { // more than the write buffer holds
		tasks = append(tasks, &api.Task{ID: uuid.New(), Name: "x", Image: "cube-echo:latest"})
	}
	sink := &failingSink{}
	if err := (&snapshot{tasks: tasks}).Persist(sink); !errors.Is(err, errDiskFull) {
		t.Fatalf("Persist into a failing sink: %v, want the sink's error", err)
	}
	if !sink.cancelled {
		t.Fatal("the failing sink was not cancelled")
	}
}

var errDiskFull = errors.New("disk full")

type failingSink struct {
	memSink
	cancelled bool
}

func (s *failingSink) Write([]byte) (int, error) { return 0, errDiskFull }
func (s *failingSink) Cancel() error             { s.cancelled = true; return nil }
