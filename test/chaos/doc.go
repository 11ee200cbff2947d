// Package chaos is the checker half of Cube's chaos tests: it records what
// concurrent clients did to the manager API and what they were told
// (history.go), checks that history for linearizability of the task registry
// with porcupine (model.go), checks the state the cluster converged to after
// the faults were healed (check.go), and reports the run (report.go).
//
// # Classification of answers
//
// Every write is recorded with one of three outcomes, and the rules are
// deliberately conservative: a write is Fail only when it certainly had no
// effect, and Unknown whenever it may have had one.
//
//   - OK: a 2xx answer. A submit answered 201 has Created set; 200 means the
//     task existed when the call ended.
//   - Fail: a 4xx answer (*api.ValidationError, api.ErrNotFound,
//     api.ErrConflict, any other *api.StatusError in 400..499), or
//     api.ErrNotLeader alone (a manager refused before appending anything).
//     Such writes are left out of the linearizability check, except a stop
//     answered 404, which is kept as an observation that the task was absent.
//   - Unknown: api.ErrUnknownOutcome, api.ErrUnavailable (a 502/503/504; the
//     Go client retries these, and any attempt may have been appended to the
//     log), context deadlines and cancellations, connection errors, 5xx, and
//     a 2xx whose body could not be decoded. In the porcupine history such a
//     write returns at math.MaxInt64 (it may take effect any time after its
//     call) and the model accepts it both applied and not applied.
//
// Two answers of stop and submit need care because the Go client retries a
// call, with the same task ID, after an attempt whose answer was lost:
//
//   - A stop answered 409 (api.ErrConflict, "already ended") is recorded as
//     OK with Ended set: the task existed and had ended, either on its own
//     (Failed, or exited) or because an earlier attempt of this very call
//     applied the stop. The model lets it leave an active task active or
//     stopped, and the final-state check does not demand the stop's effect.
//   - A submit answered 200 (Created false) is legal even from "absent":
//     the first attempt may have created the task and lost its answer. What
//     the answer guarantees is that the task exists afterwards. A second 201
//     for the same ID, by any client, is always a violation.
//
// Reads must be consistent reads (?consistent=1). A read that ends in an
// error other than 404 is dropped: it has no effect and observed nothing.
//
// # Registry model
//
// The registry maps each task ID to absent, active or stopped; the history is
// partitioned by task ID, so each ID is checked on its own. A task is stopped
// when its DesiredState is Completed (a stop was committed) and active
// otherwise, including a task the cluster gave up on (DesiredState Failed):
// it exists and no user stopped it.
package chaos
