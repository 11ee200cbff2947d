package api

import (
	"bufio"
	"encoding/json"
	"errors"
	"net/http"
)

// Sentinel errors shared by the manager and worker sides; handlers map them to
// HTTP status codes, and clients map status codes back to them.
var (
	// ErrNotFound: no task (or node) with that ID. HTTP 404.
	ErrNotFound = errors.New("not found")
	// ErrStaleGeneration: the instruction carries an older generation than the
	// receiver already holds; a newer placement superseded it. HTTP 409.
	ErrStaleGeneration = errors.New("stale generation")
	// ErrConflict: the request contradicts the stored state. HTTP 409.
	ErrConflict = errors.New("conflict")
	// ErrUnavailable: the service cannot act right now (no leader, runtime
	// down); retry later. HTTP 503.
	ErrUnavailable = errors.New("unavailable")
	// ErrNotLeader: a write or consistent read reached a manager that is not
	// the leader. The handler forwards instead; a client sees 503 only when no
	// leader is known. HTTP 503.
	ErrNotLeader = errors.New("not the leader")
	// ErrUnknownOutcome: the write was sent but its fate is unknown (timeout,
	// leadership lost); it may still commit. HTTP 503; retry with the same
	// task ID, which is idempotent.
	ErrUnknownOutcome = errors.New("outcome unknown")
	// ErrLimit: a configured bound is reached (the state quota of tasks,
	// the cap on event streams); nothing was changed. HTTP 429, without
	// Retry-After: retrying helps only once the operator or garbage
	// collection frees room.
	ErrLimit = errors.New("limit reached")
	// ErrNotSent: a call to a worker was never sent, its context ending
	// while it waited for one of the calls a WorkerClient may have in
	// flight: the worker was not asked, so its silence says nothing about
	// it. Never on the wire.
	ErrNotSent = errors.New("not sent")
)

// StatusOf maps an error from a service to the HTTP status that describes it.
func StatusOf(err error) int {
	var (
		verr *ValidationError
		mb   *http.MaxBytesError
	)
	switch {
	case errors.As(err, &verr):
		return http.StatusBadRequest
	case errors.As(err, &mb):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrUnauthenticated):
		return http.StatusUnauthorized
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrStaleGeneration), errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrLimit):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrEventsGap):
		return http.StatusGone
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrNotLeader), errors.Is(err, ErrUnknownOutcome):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// writeJSON writes v as the JSON body with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(EncodeJSON(v))
}

// writeJSONList answers status with the JSON array of items, the bytes
// writeJSON writes for the slice, encoding one item at a time: encoding/json
// builds a whole value in memory first, 128 MB for GET /tasks with 100,000
// tasks (bench/scale/SCALE.md). An item that does not encode (never, for
// the API's types) ends the answer early, which the client sees as
// malformed JSON rather than a list missing an item.
func writeJSONList[T any](w http.ResponseWriter, status int, items []T) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteByte('[')
	for i := range items {
		b, err := json.Marshal(&items[i])
		if err != nil {
			_ = bw.Flush()
			return
		}
		if i > 0 {
			bw.WriteByte(',')
		}
		bw.Write(b)
	}
	bw.WriteString("]\n")
	_ = bw.Flush() // a client gone away: nothing to tell it
}

// writeError answers err as an ErrResponse with the status StatusOf picks.
func writeError(w http.ResponseWriter, err error) {
	status := StatusOf(err)
	msg := err.Error()
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		msg = "request body is larger than the limit of 1 MiB"
	}
	writeJSON(w, status, ErrResponse{HTTPStatusCode: status, Message: msg})
}
