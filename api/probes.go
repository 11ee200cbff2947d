package api

import (
	"context"
	"net/http"
	"time"
)

// Probe is the body of GET /health/live and GET /health/ready.
type Probe struct {
	// Status is ProbeOK (live), ProbeReady or ProbeNotReady.
	Status string
	// Reason says, when not ready, what the node waits for. A manager's
	// name no address or ID: its probes are open to everyone.
	Reason string `json:",omitempty"`
}

// The values of Probe.Status.
const (
	ProbeOK       = "ok"
	ProbeReady    = "ready"
	ProbeNotReady = "not ready"
)

// ReadyFunc reports whether a node is ready to serve: nil if it is, else an
// error whose message is the Probe's Reason. It must answer within ctx.
type ReadyFunc func(ctx context.Context) error

// readyTimeout bounds one readiness check; a check that takes longer is
// itself a sign the node is not ready.
const readyTimeout = 2 * time.Second

// handleFuncer is the registration method of http.ServeMux and routeMux.
type handleFuncer interface {
	HandleFunc(pattern string, fn func(http.ResponseWriter, *http.Request))
}

// Patterns of the routes every node serves for its operators (probes.go).
const (
	patternLive    = "GET /health/live"
	patternReady   = "GET /health/ready"
	patternMetrics = "GET /metrics"
)

// registerProbes registers /health/live, /health/ready (ready nil: always
// ready) and, if metrics is not nil, /metrics.
//
//	GET /health/live   200 {"Status":"ok"} while the process serves HTTP
//	GET /health/ready  200 {"Status":"ready"}, or 503 {"Status":"not ready","Reason":..}
//	GET /metrics       Prometheus' text format
func registerProbes(mux handleFuncer, ready ReadyFunc, metrics http.Handler) {
	mux.HandleFunc(patternLive, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, Probe{Status: ProbeOK})
	})
	mux.HandleFunc(patternReady, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		var err error
		if ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
			err = ready(ctx)
			cancel()
		}
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, Probe{Status: ProbeNotReady, Reason: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, Probe{Status: ProbeReady})
	})
	if metrics != nil {
		mux.HandleFunc(patternMetrics, metrics.ServeHTTP)
	}
}
