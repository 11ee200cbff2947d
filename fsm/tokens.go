package fsm

import (
	"fmt"
	"sort"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// Token is a token as the replicated state keeps it: its hash, never its
// secret. Hash is what a request's secret is looked up by (TokenByHash).
type Token struct {
	AccessorID uuid.UUID
	Name       string
	Role       api.Role
	Hash       string
	CreateTime time.Time
}

// API returns the token as the API shows it: no hash, no secret.
func (t Token) API() api.Token {
	return api.Token{AccessorID: t.AccessorID, Name: t.Name, Role: t.Role, CreateTime: t.CreateTime}
}

// BootstrapTokenName is the name of the token BootstrapToken stores.
const BootstrapTokenName = "bootstrap"

// tokenTable is the replicated token table with its index by hash, so that
// authenticating a request is one map access. Token values are never
// mutated in place, only added and deleted, so a snapshot copies the map.
type tokenTable struct {
	byAccessor map[uuid.UUID]Token
	byHash     map[string]uuid.UUID
	// used is set once the table has held a token; BootstrapToken is a
	// no-op from then on, even after every token was deleted, so that a
	// revoked bootstrap token is not brought back by the next leader.
	used bool
}

func newTokenTable() tokenTable {
	return tokenTable{byAccessor: make(map[uuid.UUID]Token), byHash: make(map[string]uuid.UUID)}
}

// put stores t in both maps.
func (tt *tokenTable) put(t Token) {
	tt.byAccessor[t.AccessorID] = t
	tt.byHash[t.Hash] = t.AccessorID
	tt.used = true
}

// validRole reports whether r is one of the token roles.
func validRole(r api.Role) bool {
	switch r {
	case api.RoleRead, api.RoleSubmit, api.RoleOperator:
		return true
	}
	return false
}

// validHash reports whether h has the form of security.HashToken's output:
// 64 lowercase hex digits. A secret stored by mistake in place of its hash
// (a "cube_…" string) is refused here.
func validHash(h string) bool {
	if len(h) != 64 {
		return false
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// checkTokenLocked refuses a token that cannot be stored: a missing
// accessor or name, an unknown role, a malformed hash, or an accessor or
// hash already in the table.
func (f *FSM) checkTokenLocked(t Token) error {
	switch {
	case t.AccessorID == uuid.Nil:
		return &api.ValidationError{Msg: "token AccessorID is required"}
	case t.Name == "":
		return &api.ValidationError{Msg: "token name is required"}
	case !validRole(t.Role):
		return &api.ValidationError{Msg: fmt.Sprintf("token role %q is not one of read, submit, operator", t.Role)}
	case !validHash(t.Hash):
		return &api.ValidationError{Msg: "token hash must be 64 lowercase hex digits (the SHA-256 of the secret)"}
	}
	if _, ok := f.tokens.byAccessor[t.AccessorID]; ok {
		return fmt.Errorf("token accessor %s is taken: %w", t.AccessorID, api.ErrConflict)
	}
	if _, ok := f.tokens.byHash[t.Hash]; ok {
		return fmt.Errorf("a token with this hash is already stored: %w", api.ErrConflict)
	}
	return nil
}

func (f *FSM) createTokenLocked(c CreateToken) *Result {
	t := Token{AccessorID: c.AccessorID, Name: c.Name, Role: c.Role, Hash: c.Hash, CreateTime: c.CreateTime}
	if err := f.checkTokenLocked(t); err != nil {
		return &Result{Err: err}
	}
	f.tokens.put(t)
	return &Result{Created: true, Changed: true}
}

func (f *FSM) deleteTokenLocked(c DeleteToken) *Result {
	t, ok := f.tokens.byAccessor[c.AccessorID]
	if !ok {
		// Already gone: a no-op, so that a client retrying a deletion
		// whose answer was lost (it committed) does not get an error.
		return &Result{}
	}
	delete(f.tokens.byAccessor, t.AccessorID)
	delete(f.tokens.byHash, t.Hash)
	return &Result{Changed: true}
}

func (f *FSM) bootstrapTokenLocked(c BootstrapToken) *Result {
	t := Token{AccessorID: c.AccessorID, Name: BootstrapTokenName, Role: api.RoleOperator, Hash: c.Hash, CreateTime: c.CreateTime}
	if f.tokens.used {
		// Checked before the command itself, so that a leader whose
		// configured hash is malformed fails the same way on every
		// manager: not at all, once the cluster has tokens.
		return &Result{}
	}
	if err := f.checkTokenLocked(t); err != nil {
		return &Result{Err: err}
	}
	f.tokens.put(t)
	return &Result{Created: true, Changed: true}
}

// TokenByHash returns the token whose secret hashes to hash, in constant
// time: the lookup of every request authenticated by a token.
func (f *FSM) TokenByHash(hash string) (Token, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	id, ok := f.tokens.byHash[hash]
	if !ok {
		return Token{}, false
	}
	return f.tokens.byAccessor[id], true
}

// Tokens returns every token, oldest first (then by accessor).
func (f *FSM) Tokens() []Token {
	f.mu.RLock()
	out := make([]Token, 0, len(f.tokens.byAccessor))
	for _, t := range f.tokens.byAccessor {
		out = append(out, t)
	}
	f.mu.RUnlock()
	sortTokens(out)
	return out
}

// TokensBootstrapped reports whether the token table has ever held a token:
// a BootstrapToken would be a no-op. The leader reads it to skip a write
// that would change nothing.
func (f *FSM) TokensBootstrapped() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.tokens.used
}

func sortTokens(ts []Token) {
	sort.Slice(ts, func(i, j int) bool {
		if !ts[i].CreateTime.Equal(ts[j].CreateTime) {
			return ts[i].CreateTime.Before(ts[j].CreateTime)
		}
		return ts[i].AccessorID.String() < ts[j].AccessorID.String()
	})
}
