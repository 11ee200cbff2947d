// Package simrt is a simulated container runtime: worker.Runtime in memory,
// with Docker's container states, names, labels and events and no process
// behind them, a configurable start delay and a configurable fraction of
// starts that exit non-zero. A real worker agent on it (its API, records,
// reporter and gossip) costs a few goroutines and sockets, so one process
// can run hundreds of them against real managers: the control-plane
// benchmark (`make scale`, cube sim-workers) and the tests that need many
// workers but no engine.
package simrt
