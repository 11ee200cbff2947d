package security

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
)

// Files names a node's TLS material: the cluster's CA certificate and the
// node's own certificate and key (PEM). All three or none.
type Files struct {
	CA, Cert, Key string
}

// Enabled reports whether any file is named: TLS is on.
func (f Files) Enabled() bool { return f.CA != "" || f.Cert != "" || f.Key != "" }

// Validate checks that all three files are named, or none.
func (f Files) Validate() error {
	if !f.Enabled() || (f.CA != "" && f.Cert != "" && f.Key != "") {
		return nil
	}
	return fmt.Errorf("TLS needs the CA certificate, the node certificate and its key (got ca=%q cert=%q key=%q)", f.CA, f.Cert, f.Key)
}

// Identity is who a verified peer certificate names.
type Identity struct {
	Role Role
	Name string
}

// Errors of the TLS functions.
var (
	// ErrWrongRole: the peer's certificate is valid but names another role.
	ErrWrongRole = errors.New("certificate role not allowed here")
)

// Bundle is a node's loaded TLS material.
type Bundle struct {
	pool *x509.CertPool
	cert tls.Certificate
	// Self is the identity the node's own certificate names.
	Self Identity
}

// Load reads f. It checks that the certificate was signed by the CA and
// names a role, so that a node started with the wrong files fails at once
// with a message naming them.
func Load(f Files) (*Bundle, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s holds no PEM certificate", f.CA)
	}
	pair, err := loadKeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, err
	}
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("%s is not signed by the CA in %s: %w", f.Cert, f.CA, err)
	}
	id, ok := identityOf(pair.Leaf)
	if !ok {
		return nil, fmt.Errorf("%s names no Cube role (OU manager, worker or client); make it with cube tls cert create", f.Cert)
	}
	return &Bundle{pool: pool, cert: pair, Self: id}, nil
}

// Pool returns the CA pool peers are verified against.
func (b *Bundle) Pool() *x509.CertPool { return b.pool }

// ServerConfig returns the TLS config of a server. With require, a client
// must present a certificate signed by the CA (the worker API, raft);
// without, a certificate is verified if given and the request may carry a
// token instead (the manager API, which people and curl reach). roles, if
// any, limit which certificate roles may connect at all.
func (b *Bundle) ServerConfig(require bool, roles ...Role) *tls.Config {
	auth := tls.VerifyClientCertIfGiven
	if require {
		auth = tls.RequireAndVerifyClientCert
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{b.cert},
		ClientCAs:    b.pool,
		ClientAuth:   auth,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(roles) == 0 || len(cs.PeerCertificates) == 0 {
				return nil
			}
			return checkRole(cs.PeerCertificates[0], roles)
		},
	}
}

// ClientConfig returns the TLS config of a node calling a peer of role
// peer: the peer must present a certificate with ServerName(peer), whatever
// address it was dialed at; the node presents its own certificate.
func (b *Bundle) ClientConfig(peer Role) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{b.cert},
		RootCAs:      b.pool,
		ServerName:   ServerName(peer),
	}
}

// ClientTLS returns the TLS config of a client (the CLI) from a CA file and
// an optional client certificate and key: the server is verified under the
// host name it is dialed at, as curl does.
func ClientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		caPEM, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA certificate: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		if certFile == "" || keyFile == "" {
			return nil, errors.New("a client certificate needs both the certificate and the key file")
		}
		pair, err := loadKeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// PeerIdentity returns the identity of the verified certificate a TLS peer
// presented; false when it presented none (or the connection is plain).
func PeerIdentity(cs *tls.ConnectionState) (Identity, bool) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return Identity{}, false
	}
	return identityOf(cs.PeerCertificates[0])
}

func identityOf(c *x509.Certificate) (Identity, bool) {
	if len(c.Subject.OrganizationalUnit) != 1 || c.Subject.CommonName == "" {
		return Identity{}, false
	}
	r, err := ParseRole(c.Subject.OrganizationalUnit[0])
	if err != nil {
		return Identity{}, false
	}
	return Identity{Role: r, Name: c.Subject.CommonName}, true
}

func checkRole(c *x509.Certificate, roles []Role) error {
	id, ok := identityOf(c)
	if !ok {
		return fmt.Errorf("%w: certificate %q names no Cube role", ErrWrongRole, c.Subject.CommonName)
	}
	if !slices.Contains(roles, id.Role) {
		return fmt.Errorf("%w: %s %q may not connect here (want %v)", ErrWrongRole, id.Role, id.Name, roles)
	}
	return nil
}

func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load certificate %s and key %s: %w", certFile, keyFile, err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return tls.Certificate{}, fmt.Errorf("parse %s: %w", certFile, err)
		}
	}
	return pair, nil
}
