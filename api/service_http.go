package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Service routes (DESIGN §6):
//
//	POST   /services                 create (Service body); 201 and the ServiceStatus,
//	                                 409 if the name exists, 400 if invalid
//	GET    /services                 every service's ServiceStatus, by name ([] when none)
//	GET    /services/{name}          one ServiceStatus; 404
//	PUT    /services/{name}          create or change (Service body, Name empty or the
//	                                 same); 201 created, 200 changed or unchanged
//	DELETE /services/{name}          delete it and stop its tasks; 204; 404
//	POST   /services/{name}/scale    {"Count":N}; 200 and the ServiceStatus
//	POST   /services/{name}/rollback back to the last healthy version before the
//	                                 current one (optional {"From":N}: only if the
//	                                 current version is still N); 200; 409 if none
//
// Writes go to the leader (a follower forwards) and need role submit, as
// task writes do; reads need role read and see Env values redacted, as for
// tasks. GET is served by the leader when one is known (the healthy counts
// come from its health checks), else by the answering manager.
const ServicesPath = "/services"

// ScaleRequest is the body of POST /services/{name}/scale.
type ScaleRequest struct {
	Count int
}

// RollbackRequest is the optional body of POST /services/{name}/rollback.
type RollbackRequest struct {
	// From, if set, is the version the caller saw current: the rollback is
	// refused (409) if the service has moved on since.
	From uint64 `json:",omitempty"`
}

// ServiceManager is what the service routes need. A ManagerService that
// implements it serves them.
type ServiceManager interface {
	// CreateService commits a new service; ErrConflict if the name exists.
	// Leader only.
	CreateService(ctx context.Context, s Service) (ServiceStatus, error)
	// PutService creates or changes a service; created says which. A
	// service equal to the stored one commits nothing. Leader only.
	PutService(ctx context.Context, s Service) (st ServiceStatus, created bool, err error)
	// Services and Service read the replicated state (consistent as for
	// Tasks).
	Services(ctx context.Context, consistent bool) ([]ServiceStatus, error)
	Service(ctx context.Context, name string, consistent bool) (ServiceStatus, error)
	// ScaleService sets Count. Leader only.
	ScaleService(ctx context.Context, name string, count int) (ServiceStatus, error)
	// RollbackService makes the last healthy version before the current
	// one current again (ErrConflict if there is none, or if from is set
	// and the current version is not from). Leader only.
	RollbackService(ctx context.Context, name string, from uint64) (ServiceStatus, error)
	// DeleteService deletes a service and stops its tasks. Leader only.
	DeleteService(ctx context.Context, name string) error
}

// registerServices adds the service routes when the service implements
// ServiceManager.
func (h *managerHandler) registerServices(mux routeRegistrar) {
	sm, ok := h.svc.(ServiceManager)
	if !ok {
		return
	}
	mux.HandleFunc("POST "+ServicesPath, func(w http.ResponseWriter, r *http.Request) {
		body, s, err := readService(w, r, "")
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if !h.serveHere(w, r, body, true) {
			return
		}
		st, err := sm.CreateService(r.Context(), s)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusCreated, serviceFor(r.Context(), st))
	})
	mux.HandleFunc("GET "+ServicesPath, func(w http.ResponseWriter, r *http.Request) {
		consistent := consistentRead(r)
		if !h.serveStatusHere(w, r, consistent) {
			return
		}
		list, err := sm.Services(r.Context(), consistent)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		out := make([]ServiceStatus, 0, len(list))
		for _, st := range list {
			out = append(out, serviceFor(r.Context(), st))
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET "+ServicesPath+"/{name}", func(w http.ResponseWriter, r *http.Request) {
		consistent := consistentRead(r)
		if !h.serveStatusHere(w, r, consistent) {
			return
		}
		st, err := sm.Service(r.Context(), r.PathValue("name"), consistent)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, serviceFor(r.Context(), st))
	})
	mux.HandleFunc("PUT "+ServicesPath+"/{name}", func(w http.ResponseWriter, r *http.Request) {
		body, s, err := readService(w, r, r.PathValue("name"))
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if !h.serveHere(w, r, body, true) {
			return
		}
		st, created, err := sm.PutService(r.Context(), s)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		status := http.StatusOK
		if created {
			status = http.StatusCreated
		}
		writeJSON(w, status, serviceFor(r.Context(), st))
	})
	mux.HandleFunc("DELETE "+ServicesPath+"/{name}", func(w http.ResponseWriter, r *http.Request) {
		if !h.serveHere(w, r, nil, true) {
			return
		}
		if err := sm.DeleteService(r.Context(), r.PathValue("name")); err != nil {
			h.fail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST "+ServicesPath+"/{name}/scale", func(w http.ResponseWriter, r *http.Request) {
		body, err := readBody(w, r)
		var req ScaleRequest
		if err == nil {
			err = decodeStrict(body, &req, `{"Count":N}`)
		}
		if err == nil && (req.Count < 0 || req.Count > MaxServiceCount) {
			err = &ValidationError{Msg: fmt.Sprintf("Count %d must be between 0 and %d", req.Count, MaxServiceCount)}
		}
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if !h.serveHere(w, r, body, true) {
			return
		}
		st, err := sm.ScaleService(r.Context(), r.PathValue("name"), req.Count)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, serviceFor(r.Context(), st))
	})
	mux.HandleFunc("POST "+ServicesPath+"/{name}/rollback", func(w http.ResponseWriter, r *http.Request) {
		body, err := readBody(w, r)
		var req RollbackRequest
		if err == nil && len(bytes.TrimSpace(body)) > 0 {
			err = decodeStrict(body, &req, `{"From":N} or nothing`)
		}
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if !h.serveHere(w, r, body, true) {
			return
		}
		st, err := sm.RollbackService(r.Context(), r.PathValue("name"), req.From)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, serviceFor(r.Context(), st))
	})
}

// serveStatusHere reports whether this manager answers a service read
// itself: a consistent read is the leader's (as for tasks); any other is
// forwarded to the leader when one is known, whose health checks give the
// healthy counts, and answered here when none is.
func (h *managerHandler) serveStatusHere(w http.ResponseWriter, r *http.Request, consistent bool) bool {
	if consistent {
		return h.serveHere(w, r, nil, true)
	}
	leader, self := h.svc.Leader()
	if self || leader == "" || r.Header.Get(HeaderForwarded) != "" {
		return true
	}
	h.forward(w, r, leader, nil)
	return false
}

// readService reads and checks the body of POST /services (name "") or
// PUT /services/{name}: one Service, no unknown fields, valid; its Name
// empty or name.
func readService(w http.ResponseWriter, r *http.Request, name string) ([]byte, Service, error) {
	body, err := readBody(w, r)
	if err != nil {
		return nil, Service{}, err
	}
	var s Service
	if err := decodeStrict(body, &s, "a JSON Service"); err != nil {
		return nil, Service{}, err
	}
	if name != "" {
		if s.Name != "" && s.Name != name {
			return nil, Service{}, &ValidationError{Msg: fmt.Sprintf("body names service %q, the path %q; leave Name empty or make them the same", s.Name, name)}
		}
		s.Name = name
	}
	return body, s, CheckService(s)
}

// CheckService is ValidateService and the template's own checks (Task
// Validate), as a *ValidationError: what a manager refuses with 400.
func CheckService(s Service) error {
	if err := ValidateService(s); err != nil {
		var v *ValidationError
		if errors.As(err, &v) {
			return err
		}
		return &ValidationError{Msg: err.Error()}
	}
	t := s.Task
	t.State, t.DesiredState = Pending, Pending // set by the cluster
	if err := t.Validate(); err != nil {
		return &ValidationError{Msg: fmt.Sprintf("service %s: Task: %v", s.Name, err)}
	}
	return nil
}

// decodeStrict decodes one JSON value into v, refusing unknown fields and
// trailing data; want describes the expected body for the messages.
func decodeStrict(body []byte, v any, want string) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return &ValidationError{Msg: "request body is empty; expected " + want}
		}
		return describeJSONError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return &ValidationError{Msg: "request body holds data after the JSON value"}
	}
	return nil
}

// serviceFor returns st as the caller of ctx may see it: the Env values of
// its template and its history redacted for a caller without role submit,
// as taskFor does for a task.
func serviceFor(ctx context.Context, st ServiceStatus) ServiceStatus {
	if c, ok := CallerFrom(ctx); ok && (c.Role == RoleSubmit || c.Role == RoleOperator) {
		return st
	}
	st.Task = taskFor(ctx, st.Task)
	if len(st.History) > 0 {
		hist := make([]ServiceVersion, len(st.History))
		for i, v := range st.History {
			v.Task = taskFor(ctx, v.Task)
			hist[i] = v
		}
		st.History = hist
	}
	return st
}
