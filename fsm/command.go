package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
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
	// Token commands change who may use the API: losing one would let the
	// managers disagree on who is authenticated, so none is ignorable.
	CmdCreateToken    CmdType = 11 // CreateToken
	CmdDeleteToken    CmdType = 12 // DeleteToken
	CmdBootstrapToken CmdType = 13 // BootstrapToken
	// CollectGarbage removes state for good; a manager that skipped it
	// would keep tasks the others dropped, so it is not ignorable.
	CmdCollectGarbage CmdType = 14 // CollectGarbage
	// Service commands change what the leader keeps running: a manager
	// that skipped one would run (or stop) other tasks after a failover,
	// so none is ignorable (services.go).
	CmdPutService    CmdType = 15 // PutService
	CmdDeleteService CmdType = 16 // DeleteService
	CmdSetRollout    CmdType = 17 // SetRollout
	// SetHealth records a health check's verdict: an annotation (Healthy
	// and an entry of History) that decides nothing, so an older manager
	// may skip it.
	CmdSetHealth CmdType = 18 | IgnoreIfUnknown // SetHealth
	// ReportTasks is many ReportTask in one entry; a manager that skipped
	// it would miss the reports, so it is not ignorable.
	CmdReportTasks CmdType = 19 // ReportTasks
	// AssignTasks is many AssignTask in one entry (the placements of one
	// pass of the leader); not ignorable, like AssignTask.
	CmdAssignTasks CmdType = 20 // AssignTasks
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

	CmdCreateToken:    row("create-token", (*FSM).createTokenLocked),
	CmdDeleteToken:    row("delete-token", (*FSM).deleteTokenLocked),
	CmdBootstrapToken: row("bootstrap-token", (*FSM).bootstrapTokenLocked),

	CmdCollectGarbage: row("collect-garbage", (*FSM).collectGarbageLocked),

	CmdPutService:    row("put-service", (*FSM).putServiceLocked),
	CmdDeleteService: row("delete-service", (*FSM).deleteServiceLocked),
	CmdSetRollout:    row("set-rollout", (*FSM).setRolloutLocked),

	CmdSetHealth: row("set-health", (*FSM).setHealthLocked),

	CmdReportTasks: row("report-tasks", (*FSM).reportTasksLocked),
	CmdAssignTasks: row("assign-tasks", (*FSM).assignTasksLocked),
}

// taskCommands change tasks only (each change noted where the task is
// stored); any other command that changes the state makes the leader's
// next pass read everything (FSM.TakeChanges).
var taskCommands = map[CmdType]bool{
	CmdSubmitTask: true, CmdAssignTask: true, CmdReportTask: true, CmdStopTask: true,
	CmdPendingNote: true, CmdRestartTask: true, CmdRequeueTask: true, CmdGiveUpTask: true,
	CmdSetHealth: true, CmdCollectGarbage: true, CmdReportTasks: true, CmdAssignTasks: true, // its removed workers note their own change (gc.go)
	// A worker's record: a change of the tasks placed on it (workerChangedLocked).
	CmdUpsertWorker: true, CmdDrainWorker: true,
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
	if cmd, ok := commands[c]; ok && c.Number() <= MaxCommand {
		return cmd.name
	}
	return fmt.Sprintf("cmd(%#x)", uint8(c))
}

// Number is the command's number without the IgnoreIfUnknown bit: the
// number managers compare to tell whether they all know a command.
func (c CmdType) Number() CmdType { return c &^ IgnoreIfUnknown }

// Ignorable reports whether an FSM that does not know the command may skip
// it (the IgnoreIfUnknown bit).
func (c CmdType) Ignorable() bool { return c&IgnoreIfUnknown != 0 }

// maxCommand, when set at build time, makes this build apply only the
// commands numbered up to it, exactly as a build whose table ended there:
//
//	go build -ldflags "-X github.com/cube-orch/cube/fsm.maxCommand=11" ./cmd/cube
//
// builds a manager one version behind (no delete-token, no bootstrap-token),
// for the tests of rolling upgrades. It is empty in normal builds.
var maxCommand string

// MaxCommand is the highest command number this build applies (and
// advertises to the other managers, which propose nothing higher until
// every voter knows it): the table's highest, or maxCommand if set lower.
var MaxCommand = limitCommands(maxCommand, commands)

// limitCommands returns the highest number in cmds, lowered to limit when
// limit is set. A limit that is not a number from 1 to the highest is a
// broken build, not an input: it panics at start-up with the reason.
func limitCommands(limit string, cmds map[CmdType]command) CmdType {
	var highest CmdType
	for t := range cmds {
		highest = max(highest, t.Number())
	}
	if limit == "" {
		return highest
	}
	n, err := strconv.ParseUint(limit, 10, 8)
	if err != nil || n == 0 || CmdType(n) > highest {
		panic(fmt.Sprintf("fsm: build setting maxCommand=%q must be a command number from 1 to %d", limit, highest))
	}
	return CmdType(n)
}

// SubmitTask adds a task, Pending, with DesiredState Running. A task whose ID
// is already stored is left as it is (a resubmission creates nothing new).
type SubmitTask struct {
	Task api.Task
	// Time is the leader's clock when it accepted the task.
	Time time.Time
	// MaxTasks, if positive, is the state quota: a new task is refused
	// (api.ErrQuota) while the state holds that many tasks. The leader
	// writes its setting into the command, so every manager decides alike.
	MaxTasks int `json:",omitempty"`
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
	// Time is the leader's clock when it took the report, for the task's
	// History; entries written before it existed have none.
	Time time.Time `json:",omitempty"`
}

// ReportTasks is a batch of reports, applied in order as as many
// ReportTask with the same Time: a worker's reporter sends the records it
// has coalesced in one request (POST /reports/batch), and the leader
// commits them in one entry instead of one each. A report that does not
// apply (another placement, an unknown task) is skipped, as ReportTask's
// error is dropped; the others apply.
type ReportTasks struct {
	Tasks []api.Task
	Time  time.Time `json:",omitempty"`
}

// AssignTasks is a batch of assignments, applied in order as as many
// AssignTask: the placements one pass of the leader decided, committed in
// one entry instead of one each. Each applies or fails on its own
// (Result.Each).
type AssignTasks struct {
	Assigns []AssignTask
}

// at is the time of the report's History entry: its Time, or for an
// entry written before ReportTask had one, the worker's time of the
// container's start (Running) or end.
func (c ReportTask) at() time.Time {
	switch {
	case !c.Time.IsZero():
		return c.Time
	case c.Task.State == api.Running:
		return c.Task.StartTime
	case c.Task.State.Terminal():
		return c.Task.FinishTime
	}
	return time.Time{}
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
	// Time is the leader's clock, for the task's History; older entries
	// have none.
	Time time.Time `json:",omitempty"`
}

// SetHealth records the verdict of a task's health check on its placement
// at Generation: Healthy once it passed, false once it failed Threshold
// times in a row (Reason says what the check saw). A verdict about another
// placement, or about a task that is not Running, changes nothing.
type SetHealth struct {
	ID         uuid.UUID
	Generation uint64
	Healthy    bool
	Reason     string `json:",omitempty"`
	Time       time.Time
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

// CreateToken stores a token: its hash, never its secret (the leader
// generates the secret, hashes it, and shows the secret to the caller only).
// A second token with the same accessor or hash is refused, as are an empty
// name and a role that is not one of the three.
type CreateToken struct {
	AccessorID uuid.UUID
	Name       string
	Role       api.Role
	// Hash is security.HashToken of the secret: 64 lowercase hex digits.
	Hash       string
	CreateTime time.Time
}

// DeleteToken deletes a token. An accessor no token has is a no-op (a
// retried deletion), not an error.
type DeleteToken struct {
	AccessorID uuid.UUID
}

// BootstrapToken stores the cluster's first operator token, named
// "bootstrap", only if the token table has never held a token: every leader
// configured with a bootstrap hash writes it on gaining leadership, and all
// but the first are no-ops. Once any token has been stored it never applies
// again, so deleting the bootstrap token is for good.
type BootstrapToken struct {
	AccessorID uuid.UUID
	Hash       string
	CreateTime time.Time
}

// CollectGarbage removes finished tasks and departed workers that the leader
// chose (by age, or all of them for a forced collection). Apply checks each
// again and skips any that no longer qualifies: a task that is not
// api.Task.Finished, or whose container's end is not confirmed yet; a
// worker that is not dead or left, or on which a live task is placed. IDs
// the state does not hold are skipped too, so a retried command is harmless.
type CollectGarbage struct {
	Tasks   []uuid.UUID `json:",omitempty"`
	Workers []string    `json:",omitempty"`
}

// Encode returns the log entry for a command (a struct or a pointer to
// one): its type byte, then its JSON.
func Encode(cmd any) ([]byte, error) {
	t, ok := typeOf(cmd)
	if !ok {
		return nil, fmt.Errorf("encode: %T is not a command", cmd)
	}
	if t.Number() > MaxCommand {
		return nil, fmt.Errorf("encode %s: %w: this build applies command types up to %d", commands[t].name, ErrUnknownCommand, MaxCommand)
	}
	payload, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	return append([]byte{byte(t)}, payload...), nil
}

// TypeOf returns the type byte of a command struct or of a pointer to one,
// whether this build applies it or not (false for anything else).
func TypeOf(cmd any) (CmdType, bool) { return typeOf(cmd) }

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
	_, cmd, err := decode(data, MaxCommand)
	return cmd, err
}

// decode reads an entry's type byte once and returns its table row with the
// parsed command, so that Apply dispatches on the row it already has. A
// type numbered above limit is unknown, as in a build whose table ends there.
func decode(data []byte, limit CmdType) (command, any, error) {
	if len(data) == 0 {
		return command{}, nil, errors.New("decode: empty log entry")
	}
	t, payload := CmdType(data[0]), data[1:]
	c, ok := commands[t]
	if !ok || t.Number() > limit {
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
