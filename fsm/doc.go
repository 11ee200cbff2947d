// Package fsm is Cube's replicated state machine: the tasks and workers every
// manager holds, and the commands (one type byte + JSON) that change them
// through the raft log. It imports only api.
package fsm
