package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Snapshot routes: backup and restore of the whole replicated state, as
// `consul snapshot save|restore` and `nomad operator snapshot save|restore`
// do it. Both need role operator: a snapshot holds every task (with its Env
// values) and the token table (hashes of the secrets, never the secrets).
//
//	GET /operator/snapshot  the state as of now, as a snapshot file (see
//	                        SnapshotInfo); served by the leader after a
//	                        barrier (a follower forwards), so it holds every
//	                        write acknowledged before the request
//	PUT /operator/snapshot  replace the whole state with a snapshot file's
//	                        (body); 200 and the file's SnapshotInfo, 400 for
//	                        a file that is damaged or newer than this manager
//	                        reads (nothing is changed then)
const SnapshotPath = "/operator/snapshot"

// MaxSnapshotBytes bounds a snapshot file, header included: the manager
// reads no larger one (PUT, 413) and writes none (GET); the clients' answer
// limit is the same.
const MaxSnapshotBytes = maxResponseBytes

// SnapshotFormat is the version of the snapshot file format this build
// writes and the newest it reads.
const SnapshotFormat = 1

// SnapshotKind is the Kind of every snapshot file's header.
const SnapshotKind = "cube-snapshot"

// SnapshotInfo is the header of a snapshot file: its first line, one JSON
// object, followed by Size bytes of state whose SHA-256 is SHA256.
type SnapshotInfo struct {
	// Kind is SnapshotKind; anything else is not a Cube snapshot.
	Kind string
	// Format is the file format's version (SnapshotFormat when written).
	Format int
	// Version is the version of the state's encoding (the FSM's snapshot
	// version); a manager refuses a version newer than it reads.
	Version int
	// Index and Term are those of the last raft entry the state includes.
	Index uint64
	Term  uint64
	// Size and SHA256 (hex) describe the state bytes after the header.
	Size   int64
	SHA256 string
	// Tasks, Workers and Tokens count what the state holds.
	Tasks   int
	Workers int
	Tokens  int
	// Services counts the services (state version 3 and later); absent
	// from the header of a state without services, so that an older Cube
	// still reads such a file.
	Services int `json:",omitempty"`
	// Created is when the snapshot was taken (the leader's clock).
	Created time.Time
}

// SnapshotService is what the snapshot routes need. A ManagerService that
// implements it serves them.
type SnapshotService interface {
	// SaveSnapshot returns the state as a snapshot file. Leader only
	// (ErrNotLeader elsewhere).
	SaveSnapshot(ctx context.Context) ([]byte, error)
	// RestoreSnapshot checks a snapshot file (a *ValidationError when it
	// is damaged or too new, and nothing changes) and replaces the whole
	// replicated state with its state. Leader only.
	RestoreSnapshot(ctx context.Context, file []byte) (SnapshotInfo, error)
}

// registerSnapshot adds the snapshot routes to mux when the service
// implements SnapshotService.
func (h *managerHandler) registerSnapshot(mux routeRegistrar) {
	ss, ok := h.svc.(SnapshotService)
	if !ok {
		return
	}
	mux.HandleFunc("GET "+SnapshotPath, func(w http.ResponseWriter, r *http.Request) {
		if !h.serveHere(w, r, nil, true) {
			return
		}
		file, err := ss.SaveSnapshot(r.Context())
		if err != nil {
			h.fail(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(file)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(file)
	})
	mux.HandleFunc("PUT "+SnapshotPath, func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxSnapshotBytes))
		if err != nil {
			var mb *http.MaxBytesError
			if errors.As(err, &mb) {
				writeJSON(w, http.StatusRequestEntityTooLarge, ErrResponse{HTTPStatusCode: http.StatusRequestEntityTooLarge,
					Message: fmt.Sprintf("snapshot is larger than the limit of %d MiB", MaxSnapshotBytes>>20)})
				return
			}
			h.fail(w, r, &ValidationError{Msg: fmt.Sprintf("cannot read the snapshot: %v", err)})
			return
		}
		if len(body) == 0 {
			h.fail(w, r, &ValidationError{Msg: "request body is empty; send a snapshot file (cube operator snapshot save)"})
			return
		}
		if !h.serveHere(w, r, body, true) {
			return
		}
		info, err := ss.RestoreSnapshot(r.Context(), body)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, info)
	})
}

// SaveSnapshot returns a snapshot file of the cluster's state, taken by the
// leader.
func (c *Client) SaveSnapshot(ctx context.Context) ([]byte, error) {
	var file []byte
	if _, err := c.call(ctx, http.MethodGet, SnapshotPath, nil, &rawBody{&file}); err != nil {
		return nil, fmt.Errorf("save snapshot: %w", err)
	}
	if len(file) == 0 {
		return nil, errors.New("save snapshot: the manager answered an empty snapshot")
	}
	return file, nil
}

// RestoreSnapshot replaces the cluster's whole state with a snapshot file's.
func (c *Client) RestoreSnapshot(ctx context.Context, file []byte) (SnapshotInfo, error) {
	var info SnapshotInfo
	if _, err := c.call(ctx, http.MethodPut, SnapshotPath, file, &info); err != nil {
		return SnapshotInfo{}, fmt.Errorf("restore snapshot: %w", err)
	}
	return info, nil
}
