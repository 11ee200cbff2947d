package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/security"
)

// local runs a command of cube that takes no manager.
func local(args ...string) (string, error) {
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestKeygen(t *testing.T) {
	out, err := local("keygen")
	if err != nil {
		t.Fatal(err)
	}
	if k, err := security.DecodeGossipKey(out); err != nil || len(k) != 32 {
		t.Fatalf("cube keygen printed %q: %d bytes, %v", out, len(k), err)
	}
	again, _ := local("keygen")
	if again == out {
		t.Fatal("cube keygen printed the same key twice")
	}
	out, err = local("keygen", "--token")
	if err != nil || !strings.HasPrefix(out, security.TokenPrefix) {
		t.Fatalf("cube keygen --token printed %q, %v", out, err)
	}
}

// keyringManager answers the keyring routes with fixed values and records
// the POST bodies.
type keyringManager struct {
	*httptest.Server
	mu    sync.Mutex
	posts []api.KeyringRequest
	fail  bool // POST reports w2 failed
}

func newKeyringManager(t *testing.T) *keyringManager {
	km := &keyringManager{}
	km.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var v any
		switch r.Method + " " + r.URL.Path {
		case "GET " + api.KeyringPath:
			v = []api.NodeKeyring{
				{Node: "manager-m1", Role: "manager", Primary: "OLD", Keys: []string{"OLD", "NEW"}},
				{Node: "w1", Role: "worker", Primary: "NEW", Keys: []string{"NEW", "OLD"}},
				{Node: "w2", Role: "worker", Keys: []string{}, Error: "node is dead: not reached"},
			}
		case "POST " + api.KeyringPath:
			var req api.KeyringRequest
			_ = json.NewDecoder(r.Body).Decode(&req)
			km.mu.Lock()
			km.posts = append(km.posts, req)
			fail := km.fail
			km.mu.Unlock()
			v = []api.KeyringResult{{Node: "manager-m1", Role: "manager", OK: true}, {Node: "w2", Role: "worker", OK: !fail}}
			if fail {
				v.([]api.KeyringResult)[1].Error = "node is dead: not reached"
			}
		default:
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(v)
	}))
	t.Cleanup(km.Close)
	return km
}

func TestGossipKeyring_Commands(t *testing.T) {
	km := newKeyringManager(t)
	addr := strings.TrimPrefix(km.URL, "http://")
	out, err := cube(t, addr, "gossip", "keyring", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"KEY  PRIMARY ON  INSTALLED ON\nOLD  1/2         2/2\nNEW  1/2         2/2\n",
		"w2    worker  node is dead: not reached\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("cube gossip keyring list printed\n%s\nwithout\n%s", out, want)
		}
	}

	key, _ := security.NewGossipKey()
	out, err = cube(t, addr, "gossip", "keyring", "install", key)
	if err != nil || !strings.Contains(out, "gossip keyring install done on all 2 nodes") {
		t.Fatalf("install: %v\n%s", err, out)
	}
	km.mu.Lock()
	km.fail = true
	km.mu.Unlock()
	out, err = cube(t, addr, "gossip", "keyring", "use", key)
	if err == nil || !strings.Contains(err.Error(), "failed on 1 of 2 nodes") || !strings.Contains(out, "w2          worker   failed: node is dead") {
		t.Fatalf("use with a dead node: %v\n%s", err, out)
	}
	km.mu.Lock()
	posts := km.posts
	km.mu.Unlock()
	if len(posts) != 2 || posts[0] != (api.KeyringRequest{Op: "install", Key: key}) || posts[1].Op != "use" {
		t.Fatalf("requests sent: %+v", posts)
	}

	short := base64.StdEncoding.EncodeToString([]byte("short"))
	if _, err := cube(t, addr, "gossip", "keyring", "remove", short); err == nil || !strings.Contains(err.Error(), "5 bytes") {
		t.Fatalf("remove with a 5-byte key: %v", err)
	}
	km.mu.Lock()
	defer km.mu.Unlock()
	if len(km.posts) != 2 {
		t.Fatal("a bad key was sent to the manager")
	}
}
