// Package manager is the control plane above the replicated state: it serves
// the manager API on every manager and, on the leader only, runs the control
// loop that places tasks on workers, dispatches them, carries out stops and
// reconciles with what workers report. See DESIGN.md.
package manager
