package worker

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/security"
	"github.com/cube-orch/cube/test/testkit"
)

// An agent given a gossip key joins an encrypted pool, keeps its keyring
// in its data dir, and serves the keyring routes the managers call during
// a rotation; alone, it serves none.
func TestAgent_GossipKeyring(t *testing.T) {
	oldB64, _ := security.NewGossipKey()
	newB64, _ := security.NewGossipKey()
	oldKey, _ := security.DecodeGossipKey(oldB64)
	newKey, _ := security.DecodeGossipKey(newB64)

	g := cluster.FastGossipConfig()
	gossipAddr := testkit.FreeAddr(t)
	host, port, _ := cluster.ParseGossipAddr(gossipAddr)
	g.Name, g.BindAddr, g.BindPort, g.Logger = "manager-m1", host, port, testkit.Logger(t, "m1")
	g.Meta = cluster.Meta{Role: cluster.RoleManager, API: "127.0.0.1:1", RaftID: "m1", RaftAddr: "127.0.0.1:1"}
	g.Keys = [][]byte{oldKey}
	mgr, err := cluster.NewPool(g)
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Shutdown()

	docker, err := NewDocker(DefaultDockerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer docker.Close()
	cfg := testAgentConfig(t)
	cfg.GossipAddr, cfg.Seeds, cfg.Runtime = testkit.FreeAddr(t), []string{gossipAddr}, docker
	cfg.GossipKeys = []string{oldB64}
	a, err := NewAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	testkit.Eventually(t, 10*time.Second, func() error {
		for _, m := range mgr.Members() {
			if m.Name == a.Name() && m.State == cluster.StateAlive {
				return nil
			}
		}
		return errors.New("the worker is not alive in the encrypted pool yet")
	})

	kc := api.NewKeyringClient(&http.Client{}, 5*time.Second)
	ctx := context.Background()
	base := "http://" + a.Addr()
	if err := kc.Change(ctx, base, api.KeyringPath, api.KeyringRequest{Op: api.KeyringInstall, Key: newB64}); err != nil {
		t.Fatal(err)
	}
	nk, err := kc.Keys(ctx, base, api.KeyringPath)
	if err != nil || nk.Node != a.Name() || nk.Primary != oldB64 || len(nk.Keys) != 2 || nk.Keys[1] != newB64 {
		t.Fatalf("keys after install: %+v, %v", nk, err)
	}
	file := filepath.Join(cfg.Worker.DataDir, cluster.KeyringFileName)
	if got := a.pool.ListKeys(); len(got) != 2 || !bytes.Equal(got[1], newKey) {
		t.Fatalf("pool ring after install: %d keys", len(got))
	}
	if b, err := readFile(file); err != nil || !strings.Contains(b, newB64) {
		t.Fatalf("keyring file %s after install: %q, %v", file, b, err)
	}

	alone, err := NewAgent(testAgentConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer alone.Close()
	err = kc.Change(ctx, "http://"+alone.Addr(), api.KeyringPath, api.KeyringRequest{Op: api.KeyringInstall, Key: base64.StdEncoding.EncodeToString(newKey)})
	if !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("keyring route of a worker alone: %v, want 404", err)
	}
}

func readFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}
