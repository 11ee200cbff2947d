package cluster

import (
	_ "unsafe" // for go:linkname, see nodeState

	"github.com/hashicorp/memberlist"
)

// memberlistNodeState is memberlist's own accessor of a node's liveness,
// (*Memberlist).getNodeState, which reads it under memberlist's node lock.
//
// It is linked by name because memberlist v0.6.0 exposes no other
// race-free way to learn whether a node is suspect, and none at all to
// tell a graceful leave from a failure: the State field of the *Node
// values handed out by Members() and the event delegate is never set
// (memberlist keeps the real state in a shadowing field of its private
// nodeState), so it always reads StateAlive. The go.mod pins memberlist;
// if a version drops this method the build fails at link time, and
// TestPool_FailureDetection and TestPool_Leave fail if its meaning
// changes. See DESIGN.md.
//
//go:linkname memberlistNodeState github.com/hashicorp/memberlist.(*Memberlist).getNodeState
func memberlistNodeState(m *memberlist.Memberlist, name string) memberlist.NodeStateType

// nodeState returns memberlist's view of node name. ok is false when
// memberlist no longer knows the name: it reaps nodes that have been dead
// for GossipToTheDeadTime, and getNodeState then dereferences a nil entry
// (the deferred unlock inside it runs, so recovering is safe).
//
// It must not be called from a memberlist delegate callback: memberlist
// holds its node lock while calling them.
func nodeState(m *memberlist.Memberlist, name string) (state memberlist.NodeStateType, ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return memberlistNodeState(m, name), true
}
