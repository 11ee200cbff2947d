package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/cube-orch/cube/security"
	"github.com/spf13/pflag"
)

// agentSecurity are the security flags of cube manager and cube worker.
// Security is on by default: a node starts only with its TLS files and the
// gossip key, or with --insecure, which says out loud what it gives away.
type agentSecurity struct {
	files     security.Files
	encrypt   string
	insecure  bool
	bootstrap string // manager only: the bootstrap token file
}

// register adds the flags; role is "manager" or "worker", for the help.
func (s *agentSecurity) register(f *pflag.FlagSet, role string) {
	s.registerShared(f)
	f.StringVar(&s.files.Cert, "cert-file", "", "this "+role+"'s certificate (PEM; cube tls cert create --"+role+")")
	f.StringVar(&s.files.Key, "key-file", "", "key of --cert-file (PEM)")
	if role == "manager" {
		f.StringVar(&s.bootstrap, "bootstrap-token-file", "", "file holding the operator token the cluster starts with (cube keygen --token); stored, hashed, by the first leader if no token exists yet")
	}
}

// registerShared adds the flags every node of a cluster takes alike: the
// CA, the gossip key, --insecure (cube sim-workers names its workers'
// certificates its own way).
func (s *agentSecurity) registerShared(f *pflag.FlagSet) {
	f.StringVar(&s.files.CA, "ca-file", "", "CA certificate of the cluster (PEM; cube tls ca create)")
	f.StringVar(&s.encrypt, "encrypt", "", "gossip encryption key, base64 (cube keygen); a keyring rotated since (cube gossip keyring) and kept in --data wins over it")
	f.BoolVar(&s.insecure, "insecure", false, "run without TLS, tokens or gossip encryption: anyone who reaches this node's ports controls it (a quick local try only)")
}

// errNoCredentials is why a node refuses to start open.
var errNoCredentials = errors.New("no TLS certificate given")

// resolve checks the flags and returns the TLS files, the gossip keys and
// the bootstrap token's hash.
func (s *agentSecurity) resolve(role string) (files security.Files, keys []string, tokenHash string, err error) {
	if s.insecure {
		if s.files.Enabled() || s.encrypt != "" || s.bootstrap != "" {
			return files, nil, "", errors.New("--insecure cannot be combined with --ca-file, --cert-file, --key-file, --encrypt or --bootstrap-token-file")
		}
		fmt.Fprintf(os.Stderr, "cube %s: WARNING: --insecure: no TLS, no tokens, no gossip encryption; anyone who reaches this node's ports controls the cluster\n", role)
		return files, nil, "", nil
	}
	if !s.files.Enabled() {
		return files, nil, "", fmt.Errorf("%w: pass --ca-file, --cert-file and --key-file (make them with cube tls ca create and cube tls cert create --%s; make cluster does it for you), or --insecure to run open", errNoCredentials, role)
	}
	if err := s.files.Validate(); err != nil {
		return files, nil, "", err
	}
	b, err := security.Load(s.files)
	if err != nil {
		return files, nil, "", err
	}
	if string(b.Self.Role) != role {
		return files, nil, "", fmt.Errorf("%s is a %s certificate; a %s needs one made with cube tls cert create --%s", s.files.Cert, b.Self.Role, role, role)
	}
	if s.encrypt == "" {
		return files, nil, "", fmt.Errorf("no gossip key: pass --encrypt KEY (make one with cube keygen; every node of the cluster takes the same), or --insecure to run open")
	}
	if _, err := security.DecodeGossipKey(s.encrypt); err != nil {
		return files, nil, "", fmt.Errorf("--encrypt: %w", err)
	}
	if s.bootstrap != "" {
		tok, err := security.ReadTokenFile(s.bootstrap)
		if err != nil {
			return files, nil, "", err
		}
		tokenHash = security.HashToken(tok)
	}
	return s.files, []string{s.encrypt}, tokenHash, nil
}
