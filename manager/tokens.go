package manager

import (
	"context"
	"fmt"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
	"github.com/cube-orch/cube/security"
	"github.com/google/uuid"
)

// CreateToken makes a token: the secret is generated here, on the leader,
// and only its hash goes into the raft log, so no log entry, snapshot or
// follower ever holds it. The caller gets the secret in the answer, once.
func (m *Manager) CreateToken(ctx context.Context, req api.TokenRequest) (api.Token, error) {
	if !m.raft.IsLeader() {
		return api.Token{}, api.ErrNotLeader
	}
	if err := req.Validate(); err != nil {
		return api.Token{}, err
	}
	secret, err := security.NewToken()
	if err != nil {
		return api.Token{}, fmt.Errorf("make a token secret: %w", err)
	}
	cmd := fsm.CreateToken{AccessorID: uuid.New(), Name: req.Name, Role: req.Role, Hash: security.HashToken(secret), CreateTime: time.Now().UTC()}
	if _, err := m.apply(ctx, cmd); err != nil {
		return api.Token{}, err
	}
	m.log.Info("token created", "accessor", cmd.AccessorID, "name", cmd.Name, "role", cmd.Role)
	tok := fsm.Token{AccessorID: cmd.AccessorID, Name: cmd.Name, Role: cmd.Role, CreateTime: cmd.CreateTime}.API()
	tok.Secret = secret
	return tok, nil
}

// Tokens lists the tokens, without secrets (the state holds none).
func (m *Manager) Tokens(ctx context.Context, consistent bool) ([]api.Token, error) {
	if err := m.read(ctx, consistent); err != nil {
		return nil, err
	}
	stored := m.fsm.Tokens()
	out := make([]api.Token, len(stored))
	for i, t := range stored {
		out[i] = t.API()
	}
	return out, nil
}

// DeleteToken commits a token's deletion: from the moment each manager
// applies it, that manager refuses the token.
func (m *Manager) DeleteToken(ctx context.Context, accessor uuid.UUID) error {
	if !m.raft.IsLeader() {
		return api.ErrNotLeader
	}
	if _, err := m.apply(ctx, fsm.DeleteToken{AccessorID: accessor}); err != nil {
		return err
	}
	m.log.Info("token deleted", "accessor", accessor)
	return nil
}

// TokenByHash returns the token whose secret hashes to hash, from this
// manager's own replicated state: authentication never waits for the
// leader. A token is known to a manager once it has applied its creation.
func (m *Manager) TokenByHash(hash string) (fsm.Token, bool) {
	return m.fsm.TokenByHash(hash)
}

// bootstrapToken writes the bootstrap token, if one is configured, once this
// manager leads and its state is current (after the barrier). The FSM stores
// it only while the token table has never held a token, so every leader may
// try; the local check first spares a write on every later election. It
// reports whether nothing is left to do. A failure is logged, not fatal:
// keepBootstrapping tries again while this manager leads.
func (m *Manager) bootstrapToken(ctx context.Context) (done bool) {
	if m.cfg.BootstrapTokenHash == "" || m.fsm.TokensBootstrapped() {
		return true
	}
	cmd := fsm.BootstrapToken{AccessorID: uuid.New(), Hash: m.cfg.BootstrapTokenHash, CreateTime: time.Now().UTC()}
	res, err := m.apply(ctx, cmd)
	switch {
	case err != nil:
		if ctx.Err() == nil {
			m.log.Error("bootstrap token not stored; retrying while leading", "error", err)
		}
		return false
	case res.Changed:
		m.log.Info("bootstrap token stored", "accessor", cmd.AccessorID, "name", fsm.BootstrapTokenName, "role", api.RoleOperator)
	}
	return true
}

// keepBootstrapping retries bootstrapToken every RetryMax until it is done
// or ctx ends (this term of leadership), and returns the function that stops
// it and waits. A first attempt can be refused for a reason that passes
// while the same manager leads: during a rolling upgrade, a voter whose
// binary predates the command (409 until it is upgraded).
func (m *Manager) keepBootstrapping(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(m.cfg.RetryMax)
		defer t.Stop()
		for !m.bootstrapToken(ctx) {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() { cancel(); <-done }
}
