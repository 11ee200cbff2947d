// Package ui is the web page of the cluster that every manager serves under
// /ui/: the raft servers and the leader, the workers, the tasks and a live
// feed of their changes, with buttons to stop a task and drain a worker.
//
// The page is three static files embedded in the binary (no build step,
// nothing loaded from elsewhere). It holds no data: the page's script reads
// everything through the manager API it was served by, with the token the
// person types in, so the page itself is open and every data call is checked
// as any other API call. It imports no package of Cube's.
package ui
