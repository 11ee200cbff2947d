package chaos

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

func TestClassifyWrite(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want Outcome
	}{
		{"nil", nil, OK},
		{"validation", fmt.Errorf("submit task x: %w", &api.ValidationError{Msg: "Image is required"}), Fail},
		{"not found", fmt.Errorf("stop task x: %w", api.ErrNotFound), Fail},
		{"conflict", api.ErrConflict, Fail},
		{"not leader, before append", api.ErrNotLeader, Fail},
		{"not leader after append", fmt.Errorf("apply: %w: %w", api.ErrUnknownOutcome, api.ErrNotLeader), Unknown},
		{"unknown outcome", api.ErrUnknownOutcome, Unknown},
		{"unavailable", fmt.Errorf("POST /tasks: %w", api.ErrUnavailable), Unknown},
		{"deadline", fmt.Errorf("POST /tasks: %w", context.DeadlineExceeded), Unknown},
		{"canceled", context.Canceled, Unknown},
		{"connection reset", errors.New("read tcp 127.0.0.1:1->127.0.0.1:2: connection reset by peer"), Unknown},
		{"other 4xx", &api.StatusError{StatusCode: http.StatusMethodNotAllowed, Message: "no"}, Fail},
		{"500", &api.StatusError{StatusCode: http.StatusInternalServerError, Message: "boom"}, Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ClassifyWrite(tt.err); got != tt.want {
				t.Errorf("ClassifyWrite(%v) = %s, want %s", tt.err, got, tt.want)
			}
		})
	}
}

// TestPending_End drives the real api.Client against canned answers, so the
// classification is checked on the errors the client really returns.
func TestPending_End(t *testing.T) {
	id := uuid.New()
	tests := []struct {
		name   string
		kind   Kind
		status int
		body   any
		want   Op // Outcome, Created, Ended, State
	}{
		{"submit 201", Submit, http.StatusCreated, api.Task{ID: id}, Op{Outcome: OK, Created: true}},
		{"submit 200", Submit, http.StatusOK, api.Task{ID: id}, Op{Outcome: OK}},
		{"submit 400", Submit, http.StatusBadRequest, api.ErrResponse{HTTPStatusCode: 400, Message: "Image is required"}, Op{Outcome: Fail}},
		{"submit 503", Submit, http.StatusServiceUnavailable, api.ErrResponse{HTTPStatusCode: 503, Message: "outcome unknown"}, Op{Outcome: Unknown}},
		{"stop 200", Stop, http.StatusOK, api.Task{ID: id, DesiredState: api.Completed}, Op{Outcome: OK}},
		{"stop 409", Stop, http.StatusConflict, api.ErrResponse{HTTPStatusCode: 409, Message: "task already ended (Failed): conflict"}, Op{Outcome: OK, Ended: true}},
		{"stop 404", Stop, http.StatusNotFound, api.ErrResponse{HTTPStatusCode: 404, Message: "not found"}, Op{Outcome: Fail, State: Absent}},
		{"stop 503", Stop, http.StatusServiceUnavailable, api.ErrResponse{HTTPStatusCode: 503, Message: "no leader"}, Op{Outcome: Unknown}},
		{"read running", Read, http.StatusOK, api.Task{ID: id, DesiredState: api.Running, State: api.Running}, Op{Outcome: OK, State: Active}},
		{"read given up", Read, http.StatusOK, api.Task{ID: id, DesiredState: api.Failed, State: api.Failed}, Op{Outcome: OK, State: Active}},
		{"read stopped", Read, http.StatusOK, api.Task{ID: id, DesiredState: api.Completed, State: api.Running}, Op{Outcome: OK, State: Stopped}},
		{"read 404", Read, http.StatusNotFound, api.ErrResponse{HTTPStatusCode: 404, Message: "not found"}, Op{Outcome: OK, State: Absent}},
		{"read 503", Read, http.StatusServiceUnavailable, api.ErrResponse{HTTPStatusCode: 503, Message: "no leader"}, Op{Outcome: Fail}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tt.status)
				_, _ = w.Write(api.EncodeJSON(tt.body))
			}))
			defer srv.Close()
			c, err := api.NewClient([]string{srv.URL}, api.ClientOptions{Timeout: time.Second, RetryFor: 30 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()

			rec := NewRecorder()
			p := rec.Begin(3, tt.kind, id)
			switch tt.kind {
			case Submit:
				_, created, err := c.SubmitTask(ctx, api.TaskEvent{State: api.Scheduled, Task: api.Task{ID: id, Image: "cube-echo:latest"}})
				p.EndSubmit(created, err)
			case Stop:
				_, err := c.StopTask(ctx, id)
				p.EndStop(err)
			case Read:
				task, err := c.Task(ctx, id, true)
				p.EndRead(task, err)
			}
			ops := rec.Ops()
			if len(ops) != 1 {
				t.Fatalf("Ops() = %+v, want one op", ops)
			}
			got := ops[0]
			if got.Outcome != tt.want.Outcome || got.Created != tt.want.Created || got.Ended != tt.want.Ended || got.State != tt.want.State {
				t.Errorf("answer %d %+v recorded as %+v, want outcome %s created %t ended %t state %q",
					tt.status, tt.body, got, tt.want.Outcome, tt.want.Created, tt.want.Ended, tt.want.State)
			}
			if got.Client != 3 || got.Kind != tt.kind || got.TaskID != id || got.Call > got.Return {
				t.Errorf("op %+v: want client 3, kind %s, task %s, Call ≤ Return", got, tt.kind, id)
			}
		})
	}
}

func TestPending_EndConnectionRefused(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close() // nothing listens there any more
	c, err := api.NewClient([]string{addr}, api.ClientOptions{Timeout: time.Second, RetryFor: 30 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rec := NewRecorder()
	p := rec.Begin(0, Stop, idA)
	_, err = c.StopTask(context.Background(), idA)
	p.EndStop(err)
	if got := rec.Ops()[0]; got.Outcome != Unknown || got.Err == "" {
		t.Errorf("stop against a closed port recorded as %+v, want Unknown with its error", got)
	}
}

// TestRecorder_Concurrent records from many goroutines (run with -race) and
// checks that every op is kept once, on one clock, with the first End
// winning, and that an op still in flight is returned as Unknown.
func TestRecorder_Concurrent(t *testing.T) {
	rec := NewRecorder()
	const clients, perClient = 8, 50
	inFlight := rec.Begin(clients, Stop, idA)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for range perClient {
				p := rec.Begin(c, Submit, uuid.New())
				p.EndSubmit(true, nil)
				p.EndSubmit(false, api.ErrUnavailable) // ignored: already ended
			}
		})
	}
	wg.Wait()

	ops := rec.Ops()
	if len(ops) != clients*perClient+1 {
		t.Fatalf("Ops() has %d ops, want %d", len(ops), clients*perClient+1)
	}
	for _, op := range ops[1:] {
		if op.Call > op.Return {
			t.Errorf("op %+v returns before its call", op)
		}
		if op.Kind == Submit && (op.Outcome != OK || !op.Created) {
			t.Errorf("op %+v: a second End overwrote the first", op)
		}
	}
	first := ops[0]
	if first.Kind != Stop || first.Outcome != Unknown || first.Err == "" || first.Call > first.Return {
		t.Errorf("in-flight op = %+v, want an Unknown stop saying it was in flight", first)
	}
	inFlight.EndStop(nil)
	if got := rec.Ops()[0]; got.Outcome != OK || got.Err != "" {
		t.Errorf("op after its End = %+v, want OK without error", got)
	}
}
