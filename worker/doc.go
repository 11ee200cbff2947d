// Package worker is the agent on each machine: it runs tasks as containers
// through a Runtime (the real one is the Docker Engine), keeps its task
// records in a bbolt file, follows the engine's event stream so a dying
// container is recorded at once, and re-adopts its labelled containers after a
// restart. It never imports the manager side.
package worker
