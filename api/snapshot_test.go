package api

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"testing"
)

// fakeSnapshot is the file the fake manager's SaveSnapshot returns.
var fakeSnapshot = []byte("{\"Kind\":\"cube-snapshot\"}\nstate")

// SaveSnapshot and RestoreSnapshot of the fake (api.SnapshotService): only
// the leader acts; a restore of "bad" is refused as damaged.
func (f *fakeManager) SaveSnapshot(context.Context) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.self {
		f.calls["SaveSnapshot"]++
		return nil, ErrNotLeader
	}
	if inj, ok := f.enterLocked("SaveSnapshot"); ok {
		return nil, inj.err
	}
	return fakeSnapshot, nil
}

func (f *fakeManager) RestoreSnapshot(_ context.Context, file []byte) (SnapshotInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.self {
		f.calls["RestoreSnapshot"]++
		return SnapshotInfo{}, ErrNotLeader
	}
	if inj, ok := f.enterLocked("RestoreSnapshot"); ok {
		return SnapshotInfo{}, inj.err
	}
	if string(file) == "bad" {
		return SnapshotInfo{}, &ValidationError{Msg: "unusable snapshot file: checksum mismatch"}
	}
	f.calls["RestoreSnapshot:"+string(file)]++
	return SnapshotInfo{Kind: SnapshotKind, Format: SnapshotFormat, Tasks: 1}, nil
}

var _ SnapshotService = (*fakeManager)(nil)

// Save and restore through a follower reach the leader (the snapshot is
// the leader's, taken after its barrier) and come back whole; the client
// carries the file as bytes both ways.
func TestSnapshotRoutes_ForwardedToLeader(t *testing.T) {
	c := newTestCluster(t, 3, 0, ManagerHandlerOptions{})
	cl, err := NewClient(c.addrs[2:3], ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	file, err := cl.SaveSnapshot(ctx)
	if err != nil || !bytes.Equal(file, fakeSnapshot) {
		t.Fatalf("SaveSnapshot = %q, %v; want %q", file, err, fakeSnapshot)
	}
	if n := c.fakes[0].count("SaveSnapshot"); n != 1 {
		t.Errorf("the leader took %d snapshots, want 1", n)
	}
	info, err := cl.RestoreSnapshot(ctx, []byte("good"))
	if err != nil || info.Tasks != 1 || info.Kind != SnapshotKind {
		t.Fatalf("RestoreSnapshot = %+v, %v", info, err)
	}
	if n := c.fakes[0].count("RestoreSnapshot:good"); n != 1 {
		t.Errorf("the leader restored %d times, want 1", n)
	}
}

// A damaged file is 400 with the reason, an empty body 400 before any
// forwarding, and neither restores anything.
func TestSnapshotRoutes_Refusals(t *testing.T) {
	c := newTestCluster(t, 3, 0, ManagerHandlerOptions{})
	r := doHTTP(t, http.MethodPut, c.url(1, SnapshotPath), []byte("bad"), nil)
	if r.status != http.StatusBadRequest || !bytes.Contains(r.body, []byte("checksum mismatch")) {
		t.Errorf("PUT bad: %d %s; want 400 naming the checksum", r.status, r.body)
	}
	r = doHTTP(t, http.MethodPut, c.url(1, SnapshotPath), nil, nil)
	if r.status != http.StatusBadRequest || !bytes.Contains(r.body, []byte("body is empty")) {
		t.Errorf("PUT empty: %d %s; want 400", r.status, r.body)
	}
	if n := c.fakes[0].count("RestoreSnapshot") + c.fakes[1].count("RestoreSnapshot"); n != 1 {
		t.Errorf("RestoreSnapshot reached %d times, want once (the bad file, refused by the leader)", n)
	}
	cl, err := NewClient(c.addrs[:1], ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.RestoreSnapshot(context.Background(), []byte("bad"))
	var se *StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusBadRequest || !bytes.Contains([]byte(se.Message), []byte("checksum")) {
		t.Errorf("client RestoreSnapshot(bad) = %v; want a 400 StatusError naming the checksum", err)
	}
}
