// Package manager is the control plane above the replicated state: it serves
// the manager API on every manager and, on the leader only, runs the control
// loop that places tasks on workers, dispatches them, carries out stops and
// reconciles with what workers report.
//
// Server (server.go) is a whole manager node, the one `cube manager`, `cube
// dev` and the tests start: raft and the FSM, the gossip pool, the Manager,
// the HTTP API and, for a manager started without peers, the joiner. See
// DESIGN.md.
package manager
