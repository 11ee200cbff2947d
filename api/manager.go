package api

import (
	"context"
	"io"
	"maps"
	"reflect"
	"slices"
	"time"

	"github.com/google/uuid"
)

// Header names of the manager API.
const (
	// HeaderLeader is on every manager response: the leader's HTTP address
	// ("" when no leader is known).
	HeaderLeader = "X-Cube-Leader"
	// HeaderForwarded marks a request a follower forwarded to the leader, so a
	// request is never forwarded twice (one hop, no loops).
	HeaderForwarded = "X-Cube-Forwarded"
)

// Node liveness as the managers see it through gossip.
const (
	NodeAlive   = "alive"
	NodeSuspect = "suspect"
	NodeDead    = "dead"
	NodeLeft    = "left"
)

// Node is a worker as the replicated state knows it (GET /nodes).
type Node struct {
	// Name is the worker's name; API its HTTP address.
	Name string
	API  string
	// State is alive, suspect, dead or left; Since is when it entered it.
	State string
	Since time.Time
	// RuntimeAvailable is false when the worker reported its Docker engine down.
	RuntimeAvailable bool
	// Drain is set by an operator (cube node drain): nothing new is placed on
	// the worker and its tasks are moved to other workers. Gossip never
	// changes it.
	Drain bool
	// Cpu (cores), Memory and Disk (bytes) are the worker's capacity.
	Cpu    float64
	Memory int64
	Disk   int64
	// Allocated* sum what the worker's live tasks asked for; TaskCount counts them.
	AllocatedCpu    float64
	AllocatedMemory int64
	AllocatedDisk   int64
	TaskCount       int
	// Allows is what the worker lets tasks ask for beyond an ordinary
	// container, as it gossips it (Allowances.Tokens: "privileged",
	// "host-network", "mount:/srv/data", "cap:NET_ADMIN"); empty: nothing.
	Allows []string `json:",omitempty"`
	// Labels are the worker's own (cube worker --label zone=a), as it
	// gossips them; tasks' and services' Constraints are matched to them.
	Labels map[string]string `json:",omitempty"`
	// ServiceTasks counts the worker's live tasks (Scheduled or Running)
	// per service (Task.Service), derived like TaskCount from the placed
	// tasks, for the scheduler's spreading. It is neither stored nor sent.
	ServiceTasks map[string]int `json:"-"`
}

// Equal reports whether n and o hold the same values, an empty Allows
// equal to a nil one. (Node holds a slice, so == does not compile.)
func (n Node) Equal(o Node) bool {
	if !slices.Equal(n.Allows, o.Allows) || !maps.Equal(n.Labels, o.Labels) || !maps.Equal(n.ServiceTasks, o.ServiceTasks) {
		return false
	}
	n.Allows, o.Allows = nil, nil
	n.Labels, o.Labels = nil, nil
	n.ServiceTasks, o.ServiceTasks = nil, nil
	return reflect.DeepEqual(n, o)
}

// RaftServer is one member of the raft configuration. Voter is false for a
// manager that joined and waits for the leader to promote it (it has to
// catch up and stay healthy a while first).
type RaftServer struct {
	ID     string
	Addr   string // raft address
	API    string `json:",omitempty"` // HTTP address, when gossip knows it
	Voter  bool
	Leader bool
	// Promotion, on the leader's answer, says how a non-voter's promotion
	// stands ("caught up; healthy for 1.2s of 10s", or why not).
	Promotion string `json:",omitempty"`
}

// DrainRequest is the body of POST /nodes/{name}/drain.
type DrainRequest struct {
	Drain bool
}

// GossipMember is one node of the memberlist pool.
type GossipMember struct {
	Name  string
	Addr  string // gossip address
	Role  string // manager or worker
	API   string
	State string // alive, suspect, dead or left
	// MaxCommand is, for a manager, the highest replicated command type it
	// applies, as it gossips it (0: not advertised). A rolling upgrade is
	// done when every manager shows the same.
	MaxCommand uint8 `json:",omitempty"`
	// Version is the build a manager runs, as it gossips it ("" from a
	// manager from before it was gossiped, and from workers).
	Version string `json:",omitempty"`
}

// ClusterInfo answers GET /cluster.
type ClusterInfo struct {
	// Self is the answering manager's raft ID.
	Self string
	// Leader and LeaderID name the current leader ("" if none).
	Leader   string // HTTP address
	LeaderID string
	Term     uint64
	// AppliedIndex is the answering manager's last applied raft index.
	AppliedIndex uint64
	// Version is the build the answering manager runs (cube version).
	Version string `json:",omitempty"`
	Servers []RaftServer
	Members []GossipMember
}

// Change is one committed change of a task (GET /events streams them, one
// JSON object per line).
type Change struct {
	// Index is the raft log index that made the change.
	Index uint64
	// Seq is the change's place among the changes of that entry, from 0
	// (omitted when 0: most entries change one task). Index and Seq are
	// its Position, the same on every manager; GET /events?after=POS
	// resumes after it.
	Seq int `json:",omitempty"`
	// Task is the task after the change.
	Task Task
	// Error, on the last line of a stream only, says why the manager ended
	// it (the subscriber fell too far behind, the manager's state was
	// replaced by a snapshot, or the manager has been out of touch with a
	// raft leader too long to follow the cluster): the subscriber resumes
	// after the last change it read (?after=), on this manager or another,
	// or re-reads GET /tasks if none holds the changes since.
	Error string `json:",omitempty"`
	// Heartbeat marks a line that is not a change (an EventsHeartbeat,
	// sent only on GET /events?heartbeat=): it says the stream is alive,
	// and has no task and no position.
	Heartbeat bool `json:",omitempty"`
}

// ManagerService is what the manager HTTP API needs from a manager. Methods
// that change state return ErrNotLeader on a follower; the handler forwards
// such requests to the leader before calling them.
type ManagerService interface {
	// SubmitTask commits a new task (Pending, to be scheduled). Submitting an
	// existing ID creates nothing new: created is false and the stored task
	// is returned.
	SubmitTask(ctx context.Context, ev TaskEvent) (t Task, created bool, err error)
	// StopTask commits a stop request; ErrConflict if the task already ended.
	StopTask(ctx context.Context, id uuid.UUID) (Task, error)
	// ReportTask records a worker's report of one of its task records.
	ReportTask(ctx context.Context, t Task) error
	// ReportTasks records a batch of a worker's reports (at most
	// MaxReportBatch, one per task), as ReportTask would each.
	ReportTasks(ctx context.Context, ts []Task) error
	// Tasks and Task read the replicated state; consistent makes the read
	// linearizable (leader only: ErrNotLeader elsewhere).
	Tasks(ctx context.Context, consistent bool) ([]Task, error)
	Task(ctx context.Context, id uuid.UUID, consistent bool) (Task, error)
	Nodes(ctx context.Context, consistent bool) ([]Node, error)
	Cluster(ctx context.Context) (ClusterInfo, error)
	// Changes streams task changes as this manager applies them, until ctx
	// ends; the channel is closed when the stream ends (or falls behind).
	// With after set it streams the changes after that position (waiting
	// for this manager to apply them if it is behind), or fails with a
	// *GapError when it no longer holds them all; with after nil it starts
	// with the next change. start is the position the stream begins after.
	Changes(ctx context.Context, after *Position) (ch <-chan Change, start Position, err error)
	// DrainNode sets or clears a worker's Drain flag and returns the worker;
	// ErrNotFound for a worker the cluster has never seen. Leader only.
	DrainNode(ctx context.Context, name string, drain bool) (Node, error)
	// Logs returns the output of the task's container, read through its
	// worker; with opts.Follow the stream goes on until the container ends
	// or ctx does.
	Logs(ctx context.Context, id uuid.UUID, opts LogOptions) (io.ReadCloser, error)
	// AddManager adds a manager to the raft configuration as a non-voter,
	// which the leader promotes to voter once it has caught up and been
	// stable a while; the same ID and address again is a no-op. Replacing a
	// live voter (same ID or same address) is refused with ErrConflict, as is
	// a replacement that would leave fewer reachable voters than a quorum.
	// Leader only.
	AddManager(ctx context.Context, id, raftAddr string) error
	// RemoveManager removes a manager from the raft configuration; an unknown
	// ID is a no-op. ErrConflict when it is the last voter, or when fewer
	// reachable voters than a quorum would remain. Leader only.
	RemoveManager(ctx context.Context, id string) error
	// ServerStatus is this manager's own raft progress (GET /cluster/self).
	ServerStatus(ctx context.Context) (ServerStatus, error)
	// Leader returns the leader's HTTP address ("" if none known) and whether
	// this manager is the leader.
	Leader() (addr string, self bool)

	// CreateToken makes a token with a new secret, commits it (its hash,
	// never the secret) and returns it with its Secret: the one time the
	// secret is shown. Leader only.
	CreateToken(ctx context.Context, req TokenRequest) (Token, error)
	// Tokens lists the tokens, without secrets; consistent as for Tasks.
	Tokens(ctx context.Context, consistent bool) ([]Token, error)
	// DeleteToken commits a token's deletion; an accessor no token has is a
	// no-op, so that a retried deletion succeeds. Leader only.
	DeleteToken(ctx context.Context, accessor uuid.UUID) error
}
