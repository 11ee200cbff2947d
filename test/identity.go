package test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/security"
	"github.com/cube-orch/cube/test/testkit"
)

// Identity is a test cluster's security material, made with the security
// package as `make cluster` makes it with `cube tls` and `cube keygen`: a CA,
// certificates for the nodes (each named as the node, for its own address),
// a client certificate "operator", a gossip key and an operator token (the
// cluster's bootstrap token). Every test cluster makes its own in its own
// directory, so no two clusters of a test run trust each other.
type Identity struct {
	// Dir holds the files (CA, certificates, the token file).
	Dir string
	// CA is the CA certificate's path.
	CA string
	// Client is the "operator" client certificate (role client: operator
	// rights), with the CA.
	Client security.Files
	// GossipKey is the base64 gossip encryption key every node is given.
	GossipKey string
	// Token is the operator token's secret; TokenFile holds it, the file
	// managers get as --bootstrap-token-file.
	Token, TokenFile string

	t     testing.TB
	caKey string

	// tlsOnce makes the operator's TLS config once: clients built per
	// operation (the chaos clients) share it rather than read the files
	// each time. Transports clone it.
	tlsOnce sync.Once
	tls     *tls.Config
	tlsErr  error
}

// The name of the client certificate a test cluster makes for its callers.
const operatorName = "operator"

// NewIdentity makes a cluster identity in dir.
func NewIdentity(t testing.TB, dir string) *Identity {
	t.Helper()
	ca, caKey, err := security.CreateCA(dir, "Cube test CA", 0)
	if err != nil {
		t.Fatalf("create CA: %v", err)
	}
	id := &Identity{Dir: dir, CA: ca, caKey: caKey, t: t}
	id.Client = id.Node(security.RoleClient, operatorName)
	if id.GossipKey, err = security.NewGossipKey(); err != nil {
		t.Fatal(err)
	}
	if id.Token, err = security.NewToken(); err != nil {
		t.Fatal(err)
	}
	id.TokenFile = filepath.Join(dir, "operator.token")
	if err := os.WriteFile(id.TokenFile, []byte(id.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return id
}

// Node signs a certificate of role r for the node named name, serving at
// hosts, and returns the node's TLS files. Made once per name: a restarted
// node keeps its certificate.
func (id *Identity) Node(r security.Role, name string, hosts ...string) security.Files {
	id.t.Helper()
	cert, key := security.CertFiles(id.Dir, r, name)
	if _, err := os.Stat(cert); err == nil {
		return security.Files{CA: id.CA, Cert: cert, Key: key}
	}
	cert, key, err := security.CreateCert(id.CA, id.caKey, id.Dir, security.CertRequest{Role: r, Name: name, Hosts: hosts})
	if err != nil {
		id.t.Fatalf("create %s certificate %s: %v", r, name, err)
	}
	return security.Files{CA: id.CA, Cert: cert, Key: key}
}

// TLS returns the operator's client TLS config: the cluster's CA and the
// "operator" client certificate, as the CLI builds it from
// CUBE_CACERT/CUBE_CLIENT_CERT/CUBE_CLIENT_KEY.
func (id *Identity) TLS() *tls.Config {
	id.tlsOnce.Do(func() { id.tls, id.tlsErr = security.ClientTLS(id.Client.CA, id.Client.Cert, id.Client.Key) })
	if id.tlsErr != nil {
		id.t.Fatal(id.tlsErr)
	}
	return id.tls
}

// ClientOptions returns opts with the operator's credentials filled in: the
// token and the client certificate (either would do; the certificate is
// checked first, the token covers a manager that has not yet applied it).
func (id *Identity) ClientOptions(opts api.ClientOptions) api.ClientOptions {
	opts.Token, opts.TLS = id.Token, id.TLS()
	return opts
}

// HTTPClient returns a client for raw requests to the managers' API over
// TLS that authenticates with the operator token only (no client
// certificate), as curl with --cacert and X-Cube-Token does; requests go to
// "https://" + a manager's HTTP address.
func (id *Identity) HTTPClient() *http.Client {
	id.t.Helper()
	cfg, err := security.ClientTLS(id.CA, "", "")
	if err != nil {
		id.t.Fatal(err)
	}
	return &http.Client{Transport: &tokenHeader{base: api.NewTLSTransport("", cfg), token: id.Token}}
}

// HTTPClientAs returns a client for raw requests over TLS presenting a
// certificate of role r named name (made on first use), and no token: a
// worker's report to the managers, a manager's call to a worker's API.
func (id *Identity) HTTPClientAs(r security.Role, name string) *http.Client {
	id.t.Helper()
	f := id.Node(r, name)
	cfg, err := security.ClientTLS(f.CA, f.Cert, f.Key)
	if err != nil {
		id.t.Fatal(err)
	}
	return &http.Client{Transport: api.NewTLSTransport("", cfg)}
}

// tokenHeader adds the token header to every request that has none.
type tokenHeader struct {
	base  http.RoundTripper
	token string
}

// RoundTrip sets api.HeaderToken on a copy of r unless r carries one.
func (t *tokenHeader) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get(api.HeaderToken) != "" {
		return t.base.RoundTrip(r)
	}
	r2 := r.Clone(r.Context())
	r2.Header.Set(api.HeaderToken, t.token)
	return t.base.RoundTrip(r2)
}

// waitToken waits until every manager at addrs accepts the operator token
// alone (GET /cluster over TLS, no client certificate): the first leader
// stores it as the bootstrap token, and each manager knows it once it has
// applied that entry. Tests that authenticate with the token (HTTPClient)
// can then use any manager at once.
func waitToken(t testing.TB, id *Identity, addrs []string) {
	t.Helper()
	hc := id.HTTPClient()
	testkit.Eventually(t, 30*time.Second, func() error {
		for _, addr := range addrs {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/cluster", nil)
			if err != nil {
				cancel()
				return err
			}
			resp, err := hc.Do(req)
			if err != nil {
				cancel()
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			cancel()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s answers the operator token with %s", addr, resp.Status)
			}
		}
		return nil
	})
}
