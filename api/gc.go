package api

import (
	"context"
	"net/http"
)

// GCPath is the manager route that runs a garbage collection now.
const GCPath = "/system/gc"

// GCResult counts what a garbage collection removed from the replicated
// state (POST /system/gc answers it).
type GCResult struct {
	// Tasks is the number of finished tasks removed.
	Tasks int
	// Workers is the number of dead or departed workers removed.
	Workers int
}

// GarbageCollector is what POST /system/gc needs. A ManagerService that
// implements it serves the route.
type GarbageCollector interface {
	// CollectGarbage removes now every finished task whose container
	// cannot run any more and every dead or departed worker with no live
	// task, whatever their age (the periodic collection waits for its
	// thresholds). Leader only.
	CollectGarbage(ctx context.Context) (GCResult, error)
}

// registerGC adds POST /system/gc to mux when svc implements GarbageCollector.
func (h *managerHandler) registerGC(mux routeRegistrar, svc ManagerService) {
	gc, ok := svc.(GarbageCollector)
	if !ok {
		return
	}
	mux.HandleFunc("POST "+GCPath, func(w http.ResponseWriter, r *http.Request) {
		if !h.serveHere(w, r, nil, true) {
			return
		}
		res, err := gc.CollectGarbage(r.Context())
		if err != nil {
			h.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
}

// CollectGarbage asks the cluster to run a garbage collection now
// (POST /system/gc, role operator) and returns what it removed.
func (c *Client) CollectGarbage(ctx context.Context) (GCResult, error) {
	var res GCResult
	_, err := c.call(ctx, http.MethodPost, GCPath, nil, &res)
	return res, err
}
