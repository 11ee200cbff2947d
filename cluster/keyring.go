package cluster

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/cube-orch/cube/security"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
)

// Gossip encryption. A pool started with keys encrypts and authenticates
// every gossip packet and stream with memberlist's keyring (AES-GCM): the
// first key, the primary, encrypts; every key of the ring is tried to
// decrypt. A node without a key of the ring cannot join, and its packets are
// dropped. Rotation without downtime is Consul's: install the new key on
// every node, make it primary everywhere, then remove the old one. Each
// step leaves every pair of nodes with a key in common.
//
// The ring is persisted in GossipConfig.KeyringFile after every change and
// read back at start, where it takes precedence over the configured keys
// (Consul does the same): a node restarted after a rotation must come back
// with the rotated ring, not with the key its command line still names.

// KeyringFileName is the name of the keyring file in a node's data
// directory.
const KeyringFileName = "gossip-keyring.json"

// DecodeGossipKeys decodes base64 gossip keys (security.DecodeGossipKey),
// naming the first bad one by its position.
func DecodeGossipKeys(keys []string) ([][]byte, error) {
	out := make([][]byte, 0, len(keys))
	for i, k := range keys {
		b, err := security.DecodeGossipKey(k)
		if err != nil {
			return nil, fmt.Errorf("gossip key %d: %w", i+1, err)
		}
		out = append(out, b)
	}
	return out, nil
}

// readKeyringFile reads a keyring file: a JSON array of base64 keys, the
// primary first. A missing file is reported as an error wrapping
// os.ErrNotExist.
func readKeyringFile(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var enc []string
	if err := json.Unmarshal(b, &enc); err != nil {
		return nil, fmt.Errorf("gossip keyring %s: %w", path, err)
	}
	if len(enc) == 0 {
		return nil, fmt.Errorf("gossip keyring %s holds no key; remove the file to start from the configured keys", path)
	}
	keys := make([][]byte, 0, len(enc))
	for i, e := range enc {
		k, err := base64.StdEncoding.DecodeString(e)
		if err == nil {
			err = memberlist.ValidateKey(k)
		}
		if err != nil {
			return nil, fmt.Errorf("gossip keyring %s, key %d: %w", path, i+1, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// writeKeyringFile replaces the keyring file at path with keys, atomically
// (a temporary file renamed over it, both synced), readable by its owner
// only: the keys are the cluster's gossip secret.
func writeKeyringFile(path string, keys [][]byte) (err error) {
	enc := make([]string, len(keys))
	for i, k := range keys {
		enc[i] = base64.StdEncoding.EncodeToString(k)
	}
	b, err := json.MarshalIndent(enc, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write gossip keyring: %w", err)
	}
	f, err := os.CreateTemp(dir, ".gossip-keyring-*")
	if err != nil {
		return fmt.Errorf("write gossip keyring: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("write gossip keyring: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write gossip keyring: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write gossip keyring: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write gossip keyring: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write gossip keyring: %w", err)
	}
	// The rename is durable once the directory is synced.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// startKeys returns the keys a pool starts with, primary first: the
// keyring file's when there is one, else the configured keys, which are
// then written to the file. Nil means no encryption.
func startKeys(cfg GossipConfig, log hclog.Logger) ([][]byte, error) {
	if cfg.KeyringFile == "" {
		return cfg.Keys, nil
	}
	keys, err := readKeyringFile(cfg.KeyringFile)
	switch {
	case err == nil:
		if len(cfg.Keys) > 0 && !slices.EqualFunc(keys, cfg.Keys, bytes.Equal) {
			log.Info("gossip keyring file differs from the configured keys and takes precedence (a rotation happened since)", "file", cfg.KeyringFile)
		}
		return keys, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, err
	case len(cfg.Keys) == 0:
		return nil, nil
	}
	if err := writeKeyringFile(cfg.KeyringFile, cfg.Keys); err != nil {
		return nil, err
	}
	return cfg.Keys, nil
}

// Encrypted reports whether the pool encrypts gossip (it was started with
// keys or a keyring file).
func (p *Pool) Encrypted() bool { return p.ring != nil }

// ListKeys returns the pool's gossip keys, the primary first; nil when
// encryption is off.
func (p *Pool) ListKeys() [][]byte {
	if p.ring == nil {
		return nil
	}
	p.keyMu.Lock()
	defer p.keyMu.Unlock()
	return cloneKeys(p.ring.GetKeys())
}

// InstallKey adds key to the ring: the node then accepts messages
// encrypted with it, but still encrypts with its primary key. Installing a
// key already installed changes nothing.
func (p *Pool) InstallKey(key []byte) error {
	return p.changeKeys("install", key, func(cur [][]byte) ([][]byte, error) {
		if err := memberlist.ValidateKey(key); err != nil {
			return nil, err
		}
		if slices.ContainsFunc(cur, func(k []byte) bool { return bytes.Equal(k, key) }) {
			return cur, nil
		}
		return append(cur, slices.Clone(key)), nil
	})
}

// UseKey makes an installed key the primary one, the key this node
// encrypts with. Every other node must hold it first, or they drop this
// node's messages. ErrKeyNotInstalled if it is not in the ring.
func (p *Pool) UseKey(key []byte) error {
	return p.changeKeys("use", key, func(cur [][]byte) ([][]byte, error) {
		i := slices.IndexFunc(cur, func(k []byte) bool { return bytes.Equal(k, key) })
		if i < 0 {
			return nil, ErrKeyNotInstalled
		}
		k := cur[i]
		return append([][]byte{k}, slices.Delete(cur, i, i+1)...), nil
	})
}

// RemoveKey takes key out of the ring: messages encrypted with it are
// dropped from then on. The primary key cannot be removed (ErrPrimaryKey);
// removing a key that is not installed changes nothing.
func (p *Pool) RemoveKey(key []byte) error {
	return p.changeKeys("remove", key, func(cur [][]byte) ([][]byte, error) {
		i := slices.IndexFunc(cur, func(k []byte) bool { return bytes.Equal(k, key) })
		switch {
		case i == 0:
			return nil, ErrPrimaryKey
		case i < 0:
			return cur, nil
		}
		return slices.Delete(cur, i, i+1), nil
	})
}

// changeKeys computes the ring that op makes of the current one, persists
// it, then installs it in memberlist, all under keyMu so that the file
// always holds the ring in use. Persisting first means a failed write
// changes nothing.
func (p *Pool) changeKeys(op string, key []byte, next func(cur [][]byte) ([][]byte, error)) error {
	if p.ring == nil {
		return fmt.Errorf("%s gossip key: %w", op, ErrEncryptionOff)
	}
	p.keyMu.Lock()
	defer p.keyMu.Unlock()
	cur := cloneKeys(p.ring.GetKeys())
	want, err := next(cloneKeys(cur))
	if err != nil {
		return fmt.Errorf("%s gossip key: %w", op, err)
	}
	if slices.EqualFunc(cur, want, bytes.Equal) {
		return nil
	}
	if p.cfg.KeyringFile != "" {
		if err := writeKeyringFile(p.cfg.KeyringFile, want); err != nil {
			return fmt.Errorf("%s gossip key: %w", op, err)
		}
	}
	if err := p.applyKeys(cur, want); err != nil {
		return fmt.Errorf("%s gossip key: %w", op, err)
	}
	p.log.Info("gossip keyring changed", "op", op, "key", keyID(key), "keys", len(want), "primary", keyID(want[0]))
	return nil
}

// applyKeys turns memberlist's ring from cur into want (want differs from
// cur by one install, one change of primary or one removal).
//
// memberlist's Keyring.RemoveKey shifts the keys after the removed one in
// place (append(keys[:i], keys[i+1:]...)) while its packet handlers may be
// iterating the very slice they got from GetKeys: a data race. Removing the
// last key shifts nothing, and every other change installs a fresh slice;
// so a key in the middle is removed by taking the keys after it off the end,
// then it, then adding them back. The keys taken off are never the primary,
// and are missing for microseconds at most.
func (p *Pool) applyKeys(cur, want [][]byte) error {
	for _, k := range want {
		if err := p.ring.AddKey(k); err != nil {
			return err
		}
	}
	if !bytes.Equal(cur[0], want[0]) {
		if err := p.ring.UseKey(want[0]); err != nil {
			return err
		}
	}
	keys := cloneKeys(p.ring.GetKeys())
	for i := range keys {
		if slices.ContainsFunc(want, func(k []byte) bool { return bytes.Equal(k, keys[i]) }) {
			continue
		}
		after := keys[i+1:]
		for j := len(after) - 1; j >= 0; j-- {
			if err := p.ring.RemoveKey(after[j]); err != nil {
				return err
			}
		}
		if err := p.ring.RemoveKey(keys[i]); err != nil {
			return err
		}
		for _, k := range after {
			if err := p.ring.AddKey(k); err != nil {
				return err
			}
		}
		break // one removal per change
	}
	return nil
}

// cloneKeys copies a key list (memberlist hands out its own slice).
func cloneKeys(keys [][]byte) [][]byte {
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = slices.Clone(k)
	}
	return out
}

// keyID names a key in logs without revealing it: the start of the hex
// SHA-256 of the key.
func keyID(key []byte) string {
	h := sha256.Sum256(key)
	return hex.EncodeToString(h[:4])
}
