package cluster

import "errors"

// Sentinel errors returned by this package; match them with errors.Is.
var (
	// ErrNotLeader is returned by leader-only operations (Apply, Barrier,
	// ConsistentRead, Join, Remove, Promote, LeadershipTransfer) on a server that is
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

	// ErrUnsafeChange is wrapped by Join, Remove and Promote when the
	// membership change could break the cluster's quorum (a live voter
	// re-pointed, a removal leaving fewer reachable voters than a quorum,
	// the last voter removed). Nothing was changed; the message says what
	// to do instead.
	ErrUnsafeChange = errors.New("membership change refused")

	// ErrMetaTooLarge is returned when the JSON encoding of a Meta exceeds
	// memberlist.MetaMaxSize (512 bytes).
	ErrMetaTooLarge = errors.New("node metadata too large")

	// ErrEncryptionOff is returned by the keyring operations of a Pool
	// started without gossip keys: memberlist cannot turn encryption on
	// while running; restart the node with a key.
	ErrEncryptionOff = errors.New("gossip encryption is off on this node")

	// ErrPrimaryKey is returned by Pool.RemoveKey for the key the node
	// encrypts with: make another key primary (UseKey) first.
	ErrPrimaryKey = errors.New("the primary gossip key cannot be removed; use another key first")

	// ErrKeyNotInstalled is returned by Pool.UseKey for a key the node does
	// not hold: install it first, on every node.
	ErrKeyNotInstalled = errors.New("gossip key is not installed")
)
