package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// CmdType is the first byte of every raft log entry Cube writes. Numbers are
// append-only: never reuse or renumber one, or old logs replay wrongly.
type CmdType uint8

// IgnoreIfUnknown, set on a command type, tells an FSM that does not know the
// type to skip the entry instead of stopping. Set it on commands whose loss
// does not make the replicated state diverge in a way that matters (hints,
// annotations), so that a rolling upgrade can introduce them.
const IgnoreIfUnknown CmdType = 0x80

// The commands. Each payload is the JSON of the struct of the same name.
const (
	CmdSubmitTask   CmdType = 1                   // SubmitTask
	CmdAssignTask   CmdType = 2                   // AssignTask
	CmdReportTask   CmdType = 3                   // ReportTask
	CmdStopTask     CmdType = 4                   // StopTask
	CmdUpsertWorker CmdType = 5                   // UpsertWorker
	CmdPendingNote  CmdType = 6 | IgnoreIfUnknown // PendingNote: a hint only
	CmdRestartTask  CmdType = 7                   // RestartTask
	CmdRequeueTask  CmdType = 8                   // RequeueTask
	CmdGiveUpTask   CmdType = 9                   // GiveUpTask
	CmdDrainWorker  CmdType = 10                  // DrainWorker
)

func (c CmdType) String() string {
	switch c {
	case CmdSubmitTask:
		return "submit-task"
	case CmdAssignTask:
		return "assign-task"
	case CmdReportTask:
		return "report-task"
	case CmdStopTask:
		return "stop-task"
	case CmdUpsertWorker:
		return "upsert-worker"
	case CmdPendingNote:
		return "pending-note"
	case CmdRestartTask:
		return "restart-task"
	case CmdRequeueTask:
		return "requeue-task"
	case CmdGiveUpTask:
		return "give-up-task"
	case CmdDrainWorker:
		return "drain-worker"
	}
	return fmt.Sprintf("cmd(%#x)", uint8(c))
}

// SubmitTask adds a task, Pending, with DesiredState Running. A task whose ID
// is already stored is left as it is (a resubmission creates nothing new).
type SubmitTask struct {
	Task api.Task
	// Time is the leader's clock when it accepted the task.
	Time time.Time
}

// AssignTask places a task on a worker at a new generation, which must be
// higher than the task's current one.
type AssignTask struct {
	ID         uuid.UUID
	Worker     string
	Generation uint64
	Time       time.Time
}

// ReportTask records what a worker says about its copy of a task. A report
// for another worker or generation than the task's current placement is
// stale and refused, so a late message from an old container cannot win.
type ReportTask struct {
	Task api.Task
}

// StopTask records a stop request. A task not yet placed ends at once; a placed
// one keeps its state until its worker confirms the stop.
type StopTask struct {
	ID     uuid.UUID
	Time   time.Time
	Reason string
}

// UpsertWorker records a worker's address, capacity and liveness.
type UpsertWorker struct {
	Node api.Node
}

// PendingNote records why a Pending task is not placed yet.
type PendingNote struct {
	ID     uuid.UUID
	Reason string
}

// RestartTask places a task that failed (or, under the "always" and
// "unless-stopped" policies, ended) again, on Worker at a new Generation. It
// counts toward RestartCount when Counted; a task moved off a lost worker is
// not counted.
type RestartTask struct {
	ID         uuid.UUID
	Worker     string
	Generation uint64
	Counted    bool
	// Reason says why, for a person ("exited with code 1 after 3s").
	Reason string
	Time   time.Time
}

// RequeueTask sends a placed task back to Pending (its worker is lost), to be
// placed again by the scheduler at a higher generation.
type RequeueTask struct {
	ID     uuid.UUID
	Reason string
	Time   time.Time
}

// GiveUpTask marks a task Failed for good: the restart limit is reached or its
// policy forbids a restart. It is not restarted again.
type GiveUpTask struct {
	ID     uuid.UUID
	Reason string
	Time   time.Time
}

// DrainWorker sets or clears a worker's Drain flag (an operator's decision:
// no new placements there, its tasks move elsewhere). UpsertWorker keeps it.
type DrainWorker struct {
	Name  string
	Drain bool
}

// Encode returns the log entry for a command: its type byte, then its JSON.
func Encode(cmd any) ([]byte, error) {
	var t CmdType
	switch cmd.(type) {
	case SubmitTask, *SubmitTask:
		t = CmdSubmitTask
	case AssignTask, *AssignTask:
		t = CmdAssignTask
	case ReportTask, *ReportTask:
		t = CmdReportTask
	case StopTask, *StopTask:
		t = CmdStopTask
	case UpsertWorker, *UpsertWorker:
		t = CmdUpsertWorker
	case PendingNote, *PendingNote:
		t = CmdPendingNote
	case RestartTask, *RestartTask:
		t = CmdRestartTask
	case RequeueTask, *RequeueTask:
		t = CmdRequeueTask
	case GiveUpTask, *GiveUpTask:
		t = CmdGiveUpTask
	case DrainWorker, *DrainWorker:
		t = CmdDrainWorker
	default:
		return nil, fmt.Errorf("encode: %T is not a command", cmd)
	}
	payload, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	return append([]byte{byte(t)}, payload...), nil
}

// ErrUnknownCommand is returned by Decode for a type byte this version does
// not know.
var ErrUnknownCommand = errors.New("unknown command type")

// Decode parses a log entry into one of the command structs (a value, not a
// pointer). It never panics, whatever the bytes.
func Decode(data []byte) (any, error) {
	if len(data) == 0 {
		return nil, errors.New("decode: empty log entry")
	}
	t, payload := CmdType(data[0]), data[1:]
	var cmd any
	var err error
	switch t {
	case CmdSubmitTask:
		var c SubmitTask
		err = json.Unmarshal(payload, &c)
		cmd = c
	case CmdAssignTask:
		var c AssignTask
		err = json.Unmarshal(payload, &c)
		cmd = c
	case CmdReportTask:
		var c ReportTask
		err = json.Unmarshal(payload, &c)
		cmd = c
	case CmdStopTask:
		var c StopTask
		err = json.Unmarshal(payload, &c)
		cmd = c
	case CmdUpsertWorker:
		var c UpsertWorker
		err = json.Unmarshal(payload, &c)
		cmd = c
	case CmdPendingNote:
		var c PendingNote
		err = json.Unmarshal(payload, &c)
		cmd = c
	case CmdRestartTask:
		var c RestartTask
		err = json.Unmarshal(payload, &c)
		cmd = c
	case CmdRequeueTask:
		var c RequeueTask
		err = json.Unmarshal(payload, &c)
		cmd = c
	case CmdGiveUpTask:
		var c GiveUpTask
		err = json.Unmarshal(payload, &c)
		cmd = c
	case CmdDrainWorker:
		var c DrainWorker
		err = json.Unmarshal(payload, &c)
		cmd = c
	default:
		return nil, fmt.Errorf("decode: %w %s", ErrUnknownCommand, t)
	}
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", t, err)
	}
	return cmd, nil
}
