package worker

import (
	"net/http"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/security"
)

// certAuthenticator names a caller of the worker API by its verified
// certificate; the worker takes no tokens (people reach tasks through the
// managers). The handler lets only CallerManager through.
type certAuthenticator struct{}

var _ api.Authenticator = certAuthenticator{}

// Authenticate returns the caller its TLS certificate names.
func (certAuthenticator) Authenticate(r *http.Request) (api.Caller, error) {
	id, ok := security.PeerIdentity(r.TLS)
	if !ok {
		return api.Caller{}, api.ErrUnauthenticated
	}
	return api.Caller{Kind: string(id.Role), Name: id.Name}, nil
}
