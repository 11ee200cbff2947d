package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
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

// command is one row of the command table: all that Encode, Decode, String
// and Apply need to know about a command type, besides its struct and its
// applier.
type command struct {
	name string
	// goType is the command's struct, which Encode and ApplyCommand are given.
	goType reflect.Type
	// decode parses a payload into the struct (a value, not a pointer).
	decode func(payload []byte) (any, error)
	// apply applies a decoded command; the caller holds the FSM's lock.
	apply func(f *FSM, cmd any) *Result
}

// commands is the one list of FSM commands; String, Encode, Decode, Apply and
// ApplyCommand all derive from it, so they cannot disagree. Adding a command
// is a constant above, its struct, its applier and one row here
// (TestCommands_Table fails if the row is missing). A map literal also
// refuses, at compile time, two rows with the same type byte.
var commands = map[CmdType]command{
	CmdSubmitTask:   row("submit-task", (*FSM).submitLocked),
	CmdAssignTask:   row("assign-task", (*FSM).assignLocked),
	CmdReportTask:   row("report-task", (*FSM).reportLocked),
	CmdStopTask:     row("stop-task", (*FSM).stopLocked),
	CmdUpsertWorker: row("upsert-worker", (*FSM).upsertWorkerLocked),
	CmdPendingNote:  row("pending-note", (*FSM).pendingNoteLocked),
	CmdRestartTask:  row("restart-task", (*FSM).restartLocked),
	CmdRequeueTask:  row("requeue-task", (*FSM).requeueLocked),
	CmdGiveUpTask:   row("give-up-task", (*FSM).giveUpLocked),
	CmdDrainWorker:  row("drain-worker", (*FSM).drainWorkerLocked),
}

// byGoType maps each command struct to its type byte: the reverse of
// commands, for Encode and ApplyCommand, which are given a struct.
var byGoType = indexByGoType(commands)

func indexByGoType(cmds map[CmdType]command) map[reflect.Type]CmdType {
	idx := make(map[reflect.Type]CmdType, len(cmds))
	for t, c := range cmds {
		idx[c.goType] = t
	}
	return idx
}

// row makes the table row of the command struct C from its name and its
// applier. Being generic, it writes the JSON decoding and the type assertion
// once for every command, where a switch repeated them per command.
func row[C any](name string, apply func(*FSM, C) *Result) command {
	return command{
		name:   name,
		goType: reflect.TypeFor[C](),
		decode: func(payload []byte) (any, error) {
			var c C
			err := json.Unmarshal(payload, &c)
			return c, err
		},
		apply: func(f *FSM, cmd any) *Result {
			c, ok := cmd.(C)
			if !ok {
				return notACommand(cmd)
			}
			return apply(f, c)
		},
	}
}

// String returns the command's name from the table, or its number for a
// type this version does not know (as an entry from a newer manager).
func (c CmdType) String() string {
	if cmd, ok := commands[c]; ok {
		return cmd.name
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

// Encode returns the log entry for a command (a struct or a pointer to
// one): its type byte, then its JSON.
func Encode(cmd any) ([]byte, error) {
	t, ok := typeOf(cmd)
	if !ok {
		return nil, fmt.Errorf("encode: %T is not a command", cmd)
	}
	payload, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	return append([]byte{byte(t)}, payload...), nil
}

// typeOf returns the type byte of a command struct or of a pointer to one.
func typeOf(cmd any) (CmdType, bool) {
	rt := reflect.TypeOf(cmd)
	if rt != nil && rt.Kind() == reflect.Pointer {
		rt = rt.Elem()
	}
	t, ok := byGoType[rt]
	return t, ok
}

// ErrUnknownCommand is returned by Decode for a type byte this version does
// not know.
var ErrUnknownCommand = errors.New("unknown command type")

// Decode parses a log entry into one of the command structs (a value, not a
// pointer). It never panics, whatever the bytes.
func Decode(data []byte) (any, error) {
	_, cmd, err := decode(data)
	return cmd, err
}

// decode reads an entry's type byte once and returns its table row with the
// parsed command, so that Apply dispatches on the row it already has.
func decode(data []byte) (command, any, error) {
	if len(data) == 0 {
		return command{}, nil, errors.New("decode: empty log entry")
	}
	t, payload := CmdType(data[0]), data[1:]
	c, ok := commands[t]
	if !ok {
		return command{}, nil, fmt.Errorf("decode: %w %s", ErrUnknownCommand, t)
	}
	cmd, err := c.decode(payload)
	if err != nil {
		return command{}, nil, fmt.Errorf("decode %s: %w", t, err)
	}
	return c, cmd, nil
}

// notACommand is the Result of applying a value that is not a command struct.
func notACommand(cmd any) *Result {
	return &Result{Err: fmt.Errorf("apply: %T is not a command", cmd)}
}
