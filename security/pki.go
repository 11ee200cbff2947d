package security

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Role is what a node certificate lets its holder be: a manager (raft, the
// worker API, forwarding on behalf of a caller), a worker (reports about its
// own tasks) or a client (a person or script, with operator rights).
type Role string

// The roles a certificate can carry, in its subject's OrganizationalUnit.
const (
	RoleManager Role = "manager"
	RoleWorker  Role = "worker"
	RoleClient  Role = "client"
)

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleManager, RoleWorker, RoleClient:
		return r, nil
	}
	return "", fmt.Errorf("unknown role %q: want manager, worker or client", s)
}

// ServerName is the DNS name every certificate of role r carries besides its
// own hosts: "manager.cube", "worker.cube". A node calling another verifies
// the peer under this name, so only a manager certificate can serve a
// manager's API or raft, and only a worker certificate a worker's API,
// whatever address the peer is reached at (as Consul's
// verify_server_hostname does with server.<dc>.consul).
func ServerName(r Role) string { return string(r) + ".cube" }

// Default validity of what CreateCA and CreateCert sign.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultCertValidity = 2 * 365 * 24 * time.Hour
)

// Backdate is how far before its making a certificate's validity starts
// (NotBefore). Every node checks its peers' certificates against its own
// wall clock, and a machine's clock can be stepped back after the
// certificates were made: NTP correcting a clock that ran fast, a machine
// that booted with a wrong clock and synced later. With NotBefore a minute
// back, a manager whose clock stepped back more than a minute within a
// minute of the certificates' making (a new cluster, a renewal) rejected
// every peer's certificate ("certificate has expired or is not yet valid")
// and was cut off from raft and its callers until its clock caught up
// (found by the chaos fault clock-jump, test/clock_test.go). An hour covers
// such steps; what it costs is an hour more of a stolen certificate's
// validity at the start, next to the years at the end.
const Backdate = time.Hour

// File names in the directory the CA and certificates are written to.
const (
	CACertFile = "cube-ca.pem"
	CAKeyFile  = "cube-ca-key.pem"
)

// Errors of the certificate functions.
var (
	// ErrExists: a file to be written is already there; nothing is
	// overwritten, so a second `make cluster` keeps the cluster's identity.
	ErrExists = errors.New("file exists")
)

// CertFiles returns the certificate and key file names of a node
// certificate in dir: <role>-<name>.pem and <role>-<name>-key.pem.
func CertFiles(dir string, r Role, name string) (cert, key string) {
	base := filepath.Join(dir, string(r)+"-"+name)
	return base + ".pem", base + "-key.pem"
}

// CreateCA writes a new certificate authority to dir (CACertFile, CAKeyFile,
// the key readable by its owner only) and returns the two paths. It refuses
// (ErrExists) to overwrite either file.
func CreateCA(dir, name string, validity time.Duration) (certPath, keyPath string, err error) {
	if name == "" {
		name = "Cube CA"
	}
	if validity <= 0 {
		validity = DefaultCAValidity
	}
	certPath, keyPath = filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	if err := refuseExisting(certPath, keyPath); err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Cube"}},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	if err := issue(tmpl, nil, nil, dir, certPath, keyPath); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// CertRequest is what CreateCert signs.
type CertRequest struct {
	// Role is the holder's role, written in the subject's OU.
	Role Role
	// Name is the node's name (a manager's raft ID, a worker's name) or a
	// client's, written as the subject's CommonName.
	Name string
	// Hosts are the IP addresses and DNS names the holder serves at, added
	// to ServerName(Role) as subject alternative names.
	Hosts []string
	// Validity is how long the certificate is valid; 0 means
	// DefaultCertValidity.
	Validity time.Duration
}

// CreateCert signs a node certificate with the CA at caCert/caKey and writes
// it to dir under CertFiles(dir, req.Role, req.Name), refusing (ErrExists)
// to overwrite. It returns the two paths.
func CreateCert(caCert, caKey, dir string, req CertRequest) (certPath, keyPath string, err error) {
	if _, err := ParseRole(string(req.Role)); err != nil {
		return "", "", err
	}
	if err := validName(req.Name); err != nil {
		return "", "", err
	}
	ca, cakey, err := loadCA(caCert, caKey)
	if err != nil {
		return "", "", err
	}
	validity := req.Validity
	if validity <= 0 {
		validity = DefaultCertValidity
	}
	certPath, keyPath = CertFiles(dir, req.Role, req.Name)
	if err := refuseExisting(certPath, keyPath); err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: req.Name, OrganizationalUnit: []string{string(req.Role)}, Organization: []string{"Cube"}},
		NotBefore:   now.Add(-Backdate),
		NotAfter:    now.Add(validity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{ServerName(req.Role)},
	}
	for _, h := range req.Hosts {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if !slices.Contains(tmpl.DNSNames, h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if err := issue(tmpl, ca, cakey, dir, certPath, keyPath); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// validName accepts what can be a file name part and a CommonName.
func validName(name string) error {
	if name == "" {
		return errors.New("a certificate needs a name (the node's ID or name)")
	}
	if len(name) > 64 {
		return fmt.Errorf("name %q is longer than 64 bytes", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("name %q: only letters, digits, '-', '_' and '.' are allowed", name)
		}
	}
	return nil
}

// issue makes a new P-256 key, gives tmpl a random serial, signs it with
// parent and parentKey (tmpl itself and the new key when parent is nil: a
// self-signed CA) and writes the certificate and key to certPath and keyPath.
func issue(tmpl, parent *x509.Certificate, parentKey any, dir, certPath, keyPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return err
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return err
	}
	return writeCertAndKey(dir, certPath, keyPath, der, key)
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func refuseExisting(paths ...string) error {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%s: %w (remove it first to replace it)", p, ErrExists)
		}
	}
	return nil
}

func writeCertAndKey(dir, certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func loadCA(certPath, keyPath string) (*x509.Certificate, any, error) {
	pair, err := loadKeyPair(certPath, keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("load CA: %w", err)
	}
	ca := pair.Leaf
	if !ca.IsCA {
		return nil, nil, fmt.Errorf("load CA: %s is not a CA certificate", certPath)
	}
	return ca, pair.PrivateKey, nil
}
