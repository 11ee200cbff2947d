package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
	"go.etcd.io/bbolt"
)

// operatorFake answers the operator routes: a cluster of m1 (leader), m2
// (a voter gossip holds dead) and m3 (a non-voter), a snapshot to save, and
// records what it was sent.
type operatorFake struct {
	*httptest.Server
	mu       sync.Mutex
	calls    []string
	restored []byte
	file     []byte // what GET /operator/snapshot answers
}

func newOperatorFake(t *testing.T) *operatorFake {
	t.Helper()
	state := []byte(`{"Version":2,"Tasks":[],"Workers":[]}` + "\n")
	file, _, err := fsm.EncodeSnapshotFile(state, 42, 3, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	f := &operatorFake{file: file}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.calls = append(f.calls, r.Method+" "+r.URL.Path)
		switch r.Method + " " + r.URL.Path {
		case "GET /cluster":
			_ = json.NewEncoder(w).Encode(api.ClusterInfo{Self: "m1", Servers: []api.RaftServer{
				{ID: "m1", Addr: "127.0.0.1:6556", API: "127.0.0.1:5556", Voter: true, Leader: true},
				{ID: "m2", Addr: "127.0.0.1:6566", API: "127.0.0.1:5566", Voter: true},
				{ID: "m3", Addr: "127.0.0.1:6576", API: "127.0.0.1:5576"},
			}, Members: []api.GossipMember{
				{Name: "manager-m1", Role: "manager", API: "127.0.0.1:5556", State: "alive"},
				{Name: "manager-m2", Role: "manager", API: "127.0.0.1:5566", State: "dead"},
				{Name: "manager-m3", Role: "manager", API: "127.0.0.1:5576", State: "alive"},
			}})
		case "DELETE /cluster/servers/m2":
			w.WriteHeader(http.StatusNoContent)
		case "GET /operator/snapshot":
			_, _ = w.Write(f.file)
		case "PUT /operator/snapshot":
			f.restored = body
			info, _, err := fsm.DecodeSnapshotFile(bytes.NewReader(body))
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				_ = json.NewEncoder(w).Encode(api.ErrResponse{HTTPStatusCode: 400, Message: err.Error()})
				return
			}
			_ = json.NewEncoder(w).Encode(info)
		default:
			http.Error(w, "unexpected", http.StatusNotFound)
		}
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *operatorFake) takeCalls() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := strings.Join(f.calls, ", ")
	f.calls = nil
	return c
}

func TestOperatorRaft_ListAndRemovePeers(t *testing.T) {
	f := newOperatorFake(t)
	addr := strings.TrimPrefix(f.URL, "http://")
	out, err := cube(t, addr, "operator", "raft", "list-peers")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ID  ADDRESS         VOTER  LEADER  STATE\n",
		"m1  127.0.0.1:6556  true   true    leader\n",
		"m2  127.0.0.1:6566  true   false   follower (dead)\n",
		"m3  127.0.0.1:6576  false  false   non-voter\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("list-peers printed\n%s\nwithout %q", out, want)
		}
	}
	out, err = cube(t, addr, "operator", "raft", "list-peers", "-o", "json")
	var peers []peer
	if err != nil || json.Unmarshal([]byte(out), &peers) != nil || len(peers) != 3 || peers[1].State != "follower (dead)" {
		t.Errorf("list-peers -o json: %v\n%s", err, out)
	}
	f.takeCalls()

	for _, arg := range []string{"m2", "127.0.0.1:6566"} {
		out, err := cube(t, addr, "operator", "raft", "remove-peer", arg)
		if err != nil || out != "manager m2 removed from the raft configuration\n" {
			t.Errorf("remove-peer %s: %v\n%s", arg, err, out)
		}
		if calls := f.takeCalls(); !strings.HasSuffix(calls, "DELETE /cluster/servers/m2") {
			t.Errorf("remove-peer %s called %q", arg, calls)
		}
	}
	if _, err := cube(t, addr, "operator", "raft", "remove-peer", "127.0.0.1:9"); err == nil || !strings.Contains(err.Error(), "no raft server has the address 127.0.0.1:9") {
		t.Errorf("remove-peer of an unknown address: %v", err)
	}
	if calls := f.takeCalls(); strings.Contains(calls, "DELETE") {
		t.Errorf("an unknown address removed something: %q", calls)
	}
}

func TestOperatorSnapshot_SaveInspectRestore(t *testing.T) {
	f := newOperatorFake(t)
	addr := strings.TrimPrefix(f.URL, "http://")
	path := filepath.Join(t.TempDir(), "backup.snap")
	out, err := cube(t, addr, "operator", "snapshot", "save", path)
	if err != nil || !strings.Contains(out, "saved "+path+": index 42, term 3, 0 tasks") {
		t.Fatalf("save: %v\n%s", err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(b, f.file) {
		t.Fatalf("saved file differs from the manager's: %v", err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("saved file mode %v, want 0600 (it holds token hashes)", fi.Mode().Perm())
	}

	out, err = runRoot(t, "operator", "snapshot", "inspect", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Format   1\n", "Version  2\n", "Index    42\n", "Term     3\n", "SHA256   ", "Tasks    0\n", "Tokens   0\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect printed\n%s\nwithout %q", out, want)
		}
	}
	out, err = runRoot(t, "operator", "snapshot", "inspect", path, "-o", "json")
	var info api.SnapshotInfo
	if err != nil || json.Unmarshal([]byte(out), &info) != nil || info.Index != 42 || len(info.SHA256) != 64 {
		t.Errorf("inspect -o json: %v\n%s", err, out)
	}
	f.takeCalls()

	out, err = cube(t, addr, "operator", "snapshot", "restore", path)
	if err != nil || !strings.Contains(out, "restored "+path+": index 42, term 3") {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	f.mu.Lock()
	if !bytes.Equal(f.restored, f.file) {
		t.Errorf("restore sent %d bytes, not the file", len(f.restored))
	}
	f.mu.Unlock()
	f.takeCalls()

	// A damaged file is refused by inspect and restore, before any manager
	// is asked.
	bad := bytes.Clone(b)
	bad[len(bad)-3] ^= 0x01
	badPath := filepath.Join(t.TempDir(), "bad.snap")
	if err := os.WriteFile(badPath, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runRoot(t, "operator", "snapshot", "inspect", badPath); err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Errorf("snapshot inspect of a damaged file: %v", err)
	}
	if _, err := cube(t, addr, "operator", "snapshot", "restore", badPath); err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Errorf("snapshot restore of a damaged file: %v", err)
	}
	if calls := f.takeCalls(); calls != "" {
		t.Errorf("a damaged file reached the manager: %q", calls)
	}

	// A damaged answer is not written.
	f.mu.Lock()
	f.file = bad
	f.mu.Unlock()
	other := filepath.Join(t.TempDir(), "other.snap")
	if _, err := cube(t, addr, "operator", "snapshot", "save", other); err == nil || !strings.Contains(err.Error(), "nothing written") {
		t.Errorf("save of a damaged answer: %v", err)
	}
	if _, err := os.Stat(other); err == nil {
		t.Error("a damaged snapshot was written")
	}
}

func TestOperatorRaft_Recover(t *testing.T) {
	data := t.TempDir()
	if _, err := runRoot(t, "operator", "raft", "recover", "--data", data, "--peers", "m1=127.0.0.1:6556"); err == nil || !strings.Contains(err.Error(), "raft.db") {
		t.Errorf("recover without raft state: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(data, "raft"), 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := bbolt.Open(filepath.Join(data, "raft", "raft.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	for _, tc := range []struct{ peers, want string }{
		{"m1", `peer "m1" is not ID=HOST:PORT`},
		{"m1=localhost:6556", "is not IP:PORT"},
	} {
		if _, err := runRoot(t, "operator", "raft", "recover", "--data", data, "--peers", tc.peers); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("recover --peers %s: %v, want %q", tc.peers, err, tc.want)
		}
	}
	out, err := runRoot(t, "operator", "raft", "recover", "--data", data, "--peers", "m1=127.0.0.1:6556")
	if err != nil || !strings.Contains(out, "peers.json (1 server(s))") {
		t.Fatalf("recover: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(data, "raft", "peers.json"))
	var entries []map[string]any
	if err != nil || json.Unmarshal(b, &entries) != nil || len(entries) != 1 || entries[0]["id"] != "m1" || entries[0]["address"] != "127.0.0.1:6556" {
		t.Errorf("peers.json = %s, %v", b, err)
	}
}
