package api

import (
	"context"
	"io"
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
}

// RaftServer is one member of the raft configuration.
type RaftServer struct {
	ID     string
	Addr   string // raft address
	API    string `json:",omitempty"` // HTTP address, when gossip knows it
	Voter  bool
	Leader bool
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
	Servers      []RaftServer
	Members      []GossipMember
}

// Change is one committed change of a task (GET /events streams them, one
// JSON object per line).
type Change struct {
	// Index is the raft log index that made the change.
	Index uint64
	// Task is the task after the change.
	Task Task
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
	// Tasks and Task read the replicated state; consistent makes the read
	// linearizable (leader only: ErrNotLeader elsewhere).
	Tasks(ctx context.Context, consistent bool) ([]Task, error)
	Task(ctx context.Context, id uuid.UUID, consistent bool) (Task, error)
	Nodes(ctx context.Context, consistent bool) ([]Node, error)
	Cluster(ctx context.Context) (ClusterInfo, error)
	// Changes streams task changes as this manager applies them, until ctx
	// ends; the channel is closed when the stream ends (or falls behind).
	Changes(ctx context.Context) (<-chan Change, error)
	// DrainNode sets or clears a worker's Drain flag and returns the worker;
	// ErrNotFound for a worker the cluster has never seen. Leader only.
	DrainNode(ctx context.Context, name string, drain bool) (Node, error)
	// Logs returns the output of the task's container, read through its worker.
	Logs(ctx context.Context, id uuid.UUID, tail int) (io.ReadCloser, error)
	// AddManager adds a manager to the raft configuration as a voter; the
	// same ID and address again is a no-op. Leader only.
	AddManager(ctx context.Context, id, raftAddr string) error
	// RemoveManager removes a manager from the raft configuration; an unknown
	// ID is a no-op. Leader only.
	RemoveManager(ctx context.Context, id string) error
	// Leader returns the leader's HTTP address ("" if none known) and whether
	// this manager is the leader.
	Leader() (addr string, self bool)
}
