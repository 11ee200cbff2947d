package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/google/uuid"
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
	// Logs returns the output of the task's current container.
	Logs(ctx context.Context, id uuid.UUID, tail int) (io.ReadCloser, error)
}

// NewWorkerHandler returns the worker's HTTP API:
//
//	POST   /tasks            run a task (TaskEvent body); 201, or 200 for a duplicate
//	GET    /tasks            every task record ([] when none)
//	GET    /tasks/{id}       one record
//	DELETE /tasks/{id}       stop and remove its container; 204 (?generation=N:
//	                         only if the worker's record is at generation N or older)
//	GET    /tasks/{id}/logs  container output (?tail=N lines)
//	GET    /stats            machine figures and allocated resources
func NewWorkerHandler(svc WorkerService) http.Handler {
	mux := http.NewServeMux()
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
			var n int
			if n, err = QueryInt(r, "generation", 0); err == nil {
				g := uint64(n)
				upTo = &g
			}
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
		tail, err := QueryInt(r, "tail", 0)
		if err != nil {
			writeError(w, err)
			return
		}
		rc, err := svc.Logs(r.Context(), id, tail)
		if err != nil {
			writeError(w, err)
			return
		}
		defer rc.Close()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.Copy(w, rc)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, svc.Stats(r.Context()))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, ErrResponse{
			HTTPStatusCode: http.StatusNotFound,
			Message:        fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path),
		})
	})
	return mux
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
