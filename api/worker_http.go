package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
)

// WorkerService is what the worker HTTP API needs from the worker agent.
type WorkerService interface {
	// Submit asks the worker to run ev.Task at ev.Task.Generation. created is
	// false when the worker already held that task at that generation (a
	// duplicate send), in which case nothing new is started.
	Submit(ctx context.Context, ev TaskEvent) (t Task, created bool, err error)
	// Tasks lists every task record the worker holds.
	Tasks() []Task
	// Task returns one record, or ErrNotFound.
	Task(id uuid.UUID) (Task, error)
	// Stop stops and removes the task's container; ErrNotFound if unknown.
	// With upTo set, a record at a higher generation is not touched
	// (ErrStaleGeneration): a stop meant for an old placement cannot stop a
	// newer one.
	Stop(ctx context.Context, id uuid.UUID, upTo *uint64) (Task, error)
	// Stats reports the machine and the resources allocated to tasks.
	Stats(ctx context.Context) Stats
	// Logs returns the output of the task's current container; with
	// opts.Follow the stream goes on until the container ends or ctx does.
	Logs(ctx context.Context, id uuid.UUID, opts LogOptions) (io.ReadCloser, error)
}

// WorkerHandlerOptions tunes NewWorkerHandlerWith. The zero value is an
// open API, as NewWorkerHandler serves.
type WorkerHandlerOptions struct {
	// Authenticator, if set, admits only managers: every route, the 404
	// fallback included, answers 401 to a request without credentials and
	// 403 to any caller that is not a manager certificate. The worker
	// serves with a TLS config that already refuses other certificates in
	// the handshake; the handler does not rely on it.
	Authenticator Authenticator
	// Logger receives refusals; nil discards them.
	Logger hclog.Logger
	// Ready, if set, answers GET /health/ready (see probes.go); nil: ready
	// whenever the process serves.
	Ready ReadyFunc
	// Metrics, if set, serves GET /metrics (Prometheus' text format); nil:
	// no such route.
	Metrics http.Handler
}

// NewWorkerHandler returns the worker's HTTP API, open to every caller
// (security off):
//
//	POST   /tasks            run a task (TaskEvent body); 201, or 200 for a duplicate
//	GET    /tasks            every task record ([] when none)
//	GET    /tasks/{id}       one record
//	DELETE /tasks/{id}       stop and remove its container; 204 (?generation=N:
//	                         only if the worker's record is at generation N or older)
//	GET    /tasks/{id}/logs  container output (?tail=N lines, ?follow=1 until it ends)
//	GET    /stats            machine figures and allocated resources
//	GET|POST /gossip/keyring  the worker's gossip keys (keyring_http.go), when
//	                         svc implements WorkerKeyring with a ring
//	GET    /health/live      200 while the process serves
//	GET    /health/ready     200 ready, or 503 with the reason (opts.Ready)
//	GET    /metrics          Prometheus' text format (opts.Metrics)
func NewWorkerHandler(svc WorkerService) http.Handler {
	return NewWorkerHandlerWith(svc, WorkerHandlerOptions{})
}

// NewWorkerHandlerWith returns the worker's HTTP API (see NewWorkerHandler)
// with the given options: with an Authenticator, only managers may call it,
// but for the probes, which any caller it authenticates may ask (a worker's
// TLS handshake already asks for a certificate of the cluster's CA), and
// /metrics, which a client certificate may read too (a Prometheus scraper's).
func NewWorkerHandlerWith(svc WorkerService, opts WorkerHandlerOptions) http.Handler {
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	g := &guard{auth: opts.Authenticator, log: log}
	mux := newRouteMux()
	mux.HandleFunc("POST /tasks", func(w http.ResponseWriter, r *http.Request) {
		ev, err := DecodeTaskEvent(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
		if err == nil {
			err = ev.Validate()
		}
		if err == nil && ev.State.Terminal() {
			err = &ValidationError{Msg: fmt.Sprintf("State %d (%s) cannot be submitted; use DELETE /tasks/{id} to stop a task", ev.State, ev.State)}
		}
		if err != nil {
			writeError(w, err)
			return
		}
		t, created, err := svc.Submit(r.Context(), ev)
		if err != nil {
			writeError(w, err)
			return
		}
		status := http.StatusCreated
		if !created {
			status = http.StatusOK
		}
		writeJSON(w, status, t)
	})
	mux.HandleFunc("GET /tasks", func(w http.ResponseWriter, r *http.Request) {
		tasks := svc.Tasks()
		if tasks == nil {
			tasks = []Task{}
		}
		writeJSON(w, http.StatusOK, tasks)
	})
	mux.HandleFunc("GET /tasks/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := PathID(r)
		if err == nil {
			var t Task
			if t, err = svc.Task(id); err == nil {
				writeJSON(w, http.StatusOK, t)
				return
			}
		}
		writeError(w, err)
	})
	mux.HandleFunc("DELETE /tasks/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := PathID(r)
		var upTo *uint64
		if err == nil && r.URL.Query().Has("generation") {
			upTo, err = queryGeneration(r)
		}
		if err == nil {
			if _, err = svc.Stop(r.Context(), id, upTo); err == nil {
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		writeError(w, err)
	})
	mux.HandleFunc("GET /tasks/{id}/logs", func(w http.ResponseWriter, r *http.Request) {
		id, err := PathID(r)
		if err != nil {
			writeError(w, err)
			return
		}
		opts, err := logOptions(r)
		if err != nil {
			writeError(w, err)
			return
		}
		rc, err := svc.Logs(r.Context(), id, opts)
		if err != nil {
			writeError(w, err)
			return
		}
		defer rc.Close()
		serveLogs(w, rc, opts.Follow)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, svc.Stats(r.Context()))
	})
	registerWorkerKeyring(mux, svc)               // keyring_http.go
	registerProbes(mux, opts.Ready, opts.Metrics) // probes.go
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, ErrResponse{
			HTTPStatusCode: http.StatusNotFound,
			Message:        fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path),
		})
	})
	if g.auth == nil {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := g.authenticate(r)
		if err == nil {
			if why := workerRefusal(c, mux, r); why != "" {
				err = fmt.Errorf("%w: %s may not %s %s: %s", ErrForbidden, c, r.Method, r.URL.Path, why)
			}
		}
		if err != nil {
			g.refuse(w, r, c, err)
			return
		}
		mux.ServeHTTP(w, r.WithContext(ContextWithCaller(r.Context(), c)))
	})
}

// workerRefusal says why caller c may not make request r of the worker
// API, "" if it may: a manager may make any, any authenticated caller the
// probes, a client certificate (a Prometheus scraper's) /metrics too.
func workerRefusal(c Caller, mux *routeMux, r *http.Request) string {
	if c.Kind == CallerManager {
		return ""
	}
	switch _, pattern := mux.Handler(r); pattern {
	case patternLive, patternReady:
		return ""
	case patternMetrics:
		if c.Kind == CallerClient {
			return ""
		}
		return "only managers and client certificates may read a worker's metrics"
	}
	return "only managers may call a worker"
}

// queryGeneration reads the generation query parameter of a fenced stop: a
// number from 0 to MaxGeneration.
func queryGeneration(r *http.Request) (*uint64, error) {
	raw := r.URL.Query().Get("generation")
	if raw == "" {
		raw = "0" // as QueryInt read it before the bound
	}
	g, err := strconv.ParseUint(raw, 10, 64)
	var ne *strconv.NumError
	switch {
	case err != nil && !(errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange)):
		return nil, &ValidationError{Msg: fmt.Sprintf("query parameter generation=%q is not a non-negative integer", raw)}
	case err != nil || g > MaxGeneration:
		return nil, &ValidationError{Msg: fmt.Sprintf("query parameter generation=%s is above the bound of %d (MaxGeneration, 2^53)", raw, uint64(MaxGeneration))}
	}
	return &g, nil
}

// PathID parses the {id} path segment as a task UUID.
func PathID(r *http.Request) (uuid.UUID, error) {
	raw := r.PathValue("id")
	id, err := uuid.Parse(raw)
	if err != nil {
		return uuid.Nil, &ValidationError{Msg: fmt.Sprintf("task ID %q is not a UUID", raw)}
	}
	return id, nil
}

// QueryInt reads a non-negative integer query parameter, def when absent.
func QueryInt(r *http.Request, name string, def int) (int, error) {
	raw := r.URL.Query().Get(name)
	if raw == "" {
		return def, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 0 {
		return 0, &ValidationError{Msg: fmt.Sprintf("query parameter %s=%q is not a non-negative integer", name, raw)}
	}
	return n, nil
}
