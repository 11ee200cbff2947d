package api

import "time"

// Timeouts of every HTTP connection Cube opens (clients, a follower
// forwarding to the leader, the leader calling workers, workers reporting).
// On one machine a dead process answers a connect or a request with a reset at
// once; a machine that lost power answers nothing, and without these bounds
// a call would wait for its whole request timeout (10 s for a client).
const (
	// DialTimeout bounds a TCP connect. On a LAN a live machine connects in
	// well under a millisecond.
	DialTimeout = time.Second
	// DeadPeerTimeout bounds how long data sent on a connection may stay
	// unacknowledged before the connection fails (TCP_USER_TIMEOUT on
	// Linux): a request in flight to a machine that lost power fails after
	// this, and the caller tries another manager. A slow server still
	// acknowledges at the TCP level, so a slow answer is never cut short; a
	// lossy link loses a connection only when a segment and its
	// retransmissions are all lost for this long.
	DeadPeerTimeout = time.Second
)
