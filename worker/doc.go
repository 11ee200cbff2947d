// Package worker is the agent on each machine: it runs tasks as containers
// through a Runtime (the real one is the Docker Engine), keeps its task
// records in a bbolt file, follows the engine's event stream so a dying
// container is recorded at once, and re-adopts its labelled containers after a
// restart. It never imports the manager side.
//
// Agent (agent.go) is a whole worker node, the one `cube worker`, `cube dev`
// and the tests start: the Worker, its HTTP API and, in a cluster, its gossip
// membership (the managers see its address, capacity and whether its engine
// answers), the Reporter that pushes every change of a task to the managers,
// and the monitor of its engine.
package worker
