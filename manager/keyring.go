package manager

import (
	"context"
	"encoding/base64"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/security"
	"github.com/hashicorp/go-hclog"
)

// keyringCallTimeout bounds one call to another member's keyring route.
const keyringCallTimeout = 5 * time.Second

// keyring serves the gossip keyring routes of a manager (api.ClusterKeyring):
// its own ring, and the cluster-wide operations, which it carries to every
// member of the gossip pool over the members' APIs (managers on
// api.LocalKeyringPath, workers on api.KeyringPath), with mutual TLS and
// the peer's role checked when TLS is on.
type keyring struct {
	pool     *cluster.Pool
	scheme   string // "https" with TLS, else "http"
	managers *api.KeyringClient
	workers  *api.KeyringClient
	log      hclog.Logger
}

var _ api.ClusterKeyring = (*keyring)(nil)

func newKeyring(pool *cluster.Pool, bundle *security.Bundle, sourceIP string, log hclog.Logger) *keyring {
	k := &keyring{pool: pool, scheme: "http", log: log.Named("keyring")}
	if bundle != nil {
		k.scheme = "https"
	}
	k.managers = api.NewKeyringClient(peerHTTPClient(sourceIP, bundle, security.RoleManager), keyringCallTimeout)
	k.workers = api.NewKeyringClient(peerHTTPClient(sourceIP, bundle, security.RoleWorker), keyringCallTimeout)
	return k
}

// peerHTTPClient is an HTTP client of Cube's transport that, with bundle,
// presents this manager's certificate and accepts only a peer of role.
func peerHTTPClient(sourceIP string, bundle *security.Bundle, role security.Role) *http.Client {
	hc := api.NewHTTPClient(sourceIP)
	if t, ok := hc.Transport.(*http.Transport); ok && bundle != nil {
		t.TLSClientConfig = bundle.ClientConfig(role)
	}
	return hc
}

// LocalGossipKeyring is this manager's own ring.
func (k *keyring) LocalGossipKeyring() api.GossipKeyring { return k.pool }

// GossipKeyrings reads the ring of every member the pool sees alive or
// suspect; a dead member is listed with the reason it was not asked.
func (k *keyring) GossipKeyrings(ctx context.Context) []api.NodeKeyring {
	return fanOut(k.pool.Members(), func(m cluster.Member) api.NodeKeyring {
		nk := api.NodeKeyring{Node: m.Name, Role: string(m.Meta.Role), Keys: []string{}}
		switch {
		case m.Name == k.pool.LocalName():
			return api.LocalKeyring(k.pool, string(cluster.RoleManager))
		case !k.reachable(m, &nk.Error):
			return nk
		}
		client, path := k.route(m)
		got, err := client.Keys(ctx, k.base(m), path)
		if err != nil {
			nk.Error = err.Error()
			return nk
		}
		got.Node, got.Role = m.Name, string(m.Meta.Role)
		return got
	})
}

// ChangeGossipKeyring applies op with key on this manager and, at once,
// on every other member the pool sees alive or suspect, and reports each
// node's outcome. Nodes that left are not reported; dead ones are, as not
// reached: they must get the change before they can rejoin once the old key
// is removed.
func (k *keyring) ChangeGossipKeyring(ctx context.Context, op string, key []byte) []api.KeyringResult {
	req := api.KeyringRequest{Op: op, Key: base64.StdEncoding.EncodeToString(key)}
	results := fanOut(k.pool.Members(), func(m cluster.Member) api.KeyringResult {
		res := api.KeyringResult{Node: m.Name, Role: string(m.Meta.Role)}
		var err error
		switch {
		case m.Name == k.pool.LocalName():
			err = api.ApplyKeyringOp(k.pool, op, key)
		case !k.reachable(m, &res.Error):
			return res
		default:
			client, path := k.route(m)
			err = client.Change(ctx, k.base(m), path, req)
		}
		if err != nil {
			res.Error = err.Error()
		} else {
			res.OK = true
		}
		return res
	})
	failed := 0
	for _, r := range results {
		if !r.OK {
			failed++
			k.log.Warn("gossip keyring change failed on a node", "op", op, "node", r.Node, "error", r.Error)
		}
	}
	k.log.Info("gossip keyring changed across the cluster", "op", op, "nodes", len(results), "failed", failed)
	return results
}

// reachable reports whether m is to be called; if not, it sets why (an
// empty reason for a node that left, which is then left out).
func (k *keyring) reachable(m cluster.Member, why *string) bool {
	switch {
	case m.State == cluster.StateDead:
		*why = "node is dead: not reached; apply the change to it once it is back"
	case m.Meta.API == "":
		*why = "node advertises no API address"
	case m.Meta.Role != cluster.RoleManager && m.Meta.Role != cluster.RoleWorker:
		*why = "node has no Cube role"
	default:
		return true
	}
	return false
}

// route is the client and path that reach m's own ring.
func (k *keyring) route(m cluster.Member) (*api.KeyringClient, string) {
	if m.Meta.Role == cluster.RoleManager {
		return k.managers, api.LocalKeyringPath
	}
	return k.workers, api.KeyringPath
}

// base is m's API base URL.
func (k *keyring) base(m cluster.Member) string {
	if strings.Contains(m.Meta.API, "://") {
		return strings.TrimRight(m.Meta.API, "/")
	}
	return k.scheme + "://" + m.Meta.API
}

// fanOut runs fn for every member that has not left, all at once, and
// returns the results in the members' (name) order.
func fanOut[T any](members []cluster.Member, fn func(cluster.Member) T) []T {
	members = slices.DeleteFunc(members, func(m cluster.Member) bool { return m.State == cluster.StateLeft })
	out := make([]T, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = fn(m)
		}()
	}
	wg.Wait()
	return out
}

// apiService is what the manager API serves: the Manager, through the
// keyring the gossip keyring routes (api.ClusterKeyring), and through
// snapshots the snapshot routes (api.SnapshotService).
type apiService struct {
	*Manager
	*keyring
	*snapshots
}
