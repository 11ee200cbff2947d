package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"
)

// Role is what a token lets a person or script do. Each role includes the
// ones before it: read < submit < operator.
type Role string

// The token roles.
const (
	// RoleRead reads tasks, nodes, the cluster, events and logs; task Env
	// values are redacted for it.
	RoleRead Role = "read"
	// RoleSubmit also submits and stops tasks.
	RoleSubmit Role = "submit"
	// RoleOperator also drains nodes, changes the managers, manages tokens
	// and gossip keys.
	RoleOperator Role = "operator"
)

// Kinds of Caller.
const (
	CallerManager   = "manager"   // a manager certificate
	CallerWorker    = "worker"    // a worker certificate
	CallerClient    = "client"    // a client certificate
	CallerToken     = "token"     // a token
	CallerAnonymous = "anonymous" // nothing: security is off
)

// Caller is who made a request, as an Authenticator established it.
type Caller struct {
	// Kind says how the caller proved who it is (CallerManager, …).
	Kind string
	// Name is the certificate's node name, or the token's name.
	Name string
	// Role is what the caller may do as a person's or script's role; empty
	// for a worker, whose certificate only lets it report its own tasks.
	Role Role `json:",omitempty"`
}

// Authenticator establishes who made a request: from its verified TLS peer
// certificate or its token. It answers ErrUnauthenticated when the request
// carries no credentials or credentials nobody issued. The manager and the
// worker implement it; a handler without one is open (security off).
type Authenticator interface {
	Authenticate(r *http.Request) (Caller, error)
}

// Header names of authentication.
const (
	// HeaderToken carries a token secret (Authorization: Bearer works too).
	HeaderToken = "X-Cube-Token"
	// HeaderCaller carries, on a request a follower forwards to the leader,
	// the Caller the follower established (JSON). It is honoured only on a
	// connection authenticated by a manager certificate.
	HeaderCaller = "X-Cube-Caller"
)

// Authentication errors; HTTP 401 and 403.
var (
	// ErrUnauthenticated: no credentials, or credentials no one issued.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden: the caller is known but its role does not allow this.
	ErrForbidden = errors.New("forbidden")
)

// Token is a token as the API shows it: never its secret, except once, in
// the answer to its creation.
type Token struct {
	// AccessorID names the token in lists and to delete it; it is not a
	// credential.
	AccessorID uuid.UUID
	// Name says whom or what the token is for.
	Name string
	// Role is what the token may do.
	Role Role
	// CreateTime is when the token was created.
	CreateTime time.Time
	// Secret is the credential; set only in the answer to POST /tokens.
	Secret string `json:",omitempty"`
}

// TokenRequest is the body of POST /tokens.
type TokenRequest struct {
	Name string
	Role Role
}

// MaxGeneration bounds a task's generation: far beyond any real count of
// placements, and small enough that no caller can fence the managers out
// of a task by sending a worker the largest uint64.
const MaxGeneration = 1 << 53
