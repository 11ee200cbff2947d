package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Gossip keyring routes: rotation of the gossip encryption key without
// downtime, as Consul's `consul keyring` does it. An operator installs the
// new key on every node, makes it primary everywhere, then removes the old
// one; each step is one request to any manager, which applies it to every
// member of the gossip pool (itself, the other managers, every worker)
// over their APIs and answers node by node.
//
// Manager API (operator):
//
//	GET  /gossip/keyring        the keys of every member ([]NodeKeyring)
//	POST /gossip/keyring        apply a KeyringRequest on every member ([]KeyringResult)
//	GET  /gossip/keyring/local  this manager's keys (NodeKeyring)
//	POST /gossip/keyring/local  apply a KeyringRequest on this manager only; 204
//
// Worker API (managers only):
//
//	GET  /gossip/keyring        this worker's keys (NodeKeyring)
//	POST /gossip/keyring        apply a KeyringRequest on this worker; 204
//
// Refusals that leave a node's ring as it was (encryption off, using a key
// not installed, removing the primary key) answer 409.

// Paths of the keyring routes.
const (
	// KeyringPath is the cluster-wide route on a manager, and the worker's
	// own route on a worker.
	KeyringPath = "/gossip/keyring"
	// LocalKeyringPath is a manager's route for its own ring only, which
	// the manager applying a cluster-wide change calls on the others.
	LocalKeyringPath = "/gossip/keyring/local"
)

// Keyring operations.
const (
	// KeyringInstall adds a key: the node accepts it, still encrypts with
	// its primary key.
	KeyringInstall = "install"
	// KeyringUse makes an installed key primary: the node encrypts with it.
	KeyringUse = "use"
	// KeyringRemove removes a key that is not primary.
	KeyringRemove = "remove"
)

// KeyringRequest is the body of POST /gossip/keyring.
type KeyringRequest struct {
	// Op is KeyringInstall, KeyringUse or KeyringRemove.
	Op string
	// Key is the gossip key, base64 (as cube keygen prints it).
	Key string
}

// DecodeKey checks the request and returns the key's bytes: 16, 24 or 32
// (AES-128, -192, -256). Its errors are *ValidationError.
func (r KeyringRequest) DecodeKey() ([]byte, error) {
	switch r.Op {
	case KeyringInstall, KeyringUse, KeyringRemove:
	default:
		return nil, &ValidationError{Msg: fmt.Sprintf("Op %q is not %q, %q or %q", r.Op, KeyringInstall, KeyringUse, KeyringRemove)}
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(r.Key))
	if err != nil {
		return nil, &ValidationError{Msg: "Key is not base64: " + err.Error()}
	}
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	}
	return nil, &ValidationError{Msg: fmt.Sprintf("Key is %d bytes; want 16, 24 or 32 (make one with cube keygen)", len(key))}
}

// NodeKeyring is one node's gossip keyring.
type NodeKeyring struct {
	// Node is the node's gossip name; Role "manager" or "worker".
	Node string
	Role string
	// Primary is the key the node encrypts with; Keys every key it
	// accepts, Primary first. Both base64.
	Primary string `json:",omitempty"`
	Keys    []string
	// Error says why the node's ring could not be read ("" when it was).
	Error string `json:",omitempty"`
}

// KeyringResult is the outcome of a keyring operation on one node.
type KeyringResult struct {
	// Node is the node's gossip name; Role "manager" or "worker".
	Node string
	Role string
	// OK is true when the node's ring is as the operation asked.
	OK bool
	// Error says why not.
	Error string `json:",omitempty"`
}

// GossipKeyring is one node's own gossip keyring; *cluster.Pool implements
// it. Keys are raw bytes, the primary first.
type GossipKeyring interface {
	LocalName() string
	Encrypted() bool
	ListKeys() [][]byte
	InstallKey(key []byte) error
	UseKey(key []byte) error
	RemoveKey(key []byte) error
}

// ClusterKeyring is what the manager's keyring routes need. A
// ManagerService that implements it serves them.
type ClusterKeyring interface {
	// LocalGossipKeyring is this manager's own ring.
	LocalGossipKeyring() GossipKeyring
	// GossipKeyrings reads every member's ring.
	GossipKeyrings(ctx context.Context) []NodeKeyring
	// ChangeGossipKeyring applies op with key on every member and answers
	// for each.
	ChangeGossipKeyring(ctx context.Context, op string, key []byte) []KeyringResult
}

// WorkerKeyring is what the worker's keyring routes need. A WorkerService
// that implements it, with a non-nil ring, serves them.
type WorkerKeyring interface {
	LocalGossipKeyring() GossipKeyring
}

// registerManagerKeyring adds the manager's keyring routes to mux when svc
// implements ClusterKeyring.
func registerManagerKeyring(mux routeRegistrar, svc ManagerService) {
	ck, ok := svc.(ClusterKeyring)
	if !ok {
		return
	}
	mux.HandleFunc("GET "+KeyringPath, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, ck.GossipKeyrings(r.Context()))
	})
	mux.HandleFunc("POST "+KeyringPath, func(w http.ResponseWriter, r *http.Request) {
		req, key, err := decodeKeyringRequest(w, r)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, ck.ChangeGossipKeyring(r.Context(), req.Op, key))
	})
	serveLocalKeyring(mux, LocalKeyringPath, "manager", ck.LocalGossipKeyring())
}

// registerWorkerKeyring adds the worker's keyring routes to mux when svc
// implements WorkerKeyring with a ring (a worker in a gossip pool).
func registerWorkerKeyring(mux routeRegistrar, svc WorkerService) {
	if wk, ok := svc.(WorkerKeyring); ok && wk.LocalGossipKeyring() != nil {
		serveLocalKeyring(mux, KeyringPath, "worker", wk.LocalGossipKeyring())
	}
}

// serveLocalKeyring adds GET and POST path for ring.
func serveLocalKeyring(mux routeRegistrar, path, role string, ring GossipKeyring) {
	mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, LocalKeyring(ring, role))
	})
	mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
		req, key, err := decodeKeyringRequest(w, r)
		if err == nil {
			err = ApplyKeyringOp(ring, req.Op, key)
		}
		if err != nil {
			writeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// decodeKeyringRequest reads and checks a KeyringRequest body.
func decodeKeyringRequest(w http.ResponseWriter, r *http.Request) (KeyringRequest, []byte, error) {
	var req KeyringRequest
	body, err := readBody(w, r)
	if err != nil {
		return req, nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, nil, &ValidationError{Msg: `body must be {"Op":"install|use|remove","Key":"BASE64"}: ` + err.Error()}
	}
	if dec.More() {
		return req, nil, &ValidationError{Msg: "body must hold one JSON object"}
	}
	key, err := req.DecodeKey()
	return req, key, err
}

// LocalKeyring describes ring as the keyring routes show it.
func LocalKeyring(ring GossipKeyring, role string) NodeKeyring {
	nk := NodeKeyring{Node: ring.LocalName(), Role: role, Keys: []string{}}
	for _, k := range ring.ListKeys() {
		nk.Keys = append(nk.Keys, base64.StdEncoding.EncodeToString(k))
	}
	if len(nk.Keys) > 0 {
		nk.Primary = nk.Keys[0]
	} else {
		nk.Error = "gossip encryption is off on this node"
	}
	return nk
}

// ApplyKeyringOp applies op with key to ring. What would leave the ring
// unusable or cannot apply is refused with an error wrapping ErrConflict
// (409) naming the fix; an operation that finds the ring already as asked
// (installing an installed key, removing an absent one) succeeds.
func ApplyKeyringOp(ring GossipKeyring, op string, key []byte) error {
	if !ring.Encrypted() {
		return fmt.Errorf("%w: gossip encryption is off on this node (it was started without a gossip key); restart it with one to turn it on", ErrConflict)
	}
	keys := ring.ListKeys()
	has := func(k []byte) bool {
		for _, x := range keys {
			if bytes.Equal(x, k) {
				return true
			}
		}
		return false
	}
	switch op {
	case KeyringInstall:
		return ring.InstallKey(key)
	case KeyringUse:
		if !has(key) {
			return fmt.Errorf("%w: the key is not installed on this node; install it on every node first", ErrConflict)
		}
		return ring.UseKey(key)
	case KeyringRemove:
		if len(keys) > 0 && bytes.Equal(keys[0], key) {
			return fmt.Errorf("%w: the key is this node's primary key; use another key on every node first", ErrConflict)
		}
		return ring.RemoveKey(key)
	}
	return &ValidationError{Msg: fmt.Sprintf("unknown keyring operation %q", op)}
}

// KeyringClient calls one node's own keyring route: the manager applying a
// cluster-wide change calls the other managers (LocalKeyringPath) and the
// workers (KeyringPath) with it.
type KeyringClient struct {
	hc      *http.Client
	timeout time.Duration
}

// NewKeyringClient returns a client whose requests go through hc (which
// carries the TLS configuration for the peers' role) and each take at most
// timeout (DefaultRequestTimeout when ≤ 0).
func NewKeyringClient(hc *http.Client, timeout time.Duration) *KeyringClient {
	if timeout <= 0 {
		timeout = DefaultRequestTimeout
	}
	return &KeyringClient{hc: hc, timeout: timeout}
}

// Keys reads the ring of the node whose API is at base (a URL,
// "https://host:port") through path.
func (c *KeyringClient) Keys(ctx context.Context, base, path string) (NodeKeyring, error) {
	var nk NodeKeyring
	err := c.do(ctx, http.MethodGet, base+path, nil, &nk)
	return nk, err
}

// Change applies req on the node whose API is at base through path.
func (c *KeyringClient) Change(ctx context.Context, base, path string, req KeyringRequest) error {
	return c.do(ctx, http.MethodPost, base+path, EncodeJSON(req), nil)
}

func (c *KeyringClient) do(ctx context.Context, method, url string, body []byte, out any) error {
	ans, err := roundTrip(ctx, c.hc, c.timeout, method, url, body)
	if err != nil {
		return err
	}
	if ans.status < 200 || ans.status > 299 {
		return responseError(ans.status, ans.body)
	}
	return ans.decode(out)
}

// GossipKeyrings returns the keys of every member of the gossip pool, as
// the manager that answers reaches them.
func (c *Client) GossipKeyrings(ctx context.Context) ([]NodeKeyring, error) {
	var out []NodeKeyring
	if _, err := c.call(ctx, http.MethodGet, KeyringPath, nil, &out); err != nil {
		return nil, fmt.Errorf("list gossip keys: %w", err)
	}
	return out, nil
}

// ChangeGossipKeyring applies req on every member of the gossip pool and
// returns each node's outcome. An error means the request was not carried
// out at all; a node that failed is reported in its result.
func (c *Client) ChangeGossipKeyring(ctx context.Context, req KeyringRequest) ([]KeyringResult, error) {
	if _, err := req.DecodeKey(); err != nil {
		return nil, err
	}
	var out []KeyringResult
	if _, err := c.call(ctx, http.MethodPost, KeyringPath, EncodeJSON(req), &out); err != nil {
		return nil, fmt.Errorf("%s gossip key: %w", req.Op, err)
	}
	if out == nil {
		return nil, errors.New("the manager answered no result")
	}
	return out, nil
}

// routeRegistrar is what the keyring routes are registered on: an
// http.ServeMux, or the manager's routeMux that records every pattern for
// the permission table.
type routeRegistrar interface {
	HandleFunc(pattern string, fn func(http.ResponseWriter, *http.Request))
}
