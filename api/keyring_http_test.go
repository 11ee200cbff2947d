package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
)

// memRing is an in-memory GossipKeyring with memberlist's rules.
type memRing struct {
	mu   sync.Mutex
	name string
	keys [][]byte // primary first; nil: encryption off
}

var _ GossipKeyring = (*memRing)(nil)

func (r *memRing) LocalName() string { return r.name }
func (r *memRing) Encrypted() bool   { r.mu.Lock(); defer r.mu.Unlock(); return r.keys != nil }
func (r *memRing) ListKeys() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.keys)
}
func (r *memRing) index(k []byte) int {
	return slices.IndexFunc(r.keys, func(x []byte) bool { return bytes.Equal(x, k) })
}
func (r *memRing) InstallKey(k []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.index(k) < 0 {
		r.keys = append(r.keys, k)
	}
	return nil
}
func (r *memRing) UseKey(k []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := r.index(k)
	if i < 0 {
		return errors.New("not installed")
	}
	r.keys = append([][]byte{k}, slices.Delete(r.keys, i, i+1)...)
	return nil
}
func (r *memRing) RemoveKey(k []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i := r.index(k); i == 0 {
		return errors.New("primary")
	} else if i > 0 {
		r.keys = slices.Delete(r.keys, i, i+1)
	}
	return nil
}

// keyringManager is a ManagerService with the keyring routes: only the
// methods those routes (and the handler's leader stamp) use are real.
type keyringManager struct {
	ManagerService
	ring *memRing
}

func (m *keyringManager) Leader() (string, bool)            { return "", true }
func (m *keyringManager) LocalGossipKeyring() GossipKeyring { return m.ring }
func (m *keyringManager) GossipKeyrings(context.Context) []NodeKeyring {
	return []NodeKeyring{LocalKeyring(m.ring, "manager")}
}
func (m *keyringManager) ChangeGossipKeyring(_ context.Context, op string, key []byte) []KeyringResult {
	res := KeyringResult{Node: m.ring.name, Role: "manager", OK: true}
	if err := ApplyKeyringOp(m.ring, op, key); err != nil {
		res.OK, res.Error = false, err.Error()
	}
	return []KeyringResult{res}
}

// keyringWorker is a WorkerService with a keyring.
type keyringWorker struct {
	WorkerService
	ring GossipKeyring
}

func (w keyringWorker) LocalGossipKeyring() GossipKeyring { return w.ring }

func testKey(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }
func b64(k []byte) string          { return base64.StdEncoding.EncodeToString(k) }

// post sends body to url and returns the status and the ErrResponse message.
func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ans, _ := roundTripBody(resp)
	return resp.StatusCode, ans
}

func roundTripBody(resp *http.Response) (string, error) {
	var buf bytes.Buffer
	_, err := buf.ReadFrom(resp.Body)
	return buf.String(), err
}

// The manager's routes: the cluster-wide list and change through the Go
// client, the local route's refusals (409) and the checks of the body (400),
// none of which touches the ring.
func TestKeyringRoutes_Manager(t *testing.T) {
	a, b := testKey(1, 32), testKey(2, 16)
	ring := &memRing{name: "manager-m1", keys: [][]byte{a}}
	srv := httptest.NewServer(NewManagerHandler(&keyringManager{ring: ring}, ManagerHandlerOptions{}))
	defer srv.Close()
	c, err := NewClient([]string{srv.URL}, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	res, err := c.ChangeGossipKeyring(ctx, KeyringRequest{Op: KeyringInstall, Key: b64(b)})
	if err != nil || len(res) != 1 || !res[0].OK {
		t.Fatalf("install through the client: %+v, %v", res, err)
	}
	res, err = c.ChangeGossipKeyring(ctx, KeyringRequest{Op: KeyringRemove, Key: b64(a)})
	if err != nil || len(res) != 1 || res[0].OK || !strings.Contains(res[0].Error, "primary key") {
		t.Fatalf("remove the primary through the client: %+v, %v; want a per-node refusal", res, err)
	}
	list, err := c.GossipKeyrings(ctx)
	if err != nil || len(list) != 1 || list[0].Primary != b64(a) || !slices.Equal(list[0].Keys, []string{b64(a), b64(b)}) {
		t.Fatalf("list: %+v, %v", list, err)
	}
	if _, err := c.ChangeGossipKeyring(ctx, KeyringRequest{Op: "rotate", Key: b64(b)}); err == nil {
		t.Fatal("the client sent an unknown op")
	}

	local := srv.URL + LocalKeyringPath
	for _, tc := range []struct {
		name, body string
		status     int
		msg        string
	}{
		{"not JSON", `{`, 400, "body must be"},
		{"unknown field", `{"Op":"use","Key":"` + b64(b) + `","Force":true}`, 400, "unknown field"},
		{"two objects", `{"Op":"use","Key":"` + b64(b) + `"}{}`, 400, "one JSON object"},
		{"unknown op", `{"Op":"rotate","Key":"` + b64(b) + `"}`, 400, "is not"},
		{"not base64", `{"Op":"install","Key":"%%"}`, 400, "not base64"},
		{"wrong size", `{"Op":"install","Key":"` + b64(testKey(3, 20)) + `"}`, 400, "20 bytes"},
		{"use a key not installed", `{"Op":"use","Key":"` + b64(testKey(4, 32)) + `"}`, 409, "not installed"},
		{"remove the primary", `{"Op":"remove","Key":"` + b64(a) + `"}`, 409, "primary key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := post(t, local, tc.body)
			if status != tc.status || !strings.Contains(body, tc.msg) || !strings.Contains(body, `"HTTPStatusCode":`) {
				t.Fatalf("POST %s %s = %d %s; want %d with %q", LocalKeyringPath, tc.body, status, body, tc.status, tc.msg)
			}
			if got := ring.ListKeys(); len(got) != 2 || !bytes.Equal(got[0], a) {
				t.Fatalf("ring changed: %d keys", len(got))
			}
		})
	}
	if status, body := post(t, local, `{"Op":"use","Key":"`+b64(b)+`"}`); status != http.StatusNoContent {
		t.Fatalf("use an installed key locally: %d %s", status, body)
	}
	if got := ring.ListKeys(); !bytes.Equal(got[0], b) {
		t.Fatal("use did not make the key primary")
	}

	ring.keys = nil
	if status, body := post(t, local, `{"Op":"install","Key":"`+b64(b)+`"}`); status != http.StatusConflict || !strings.Contains(body, "encryption is off") {
		t.Fatalf("install with encryption off: %d %s", status, body)
	}
}

// A worker serves its own ring on /gossip/keyring; a worker without one
// (alone, or a service without the keyring) serves no such route.
func TestKeyringRoutes_Worker(t *testing.T) {
	a, b := testKey(1, 32), testKey(2, 32)
	ring := &memRing{name: "w1", keys: [][]byte{a}}
	srv := httptest.NewServer(NewWorkerHandler(keyringWorker{ring: ring}))
	defer srv.Close()
	kc := NewKeyringClient(srv.Client(), 0)
	ctx := context.Background()
	if err := kc.Change(ctx, srv.URL, KeyringPath, KeyringRequest{Op: KeyringInstall, Key: b64(b)}); err != nil {
		t.Fatal(err)
	}
	err := kc.Change(ctx, srv.URL, KeyringPath, KeyringRequest{Op: KeyringRemove, Key: b64(a)})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("remove the primary: %v, want ErrConflict", err)
	}
	nk, err := kc.Keys(ctx, srv.URL, KeyringPath)
	if err != nil || nk.Node != "w1" || nk.Role != "worker" || !slices.Equal(nk.Keys, []string{b64(a), b64(b)}) {
		t.Fatalf("keys: %+v, %v", nk, err)
	}

	for name, svc := range map[string]WorkerService{
		"no keyring":  &fakeWorker{},
		"alone (nil)": keyringWorker{WorkerService: &fakeWorker{}},
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(NewWorkerHandler(svc))
			defer srv.Close()
			status, body := post(t, srv.URL+KeyringPath, fmt.Sprintf(`{"Op":"install","Key":%q}`, b64(b)))
			if status != http.StatusNotFound {
				t.Fatalf("POST %s = %d %s, want 404", KeyringPath, status, body)
			}
		})
	}
}
