package cluster

import "errors"

// Sentinel errors returned by this package; match them with errors.Is.
var (
	// ErrNotLeader is returned by leader-only operations (Apply, Barrier,
	// ConsistentRead, Join, Remove, LeadershipTransfer) on a server that is
	// not the raft leader. Nothing was written: forward the request to the
	// server named by Raft.Leader and retry there.
	ErrNotLeader = errors.New("not the raft leader")

	// ErrUnknownOutcome is wrapped by Apply (and the membership changes)
	// when the command was handed to raft but its fate is not known: the
	// caller's context ended first, leadership was lost, or raft shut down.
	// The command may still commit, so commands must be idempotent.
	ErrUnknownOutcome = errors.New("outcome unknown: the command may still be committed")

	// ErrEnqueueTimeout is returned when raft did not accept the command
	// within RaftConfig.ApplyTimeout. The command was not appended to the
	// log; retrying is safe.
	ErrEnqueueTimeout = errors.New("timed out handing the command to raft; it was not applied")

	// ErrShutdown is returned by operations on a Raft or Pool that has been
	// shut down.
	ErrShutdown = errors.New("shut down")

	// ErrDataDirLocked is returned by NewRaft when another process (or
	// another Raft in this process) holds the bolt file lock of the data
	// directory for longer than RaftConfig.OpenTimeout.
	ErrDataDirLocked = errors.New("raft data directory is in use")

	// ErrInvalidConfig is wrapped by RaftConfig.Validate and
	// GossipConfig.Validate; the message names the field and its bound.
	ErrInvalidConfig = errors.New("invalid config")

	// ErrMetaTooLarge is returned when the JSON encoding of a Meta exceeds
	// memberlist.MetaMaxSize (512 bytes).
	ErrMetaTooLarge = errors.New("node metadata too large")
)
