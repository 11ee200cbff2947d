package chaos

import (
	"fmt"
	"math"
	"strings"

	"github.com/anishathalye/porcupine"
	"github.com/google/uuid"
)

// input is a porcupine operation's input: what was asked, of which task.
type input struct {
	Kind Kind
	ID   uuid.UUID
}

// output is a porcupine operation's output: what the client was told.
type output struct {
	Outcome Outcome
	Created bool
	Ended   bool
	State   TaskState
}

// stateSet is the model's state for one task ID: the set of registry states
// the task may be in. Some answers leave two possibilities (an unknown
// outcome; a 409 on stop), and a set keeps the model deterministic, which
// porcupine's Model requires; it is the power-set construction of
// porcupine.NondeterministicModel, done by hand on three bits.
type stateSet uint8

const (
	setAbsent stateSet = 1 << iota
	setActive
	setStopped
)

// bit returns the one-element set of s.
func bit(s TaskState) stateSet {
	switch s {
	case Absent:
		return setAbsent
	case Active:
		return setActive
	case Stopped:
		return setStopped
	}
	return 0
}

// String lists the set's states, "{absent|active}".
func (s stateSet) String() string {
	var names []string
	for _, t := range []TaskState{Absent, Active, Stopped} {
		if s&bit(t) != 0 {
			names = append(names, string(t))
		}
	}
	return "{" + strings.Join(names, "|") + "}"
}

// RegistryModel returns the porcupine model of the task registry,
// partitioned by task ID. The transitions, from one registry state:
//
//	submit 201          absent → active; illegal otherwise
//	submit 200          absent → active (a retried attempt created it); else unchanged
//	submit unknown      absent → absent or active; else unchanged
//	stop 200            active, stopped → stopped; illegal from absent
//	stop 409 (Ended)    active → active or stopped; stopped → stopped; illegal from absent
//	stop unknown        active → active or stopped; else unchanged
//	stop 404            absent → absent; illegal otherwise
//	read X              legal only in state X; unchanged
func RegistryModel() porcupine.Model {
	return porcupine.Model{
		Partition: partitionByTask,
		Init:      func() any { return setAbsent },
		Step: func(state, in, out any) (bool, any) {
			var next stateSet
			for _, s := range []TaskState{Absent, Active, Stopped} {
				if state.(stateSet)&bit(s) != 0 {
					next |= step(s, in.(input), out.(output))
				}
			}
			return next != 0, next
		},
		Equal: func(a, b any) bool { return a.(stateSet) == b.(stateSet) },
		Hash:  func(s any) uint64 { return uint64(s.(stateSet)) },
		DescribeOperation: func(in, out any) string {
			return describe(in.(input), out.(output))
		},
		DescribeState: func(s any) string { return s.(stateSet).String() },
	}
}

// step returns the states a task in state s may be in after an operation.
// An empty set means the operation could not have been answered so in s.
func step(s TaskState, in input, out output) stateSet {
	switch in.Kind {
	case Submit:
		switch {
		case out.Outcome == Unknown && s == Absent:
			return setAbsent | setActive
		case out.Outcome == Unknown:
			return bit(s)
		case s == Absent:
			return setActive
		case out.Created:
			return 0 // created twice
		}
		return bit(s)
	case Stop:
		switch {
		case out.Outcome == Fail:
			if s == Absent && out.State == Absent {
				return setAbsent
			}
			return 0
		case s == Absent && out.Outcome == Unknown:
			return setAbsent
		case s == Absent:
			return 0 // acknowledged a stop of a task that did not exist
		case s == Active && (out.Outcome == Unknown || out.Ended):
			return setActive | setStopped
		}
		return setStopped
	case Read:
		if out.State == s {
			return bit(s)
		}
		return 0
	}
	return 0
}

// describe renders an operation for the visualisation.
func describe(in input, out output) string {
	var res string
	switch {
	case out.Outcome == Unknown:
		res = "?"
	case in.Kind == Submit && out.Created:
		res = "201 created"
	case in.Kind == Submit:
		res = "200 exists"
	case in.Kind == Stop && out.Ended:
		res = "409 ended"
	case in.Kind == Stop && out.Outcome == Fail:
		res = "404"
	case in.Kind == Stop:
		res = "200"
	default:
		res = string(out.State)
	}
	return fmt.Sprintf("%s(%s) → %s", in.Kind, in.ID.String()[:8], res)
}

// partitionByTask splits a history into one sub-history per task ID, in the
// order the IDs first appear.
func partitionByTask(history []porcupine.Operation) [][]porcupine.Operation {
	index := make(map[uuid.UUID]int)
	var parts [][]porcupine.Operation
	for _, op := range history {
		id := op.Input.(input).ID
		i, ok := index[id]
		if !ok {
			i = len(parts)
			index[id] = i
			parts = append(parts, nil)
		}
		parts[i] = append(parts[i], op)
	}
	return parts
}

// operations turns recorded ops into a porcupine history: failed operations
// and failed reads are left out (they had no effect and observed nothing),
// except a stop answered 404, which observed an absent task; an unknown
// write returns at math.MaxInt64, because it may take effect at any time
// after its call.
func operations(ops []Op) []porcupine.Operation {
	var hist []porcupine.Operation
	for _, op := range ops {
		if op.Kind.IsService() {
			continue // checked against the final services, not the registry
		}
		ret := op.Return
		switch {
		case op.Outcome == OK:
		case op.Outcome == Unknown && op.Kind != Read:
			ret = math.MaxInt64
		case op.Outcome == Fail && op.Kind == Stop && op.State == Absent:
		default:
			continue
		}
		hist = append(hist, porcupine.Operation{
			ClientId: op.Client,
			Input:    input{Kind: op.Kind, ID: op.TaskID},
			Call:     op.Call,
			Output:   output{Outcome: op.Outcome, Created: op.Created, Ended: op.Ended, State: op.State},
			Return:   ret,
			Metadata: op.Err,
		})
	}
	return hist
}
