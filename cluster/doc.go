// Package cluster owns Cube's replication and membership machinery: the
// hashicorp/raft node that replicates the manager state (TCP transport,
// raft-boltdb/v2 log and stable store, file snapshots, bootstrap, join and
// remove) and the hashicorp/memberlist gossip pool through which managers
// and workers see each other's liveness and metadata.
//
// Raft connections may run over mutual TLS between manager certificates,
// and gossip may be encrypted with a keyring that can be rotated while the
// pool runs (transport.go, keyring.go).
//
// The package imports no other Cube package but security (a leaf, for the
// certificates and keys): the replicated state machine is handed in as a
// raft.FSM, and consumers declare the small interfaces they need over *Raft
// and *Pool. See DESIGN.md beside this file for why
// the bootstrap, leadership and timing choices are what they are.
package cluster
