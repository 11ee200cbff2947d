package chaos

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// Kind is what an operation did to the task registry.
type Kind string

// The operation kinds a chaos client performs.
const (
	// Submit is POST /tasks with a client-chosen task ID.
	Submit Kind = "submit"
	// Stop is DELETE /tasks/{id}.
	Stop Kind = "stop"
	// Read is a consistent GET /tasks/{id}?consistent=1.
	Read Kind = "read"

	// The service operations (Op.Service names the service); they are
	// checked against the final services (CheckServicesAcknowledged), not
	// by the linearizability check of the task registry.

	// SvcCreate is POST /services.
	SvcCreate Kind = "service-create"
	// SvcScale is POST /services/{name}/scale.
	SvcScale Kind = "service-scale"
	// SvcUpdate is PUT /services/{name} with a changed template (a new
	// version, a rolling update).
	SvcUpdate Kind = "service-update"
	// SvcDelete is DELETE /services/{name}.
	SvcDelete Kind = "service-delete"
)

// ServiceKinds are the service operations, in the report's order.
var ServiceKinds = []Kind{SvcCreate, SvcScale, SvcUpdate, SvcDelete}

// IsService reports whether k is a service operation.
func (k Kind) IsService() bool { return slices.Contains(ServiceKinds, k) }

// Outcome is what the client learned about an operation's effect.
type Outcome string

// The outcomes; the package documentation gives the rules that pick one.
const (
	// OK: the operation was answered with success (or, for a stop, 409).
	OK Outcome = "ok"
	// Fail: the operation certainly had no effect.
	Fail Outcome = "fail"
	// Unknown: the operation may or may not have had, or may still have,
	// its effect.
	Unknown Outcome = "unknown"
)

// TaskState is a task's state in the registry model.
type TaskState string

// The registry states of one task ID.
const (
	// Absent: no task with this ID was ever created.
	Absent TaskState = "absent"
	// Active: the task exists and no stop of it was committed.
	Active TaskState = "active"
	// Stopped: a stop of the task was committed (DesiredState Completed).
	Stopped TaskState = "stopped"
)

// StateOf maps a task as the API returns it to its registry state: Stopped
// when a stop was committed (DesiredState Completed), Active otherwise, also
// when the cluster gave up on the task (DesiredState Failed).
func StateOf(t api.Task) TaskState {
	if t.DesiredState == api.Completed {
		return Stopped
	}
	return Active
}

// Op is one recorded operation.
type Op struct {
	// Client is the zero-based number of the client that ran the operation.
	Client int
	// Kind and TaskID say what the operation did and to which task.
	Kind   Kind
	TaskID uuid.UUID
	// Call and Return are nanoseconds since the Recorder started, on one
	// monotonic clock: Call is taken before the request is sent, Return
	// after its answer (or error) came back.
	Call, Return int64
	// Outcome is what the client learned about the operation's effect.
	Outcome Outcome
	// Created is set on a submit answered 201 (false on 200).
	Created bool `json:",omitempty"`
	// Ended is set on a stop answered 409: the task had already ended.
	Ended bool `json:",omitempty"`
	// State is what a read observed (Absent for a 404), and Absent on a stop
	// answered 404; empty otherwise.
	State TaskState `json:",omitempty"`
	// Err is the error the operation ended with, if any.
	Err string `json:",omitempty"`

	// Service names the service of a service operation; Count is the Count
	// it asked for (create, scale, update), Version the service's version
	// in an OK answer.
	Service string `json:",omitempty"`
	Count   int    `json:",omitempty"`
	Version uint64 `json:",omitempty"`
}

// Recorder records the operations of concurrent clients on one monotonic
// clock. It is safe for concurrent use.
type Recorder struct {
	start time.Time

	mu   sync.Mutex
	ops  []Op
	done []bool // done[i]: ops[i] has ended
}

// NewRecorder returns a Recorder whose clock starts now.
func NewRecorder() *Recorder {
	return &Recorder{start: time.Now()}
}

// Now returns the Recorder's clock: nanoseconds since it started. Faults can
// be timed on it to line them up with the history.
func (r *Recorder) Now() int64 {
	return int64(time.Since(r.start))
}

// Begin records the call of an operation; call it right before sending the
// request, and one of the Pending's End methods right after the answer.
func (r *Recorder) Begin(client int, kind Kind, id uuid.UUID) *Pending {
	call := r.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	// Recorded at once as Unknown, so that an operation still in flight when
	// the history is taken counts as a write that may have been applied.
	r.ops = append(r.ops, Op{Client: client, Kind: kind, TaskID: id, Call: call, Outcome: Unknown})
	r.done = append(r.done, false)
	return &Pending{r: r, i: len(r.ops) - 1}
}

// Ops returns a copy of the history in call order. An operation that has not
// ended yet is returned as Unknown, returning now.
func (r *Recorder) Ops() []Op {
	now := r.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	ops := make([]Op, len(r.ops))
	copy(ops, r.ops)
	for i := range ops {
		if !r.done[i] {
			ops[i].Return = now
			ops[i].Err = "in flight when the history was taken"
		}
	}
	return ops
}

// BeginService records the call of a service operation on the named
// service; count is the Count it asks for (0 for a delete). End it with
// EndService.
func (r *Recorder) BeginService(client int, kind Kind, name string, count int) *Pending {
	call := r.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, Op{Client: client, Kind: kind, Service: name, Count: count, Call: call, Outcome: Unknown})
	r.done = append(r.done, false)
	return &Pending{r: r, i: len(r.ops) - 1}
}

// Pending is an operation that was called and has not returned yet. Its End
// methods are meant to be called once; later calls are ignored.
type Pending struct {
	r *Recorder
	i int
}

// EndSubmit records the answer of api.Client.SubmitTask.
func (p *Pending) EndSubmit(created bool, err error) {
	p.end(func(op *Op) {
		op.Outcome = ClassifyWrite(err)
		op.Created = err == nil && created
	}, err)
}

// EndStop records the answer of api.Client.StopTask. A 409 (the task had
// already ended) is OK with Ended set; a 404 is Fail with State Absent.
func (p *Pending) EndStop(err error) {
	p.end(func(op *Op) {
		op.Outcome = ClassifyWrite(err)
		switch {
		case op.Outcome != Fail:
		case errors.Is(err, api.ErrConflict):
			op.Outcome, op.Ended = OK, true
		case errors.Is(err, api.ErrNotFound):
			op.State = Absent
		}
	}, err)
}

// EndRead records the answer of a consistent api.Client.Task: the task's
// registry state, Absent on a 404, and Fail (dropped from the check) on any
// other error.
func (p *Pending) EndRead(t api.Task, err error) {
	p.end(func(op *Op) {
		switch {
		case err == nil:
			op.Outcome, op.State = OK, StateOf(t)
		case errors.Is(err, api.ErrNotFound):
			op.Outcome, op.State = OK, Absent
		default:
			op.Outcome = Fail
		}
	}, err)
}

// EndService records the answer of a service operation: st is the
// service's status in the answer (its Version is kept on success). The
// outcome is ClassifyWrite's, as for a task: a 503 or a timeout is
// Unknown; a 404 is Fail with State Absent.
func (p *Pending) EndService(st api.ServiceStatus, err error) {
	p.end(func(op *Op) {
		op.Outcome = ClassifyWrite(err)
		switch {
		case op.Outcome == OK:
			op.Version = st.Version
		case errors.Is(err, api.ErrNotFound):
			op.State = Absent
		}
	}, err)
}

// end stamps the return time and lets fill set the outcome.
func (p *Pending) end(fill func(*Op), err error) {
	ret := p.r.Now()
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	if p.r.done[p.i] {
		return
	}
	p.r.done[p.i] = true
	op := &p.r.ops[p.i]
	op.Return = ret
	if err != nil {
		op.Err = err.Error()
	}
	fill(op)
}

// ClassifyWrite returns what an error of a write (submit or stop) through
// the manager API says about its effect: OK for nil, Fail when the write
// certainly had no effect, Unknown otherwise. The order of the cases
// matters: an error that may wrap both ErrUnknownOutcome and ErrNotLeader
// (leadership lost after the write was appended) is Unknown.
func ClassifyWrite(err error) Outcome {
	var (
		verr *api.ValidationError
		serr *api.StatusError
	)
	switch {
	case err == nil:
		return OK
	case errors.Is(err, api.ErrUnknownOutcome):
		return Unknown
	case errors.Is(err, api.ErrNotLeader):
		// Only an in-process ManagerService returns it bare: the manager
		// refused before appending. Over HTTP it arrives as a 503.
		return Fail
	case errors.Is(err, api.ErrUnavailable):
		// The client retried 503s for a while; any attempt may have been
		// appended before leadership moved.
		return Unknown
	case errors.As(err, &verr), errors.Is(err, api.ErrNotFound), errors.Is(err, api.ErrConflict):
		return Fail
	case errors.As(err, &serr) && serr.StatusCode >= http.StatusBadRequest && serr.StatusCode < http.StatusInternalServerError:
		return Fail
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return Unknown
	}
	// Connection reset after send, a 5xx, an undecodable 2xx: the write
	// may have been applied.
	return Unknown
}
