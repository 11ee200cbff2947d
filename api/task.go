package api

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// State is a task's lifecycle state. The integers are the seed's and are part of
// the wire contract: never renumber them.
type State int

// The task states, with the seed's integer values.
const (
	// Pending: accepted by the manager, not yet placed on a worker.
	Pending State = iota
	// Scheduled: placed on a worker, container not (yet) running.
	Scheduled
	// Running: the container is running.
	Running
	// Completed: the task ended normally (exit code 0) or was stopped on request.
	Completed
	// Failed: the task ended abnormally; Task.Reason says why.
	Failed
)

var stateNames = [...]string{"Pending", "Scheduled", "Running", "Completed", "Failed"}

// String returns the state's name as the seed prints it.
func (s State) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return fmt.Sprintf("State(%d)", int(s))
	}
	return stateNames[s]
}

// Valid reports whether s is one of the five known states.
func (s State) Valid() bool { return s >= Pending && s <= Failed }

// Terminal reports whether a task in state s will not run again without a new
// placement (a higher generation).
func (s State) Terminal() bool { return s == Completed || s == Failed }

// stateTransitions is the seed's transition table, extended (never narrowed) so
// that a stop is allowed from every non-terminal state, a task can fail before
// it was placed (for example when its image does not exist), and a task whose
// worker died goes back to Pending to be placed again.
var stateTransitions = map[State][]State{
	Pending:   {Pending, Scheduled, Completed, Failed},
	Scheduled: {Scheduled, Running, Completed, Failed, Pending},
	Running:   {Running, Completed, Failed, Scheduled, Pending},
	Completed: {},
	Failed:    {Scheduled},
}

// ValidStateTransition reports whether a task may move from src to dst.
func ValidStateTransition(src, dst State) bool {
	for _, s := range stateTransitions[src] {
		if s == dst {
			return true
		}
	}
	return false
}

// PortSet is the set of container ports a task exposes, keyed "port/proto"
// ("7777/tcp"), as Docker's nat.PortSet encodes it.
type PortSet map[string]struct{}

// PortBinding is one host address a container port is published on.
type PortBinding struct {
	HostIp   string //nolint:revive // the seed's and Docker's JSON name
	HostPort string
}

// PortMap maps a container port ("7777/tcp") to the host addresses it is
// published on, as Docker's nat.PortMap encodes it.
type PortMap map[string][]PortBinding

// Task is the unit of work: one container. Every seed field keeps its JSON name
// and meaning; the fields after RestartCount are Cube's additions.
type Task struct {
	// ID identifies the task everywhere; chosen by the client (or generated).
	ID uuid.UUID
	// ContainerID is the Docker container currently backing the task.
	ContainerID string
	// Name is a human-readable label; it need not be unique.
	Name string
	// State is the task's observed state.
	State State
	// Image is the container image, for example "cube-echo:latest".
	Image string
	// Cpu is the CPU the task needs, in cores (0.5 = half a core); 0 means no limit.
	Cpu float64
	// Memory is the memory the task needs, in bytes; 0 means no limit.
	Memory int64
	// Disk is the disk space the task needs, in bytes; used for placement only.
	Disk int64
	// ExposedPorts are the container ports to publish ("7777/tcp").
	ExposedPorts PortSet
	// HostPorts are the host addresses the exposed ports were published on; set
	// by the worker once the container runs.
	HostPorts PortMap
	// PortBindings pins a container port to a host port ("7777/tcp": "7777");
	// ports not named here get a random host port.
	PortBindings map[string]string
	// RestartPolicy is Cube's (never Docker's): "no", "on-failure" (the default
	// when empty), "always" or "unless-stopped".
	RestartPolicy string
	// StartTime is when the current container started.
	StartTime time.Time
	// FinishTime is when the current container ended.
	FinishTime time.Time
	// HealthCheck is the HTTP path the manager probes ("/health").
	HealthCheck string
	// RestartCount counts restarts of the task so far.
	RestartCount int

	// Env is the container's environment, "KEY=VALUE" entries.
	Env []string `json:",omitempty"`
	// Cmd overrides the image's command (its arguments, for an ENTRYPOINT image).
	Cmd []string `json:",omitempty"`
	// Worker is the name of the worker the task is placed on.
	Worker string `json:",omitempty"`
	// Generation grows on every (re)placement of the task. A worker refuses a
	// generation lower than the one it holds, so a stale instruction can never
	// win over a newer one.
	Generation uint64
	// ExitCode is the exit code of the last container that ended.
	ExitCode int
	// Reason says, for a person, why the task last failed or ended, or why a
	// Pending task is not placed yet.
	Reason string `json:",omitempty"`
	// HealthCheckPort is the container port ("7777/tcp") whose published host
	// port is checked; empty: the lowest exposed port.
	HealthCheckPort string `json:",omitempty"`
	// HealthCheckInterval, HealthCheckTimeout and HealthCheckGrace are Go
	// durations ("1s"): time between checks, bound on one check, and the
	// start-up time during which failures do not count. Empty: defaults.
	HealthCheckInterval string `json:",omitempty"`
	HealthCheckTimeout  string `json:",omitempty"`
	HealthCheckGrace    string `json:",omitempty"`
	// HealthCheckThreshold is the number of consecutive failed checks after
	// which the task is restarted; 0: the default.
	HealthCheckThreshold int `json:",omitempty"`
	// LastWorker is the worker of the placement before the current one, kept
	// when a task is requeued or moved, for a person following its history.
	LastWorker string `json:",omitempty"`
	// MaxRestarts bounds RestartCount: after that many restarts a failing task
	// is Failed for good. 0: the default (3, as in the seed); -1: no limit.
	MaxRestarts int `json:",omitempty"`

	// Privileged, NetworkMode, Mounts and CapAdd ask for more than an
	// ordinary container. A worker runs such a task only if its
	// configuration allows each thing asked (cube worker --allow-privileged,
	// --allow-host-network, --allow-mount, --allow-cap); the leader places
	// it only on such a worker, and it stays Pending with the reason while
	// there is none.
	//
	// Privileged runs the container in Docker's privileged mode.
	Privileged bool `json:",omitempty"`
	// NetworkMode is "" (Docker's default bridge) or "host" (the host's
	// network stack; PortBindings do not apply).
	NetworkMode string `json:",omitempty"`
	// Mounts bind host paths into the container, in Docker's bind syntax:
	// "/host/path:/container/path", optionally with ":ro". Both paths are
	// absolute, without "..".
	Mounts []string `json:",omitempty"`
	// CapAdd adds Linux capabilities, named as in NET_ADMIN (upper-case,
	// without CAP_). The capabilities Docker grants every container need no
	// allowance.
	CapAdd []string `json:",omitempty"`

	// Constraints must all hold on a worker's labels for the task to be
	// placed there ("zone==a", "disk!=hdd"; see ParseConstraint); Prefer
	// ranks the workers that meet them. A task no worker meets stays
	// Pending with the reason. A service's tasks carry the service's.
	Constraints []string `json:",omitempty"`
	Prefer      []string `json:",omitempty"`
	// Service and ServiceVersion name the service and the version of its
	// template a task was made from; empty for a task submitted on its own.
	// Set by the leader. The scheduler spreads the tasks of one service
	// over different workers as far as it can.
	Service        string `json:",omitempty"`
	ServiceVersion uint64 `json:",omitempty"`

	// DesiredState is what the cluster drives the task toward: Running, or
	// Completed once a stop was requested. Set by the manager.
	DesiredState State
	// SubmitTime is when the manager accepted the task.
	SubmitTime time.Time

	// Healthy is set once the task's current placement has passed its
	// health check (the leader's verdict, committed like every change), and
	// cleared when that placement fails its check, ends or is replaced.
	// It stays false for a task without a HealthCheck: for such a task,
	// Running is all Cube knows. Set by the cluster.
	Healthy bool `json:",omitempty"`
	// History is what happened to the task, oldest first: an entry for each
	// committed change of its State, DesiredState, Worker, Generation,
	// RestartCount or Healthy, at most MaxTaskHistory of them (the oldest
	// drop off). Every manager holds the same History: its times come from
	// the committed commands, never from the applying manager's clock. Set
	// by the cluster; a submission's is ignored.
	History []TaskTransition `json:",omitempty"`
}

// The reasons of the History entries of health verdicts (SetHealth); a
// failed one is followed by ": " and what the check saw.
const (
	ReasonHealthPassed = "passed its health check"
	ReasonHealthFailed = "health check failed"
)

// MaxTaskHistory is how many entries a task's History keeps.
const MaxTaskHistory = 20

// MaxTransitionReason bounds the Reason of a History entry, in bytes; a
// longer one is cut (at a character boundary, ending in "…"). With
// MaxTaskHistory it keeps a task's History within a few kilobytes, so that
// a task restarted again and again does not bloat the replicated state.
const MaxTransitionReason = 256

// TaskTransition is one entry of a task's History: the task as a committed
// change left it.
type TaskTransition struct {
	// Time is when the change happened, as the leader that committed it
	// saw it (for an older log entry without a time of its own, the
	// worker's time of the container's start or end; zero if neither).
	Time time.Time
	// State, DesiredState, Worker, Generation, RestartCount, Healthy and
	// ExitCode are the task's after the change.
	State        State
	DesiredState State
	Worker       string `json:",omitempty"`
	Generation   uint64 `json:",omitempty"`
	RestartCount int    `json:",omitempty"`
	Healthy      bool   `json:",omitempty"`
	ExitCode     int    `json:",omitempty"`
	// Reason says why, for a person: "submitted", "stop requested", the
	// task's Reason ("exited with code 1", "restarted after: …"), or the
	// health check's verdict. At most MaxTransitionReason bytes.
	Reason string `json:",omitempty"`
}

// Finished reports whether the task has ended for good: its end was
// observed (State Completed or Failed) and the cluster will not run it
// again — it was stopped or given up on (DesiredState is not Running), or
// it completed under a policy that does not restart a completed task
// ("", "on-failure", "no"). The leader's loop has nothing left to do for a
// finished task, and only a finished task may be garbage-collected.
func (t Task) Finished() bool {
	switch {
	case !t.State.Terminal():
		return false
	case t.DesiredState != Running:
		return true
	}
	return t.State == Completed && t.RestartPolicy != "always" && t.RestartPolicy != "unless-stopped" && !t.StoppedUnasked()
}

// ReasonStoppedOnRequest is the Reason of a task a stop request ended: the
// operator's (cube stop, a service scaled down), carried out by the leader,
// or the worker's own record of a copy the leader had it stop.
const ReasonStoppedOnRequest = "stopped on request"

// StoppedUnasked reports whether the task is to run but its current
// placement was stopped on request: the leader stops only the copies it no
// longer wants (a placement it has moved on from) and the tasks it was asked
// to stop, so such an end is a stop the cluster did not ask for, not the
// task's own. The leader runs it again, whatever its restart policy, not
// counted as a restart.
func (t Task) StoppedUnasked() bool {
	return t.State == Completed && t.DesiredState == Running && t.Reason == ReasonStoppedOnRequest
}

// ReasonHostPortTaken begins the Reason of a task a worker could not start
// because a host port it binds statically was taken on the worker's machine
// (by another container or any other process). The leader treats such a
// failure as a failed placement, not as a failure of the app: the task goes
// back to Pending, not counted as a restart, and is placed elsewhere.
const ReasonHostPortTaken = "host port taken: "

// HostPortTaken reports whether the task's last start failed because a host
// port it binds was taken (its Reason begins with ReasonHostPortTaken).
func (t Task) HostPortTaken() bool {
	return t.State == Failed && strings.HasPrefix(t.Reason, ReasonHostPortTaken)
}

// StaticHostPorts returns the host ports the task binds statically, each as
// "HOSTPORT/proto" ("7777/tcp"), sorted and without duplicates: the
// PortBindings entries whose host port is set and not 0. Such a port can be
// bound by one container per machine, whatever the host address, so the
// scheduler treats it as a per-worker resource. An unparsable binding (which
// Validate refuses) is skipped.
func (t Task) StaticHostPorts() []string {
	if len(t.PortBindings) == 0 {
		return nil
	}
	var out []string
	for k, v := range t.PortBindings {
		port := v
		if i := strings.LastIndex(v, ":"); i >= 0 {
			port = v[i+1:]
		}
		n, err := strconv.Atoi(port)
		if err != nil || n <= 0 || n > 65535 {
			continue
		}
		proto := "tcp"
		if _, p, ok := strings.Cut(k, "/"); ok && p != "" {
			proto = p
		}
		key := strconv.Itoa(n) + "/" + proto
		if !slices.Contains(out, key) {
			out = append(out, key)
		}
	}
	sort.Strings(out)
	return out
}

// TaskEvent is the body of POST /tasks on managers and workers, as in the seed:
// State is the state the sender wants the task to reach.
type TaskEvent struct {
	ID        uuid.UUID
	State     State
	Timestamp time.Time
	Task      Task
}

// ErrResponse is the JSON body of every error answer, as in the seed.
type ErrResponse struct {
	HTTPStatusCode int
	Message        string
}

// Stats is a worker's view of its machine and its tasks (GET /stats).
type Stats struct {
	// Worker is the worker's name.
	Worker string
	// MemTotal, MemAvailable are the machine's memory in bytes.
	MemTotal     int64
	MemAvailable int64
	// DiskTotal, DiskFree are bytes on the file system holding the data dir.
	DiskTotal int64
	DiskFree  int64
	// Cpus is the number of CPU cores; CpuUsage the busy fraction (0..1) of all
	// cores over the last sampling period.
	Cpus     int
	CpuUsage float64
	// LoadAvg1, LoadAvg5, LoadAvg15 are the kernel's load averages.
	LoadAvg1  float64
	LoadAvg5  float64
	LoadAvg15 float64
	// AllocatedCpu, AllocatedMemory, AllocatedDisk sum what the worker's
	// non-terminal tasks asked for (cores, bytes, bytes).
	AllocatedCpu    float64
	AllocatedMemory int64
	AllocatedDisk   int64
	// TaskCount is the number of non-terminal tasks on the worker.
	TaskCount int
	// RuntimeAvailable is false when the Docker engine does not answer;
	// RuntimeError says why.
	RuntimeAvailable bool
	RuntimeError     string `json:",omitempty"`
}
