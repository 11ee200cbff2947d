package manager

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
	"github.com/cube-orch/cube/security"
)

// TokenLookup finds a token by the hash of its secret; *fsm.FSM and
// *Manager implement it.
type TokenLookup interface {
	TokenByHash(hash string) (fsm.Token, bool)
}

// Authenticator is the manager's api.Authenticator. A caller is, in order:
// the verified peer certificate of the TLS connection (a manager, worker or
// client certificate: the TLS server verified it against the cluster's CA
// in the handshake), else the token in X-Cube-Token or "Authorization:
// Bearer", looked up by its hash in this manager's replicated state.
type Authenticator struct {
	tokens TokenLookup
}

var _ api.Authenticator = (*Authenticator)(nil)

// NewAuthenticator returns the Authenticator of a manager whose tokens are
// in tokens (its FSM).
func NewAuthenticator(tokens TokenLookup) *Authenticator {
	return &Authenticator{tokens: tokens}
}

// Authenticate establishes who made r. A certificate wins over a token:
// it was checked in the handshake, and a manager forwarding a request keeps
// the caller's token header while presenting its own certificate.
func (a *Authenticator) Authenticate(r *http.Request) (api.Caller, error) {
	if id, ok := security.PeerIdentity(r.TLS); ok {
		return certCaller(id)
	}
	secret, err := tokenOf(r)
	if err != nil {
		return api.Caller{}, err
	}
	tok, ok := a.tokens.TokenByHash(security.HashToken(secret))
	if !ok {
		// Never echo the token: a mistyped secret is still half a secret.
		return api.Caller{}, fmt.Errorf("%w: the token is not known to this cluster (deleted, mistyped, or made for another cluster)", api.ErrUnauthenticated)
	}
	return api.Caller{Kind: api.CallerToken, Name: tok.Name, Role: tok.Role}, nil
}

// certCaller is the Caller of a verified certificate: a manager and a
// client are operators; a worker has no role, only the right to report its
// own tasks, which the handler checks against the certificate's name.
func certCaller(id security.Identity) (api.Caller, error) {
	switch id.Role {
	case security.RoleManager:
		return api.Caller{Kind: api.CallerManager, Name: id.Name, Role: api.RoleOperator}, nil
	case security.RoleClient:
		return api.Caller{Kind: api.CallerClient, Name: id.Name, Role: api.RoleOperator}, nil
	case security.RoleWorker:
		return api.Caller{Kind: api.CallerWorker, Name: id.Name}, nil
	}
	return api.Caller{}, fmt.Errorf("%w: certificate %q names no Cube role", api.ErrUnauthenticated, id.Name)
}

// tokenOf returns the token secret r carries: X-Cube-Token, else an
// Authorization header of the Bearer scheme (case-insensitive, as RFC 6750
// allows). No token at all, or an Authorization header of another scheme,
// is ErrUnauthenticated.
func tokenOf(r *http.Request) (string, error) {
	if s := strings.TrimSpace(r.Header.Get(api.HeaderToken)); s != "" {
		return s, nil
	}
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, secret, _ := strings.Cut(strings.TrimSpace(h), " ")
		if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(secret) == "" {
			return "", fmt.Errorf("%w: the Authorization header is not \"Bearer <token>\"", api.ErrUnauthenticated)
		}
		return strings.TrimSpace(secret), nil
	}
	return "", fmt.Errorf("%w: no credentials; present a client certificate or a token (%s, or Authorization: Bearer)", api.ErrUnauthenticated, api.HeaderToken)
}
