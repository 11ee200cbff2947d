package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// PeersFileName is the file an operator writes into a stopped manager's raft
// data directory to recover a cluster that lost its majority for good (see
// RecoverFromPeersFile). The name and format are raft's, as Consul and Nomad
// document them.
const PeersFileName = "peers.json"

// appliedSuffix is appended to a peers.json once it has been applied: a file
// left in place would force the same configuration again at every start.
const appliedSuffix = ".applied"

// peerEntry is one server of a peers.json file, in raft's "version 3"
// format (raft.ReadConfigJSON).
type peerEntry struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	NonVoter bool   `json:"non_voter"`
}

// WritePeersFile writes dataDir/peers.json (dataDir is a manager's raft data
// directory, the one holding raft.db) listing peers as voters, after checking
// that the directory holds raft state, that no running server holds it (the
// file is read only at start), and that the list is usable: IDs unique and
// non-empty, addresses IP:PORT and unique. The next start of the server
// applies it.
func WritePeersFile(dataDir string, peers []Peer) (string, error) {
	if err := checkPeers(peers); err != nil {
		return "", err
	}
	if err := checkStopped(dataDir); err != nil {
		return "", err
	}
	entries := make([]peerEntry, len(peers))
	for i, p := range peers {
		entries[i] = peerEntry{ID: p.ID, Address: p.Addr}
	}
	b, err := json.MarshalIndent(entries, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dataDir, PeersFileName)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return path, nil
}

// checkPeers checks a recovery configuration.
func checkPeers(peers []Peer) error {
	if len(peers) == 0 {
		return fmt.Errorf("%w: the recovery configuration lists no server", ErrInvalidConfig)
	}
	ids, addrs := map[string]bool{}, map[string]bool{}
	for _, p := range peers {
		if p.ID == "" {
			return fmt.Errorf("%w: a server of the recovery configuration has no ID", ErrInvalidConfig)
		}
		if host, port, err := net.SplitHostPort(p.Addr); err != nil || net.ParseIP(host) == nil || port == "" {
			return fmt.Errorf("%w: server %s: address %q is not IP:PORT (its raft address)", ErrInvalidConfig, p.ID, p.Addr)
		}
		if ids[p.ID] || addrs[p.Addr] {
			return fmt.Errorf("%w: server %s at %s is listed twice (by ID or address)", ErrInvalidConfig, p.ID, p.Addr)
		}
		ids[p.ID], addrs[p.Addr] = true, true
	}
	return nil
}

// checkStopped checks that dataDir holds raft state that no running server
// holds: a running server keeps raft.db locked, and would not read a
// peers.json before its next start anyway.
func checkStopped(dataDir string) error {
	path := filepath.Join(dataDir, raftDBFile)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("%s: %w (is %s a manager's raft directory, <data>/raft?)", path, err, dataDir)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 500 * time.Millisecond, ReadOnly: true})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return fmt.Errorf("%s is in use: %w; stop the manager first", path, ErrDataDirLocked)
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	return db.Close()
}

// recoverFromPeersFile applies dataDir/peers.json, if there is one, before
// raft starts: raft.RecoverCluster makes the configuration it lists the
// latest one in the log (and snapshots the state, which is kept whole),
// then the file is renamed so that it is applied once. It reports whether
// it recovered. The server must be in the configuration at the address it
// advertises, or it could never be reached or elected.
func recoverFromPeersFile(cfg RaftConfig, rc *raft.Config, logs raft.LogStore, stable raft.StableStore, snaps raft.SnapshotStore, trans raft.Transport, advertised string) (bool, error) {
	path := filepath.Join(cfg.DataDir, PeersFileName)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	conf, err := raft.ReadConfigJSON(path)
	if err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		if errors.As(err, &syn) || errors.As(err, &typ) {
			return false, fmt.Errorf("recover from %s: %w (want a JSON list of {\"id\",\"address\",\"non_voter\"})", path, err)
		}
		return false, fmt.Errorf("recover from %s: %w", path, err)
	}
	peers := make([]Peer, 0, len(conf.Servers))
	self := false
	for _, s := range conf.Servers {
		peers = append(peers, Peer{ID: string(s.ID), Addr: string(s.Address)})
		if string(s.ID) == cfg.ID {
			if string(s.Address) != advertised {
				return false, fmt.Errorf("recover from %s: this server (%s) is listed at %s but advertises %s; fix the file", path, cfg.ID, s.Address, advertised)
			}
			if s.Suffrage != raft.Voter {
				return false, fmt.Errorf("recover from %s: this server (%s) must be a voter", path, cfg.ID)
			}
			self = true
		}
	}
	if err := checkPeers(peers); err != nil {
		return false, fmt.Errorf("recover from %s: %w", path, err)
	}
	if !self {
		return false, fmt.Errorf("recover from %s: this server (%s at %s) is not listed; the file must list it", path, cfg.ID, advertised)
	}
	if cfg.RecoveryFSM == nil {
		return false, fmt.Errorf("recover from %s: %w: no RecoveryFSM to replay the log into", path, ErrInvalidConfig)
	}
	if err := raft.RecoverCluster(rc, cfg.RecoveryFSM(), logs, stable, snaps, trans, conf); err != nil {
		return false, fmt.Errorf("recover from %s: %w", path, err)
	}
	if err := os.Rename(path, path+appliedSuffix); err != nil {
		// The recovery is done and this start goes on (NewRaft logs this),
		// but the file would apply again at the next start, undoing any
		// manager added meanwhile: try removing it, and say so loudly.
		if rmErr := os.Remove(path); rmErr == nil {
			return true, nil
		}
		return true, fmt.Errorf("recovered from %s, but could not rename or remove it; remove it by hand before the next start: %w", path, err)
	}
	return true, nil
}
