package fsm

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/security"
	"github.com/google/uuid"
)

// hashOf is what the leader stores of a secret.
func hashOf(secret string) string { return security.HashToken(secret) }

func TestFSM_Apply_CreateToken(t *testing.T) {
	taken := CreateToken{AccessorID: uuid.New(), Name: "ci", Role: api.RoleSubmit, Hash: hashOf("cube_ci"), CreateTime: t0}
	ok := func(mod func(*CreateToken)) CreateToken {
		c := CreateToken{AccessorID: uuid.New(), Name: "deploy", Role: api.RoleOperator, Hash: hashOf("cube_deploy"), CreateTime: t0}
		mod(&c)
		return c
	}
	for _, tc := range []struct {
		name    string
		cmd     CreateToken
		wantErr string // substring; empty: stored
		is      error
	}{
		{"stored", ok(func(*CreateToken) {}), "", nil},
		{"read role", ok(func(c *CreateToken) { c.Role = api.RoleRead }), "", nil},
		{"no accessor", ok(func(c *CreateToken) { c.AccessorID = uuid.Nil }), "AccessorID is required", nil},
		{"empty name", ok(func(c *CreateToken) { c.Name = "" }), "token name is required", nil},
		{"unknown role", ok(func(c *CreateToken) { c.Role = "admin" }), `token role "admin" is not one of read, submit, operator`, nil},
		{"no role", ok(func(c *CreateToken) { c.Role = "" }), `token role "" is not one`, nil},
		{"secret instead of hash", ok(func(c *CreateToken) { c.Hash = "cube_" + strings.Repeat("x", 43) }), "64 lowercase hex digits", nil},
		{"uppercase hash", ok(func(c *CreateToken) { c.Hash = strings.ToUpper(hashOf("x")) }), "64 lowercase hex digits", nil},
		{"duplicate accessor", ok(func(c *CreateToken) { c.AccessorID = taken.AccessorID }), "token accessor " + taken.AccessorID.String() + " is taken", api.ErrConflict},
		{"duplicate hash", ok(func(c *CreateToken) { c.Hash = taken.Hash }), "a token with this hash is already stored", api.ErrConflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := New()
			applyLog(t, f, 1, taken)
			res := applyLog(t, f, 2, tc.cmd)
			if tc.wantErr == "" {
				got, found := f.TokenByHash(tc.cmd.Hash)
				if res.Err != nil || !res.Changed || !found || got != Token(tc.cmd) {
					t.Fatalf("apply %+v: %+v; TokenByHash = %+v, %v", tc.cmd, res, got, found)
				}
				return
			}
			if res.Err == nil || !strings.Contains(res.Err.Error(), tc.wantErr) || res.Changed {
				t.Fatalf("apply %+v: %+v, want error containing %q", tc.cmd, res, tc.wantErr)
			}
			if tc.is != nil && !errors.Is(res.Err, tc.is) {
				t.Fatalf("error %v is not %v", res.Err, tc.is)
			}
			var verr *api.ValidationError
			if tc.is == nil && !errors.As(res.Err, &verr) {
				t.Fatalf("error %v is not a ValidationError (HTTP 400)", res.Err)
			}
			if toks := f.Tokens(); len(toks) != 1 || toks[0] != Token(taken) {
				t.Fatalf("a refused token changed the table: %+v", toks)
			}
		})
	}
}

func TestFSM_Apply_DeleteToken(t *testing.T) {
	f := New()
	c := CreateToken{AccessorID: uuid.New(), Name: "ci", Role: api.RoleSubmit, Hash: hashOf("cube_ci"), CreateTime: t0}
	applyLog(t, f, 1, c)
	if res := applyLog(t, f, 2, DeleteToken{AccessorID: c.AccessorID}); res.Err != nil || !res.Changed {
		t.Fatalf("delete: %+v", res)
	}
	if _, ok := f.TokenByHash(c.Hash); ok || len(f.Tokens()) != 0 {
		t.Fatalf("deleted token still found: %+v", f.Tokens())
	}
	if res := applyLog(t, f, 3, DeleteToken{AccessorID: c.AccessorID}); res.Err != nil || res.Changed {
		t.Fatalf("delete again: %+v, want a no-op (a retried deletion)", res)
	}
	// The hash is free again: a new token may take it (a secret is never
	// reused in practice; the index must simply not keep stale entries).
	c.AccessorID = uuid.New()
	if res := applyLog(t, f, 4, c); res.Err != nil {
		t.Fatalf("create after delete: %v", res.Err)
	}
}

// The bootstrap token is stored by the first BootstrapToken only, while the
// table has never held a token; every later one, from any leader and with
// any hash, changes nothing, even once every token has been deleted.
func TestFSM_Apply_BootstrapTokenOnceOnly(t *testing.T) {
	first := BootstrapToken{AccessorID: uuid.New(), Hash: hashOf("cube_first"), CreateTime: t0}
	second := BootstrapToken{AccessorID: uuid.New(), Hash: hashOf("cube_second"), CreateTime: t0.Add(time.Minute)}

	f := New()
	if f.TokensBootstrapped() {
		t.Fatal("a new FSM says it was bootstrapped")
	}
	res := applyLog(t, f, 1, first)
	want := Token{AccessorID: first.AccessorID, Name: BootstrapTokenName, Role: api.RoleOperator, Hash: first.Hash, CreateTime: t0}
	if got, ok := f.TokenByHash(first.Hash); res.Err != nil || !res.Changed || !ok || got != want {
		t.Fatalf("first bootstrap: %+v; stored %+v, %v; want %+v", res, got, ok, want)
	}
	for i, cmd := range []BootstrapToken{first, second} {
		if res := applyLog(t, f, uint64(2+i), cmd); res.Err != nil || res.Changed {
			t.Fatalf("bootstrap #%d again: %+v, want a no-op", i+2, res)
		}
	}
	applyLog(t, f, 4, DeleteToken{AccessorID: first.AccessorID})
	if res := applyLog(t, f, 5, second); res.Changed || len(f.Tokens()) != 0 || !f.TokensBootstrapped() {
		t.Fatalf("bootstrap after the bootstrap token was deleted: %+v, tokens %+v", res, f.Tokens())
	}

	// A table that ever held a created token is bootstrapped too.
	g := New()
	applyLog(t, g, 1, CreateToken{AccessorID: uuid.New(), Name: "ci", Role: api.RoleRead, Hash: hashOf("cube_ci"), CreateTime: t0})
	if res := applyLog(t, g, 2, first); res.Changed || len(g.Tokens()) != 1 {
		t.Fatalf("bootstrap after a created token: %+v, tokens %+v", res, g.Tokens())
	}

	// A malformed bootstrap on a fresh table is refused, identically everywhere.
	h := New()
	if res := applyLog(t, h, 1, BootstrapToken{AccessorID: uuid.New(), Hash: "cube_secret", CreateTime: t0}); res.Err == nil || h.TokensBootstrapped() {
		t.Fatalf("malformed bootstrap: %+v", res)
	}
}

// Snapshots carry the tokens, the index by hash and the bootstrapped mark.
func TestFSM_SnapshotRestore_Tokens(t *testing.T) {
	src := New()
	boot := BootstrapToken{AccessorID: uuid.New(), Hash: hashOf("cube_boot"), CreateTime: t0}
	ci := CreateToken{AccessorID: uuid.New(), Name: "ci", Role: api.RoleSubmit, Hash: hashOf("cube_ci"), CreateTime: t0.Add(time.Second)}
	applyLog(t, src, 1, boot)
	applyLog(t, src, 2, ci)
	data := state(t, src)
	if bytes.Contains(data, []byte("cube_")) {
		t.Fatalf("a snapshot holds a secret: %s", data)
	}

	dst := New()
	if err := dst.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(dst.Tokens(), src.Tokens()) || len(dst.Tokens()) != 2 {
		t.Fatalf("restored tokens %+v, want %+v", dst.Tokens(), src.Tokens())
	}
	if got, ok := dst.TokenByHash(ci.Hash); !ok || got.Name != "ci" {
		t.Fatalf("index by hash not restored: %+v, %v", got, ok)
	}

	// Deleted down to nothing, the table stays bootstrapped across a snapshot.
	applyLog(t, src, 3, DeleteToken{AccessorID: boot.AccessorID})
	applyLog(t, src, 4, DeleteToken{AccessorID: ci.AccessorID})
	empty := New()
	if err := empty.Restore(io.NopCloser(bytes.NewReader(state(t, src)))); err != nil {
		t.Fatal(err)
	}
	if !empty.TokensBootstrapped() {
		t.Fatal("the bootstrapped mark was lost in the snapshot")
	}
	if res := applyLog(t, empty, 5, boot); res.Changed {
		t.Fatalf("bootstrap after restore: %+v, want a no-op", res)
	}
}

// A snapshot written before tokens existed (version 1, recorded) restores
// with its tasks and workers and an empty, never used token table.
func TestFSM_Restore_Version1(t *testing.T) {
	const v1 = `{"Version":1,"Tasks":[{"ID":"6f1c2a4e-8b3d-4f5a-9c7e-0d1b2c3d4e5f","Name":"echo","Image":"cube-echo:latest","State":2,"DesiredState":2,"Worker":"w1","Generation":3}],` +
		`"Workers":[{"Name":"w1","API":"127.0.0.1:5555","State":"alive","Cpu":2}]}` + "\n"
	f := New()
	applyLog(t, f, 1, CreateToken{AccessorID: uuid.New(), Name: "gone", Role: api.RoleRead, Hash: hashOf("cube_gone"), CreateTime: t0}) // replaced
	if err := f.Restore(io.NopCloser(strings.NewReader(v1))); err != nil {
		t.Fatal(err)
	}
	if task, err := f.Task(wireID); err != nil || task.Worker != "w1" || task.Generation != 3 {
		t.Fatalf("task from a version 1 snapshot: %+v, %v", task, err)
	}
	if n, ok := f.Worker("w1"); !ok || n.Cpu != 2 {
		t.Fatalf("worker from a version 1 snapshot: %+v, %v", n, ok)
	}
	if len(f.Tokens()) != 0 || f.TokensBootstrapped() {
		t.Fatalf("tokens after a version 1 snapshot: %+v (bootstrapped %v)", f.Tokens(), f.TokensBootstrapped())
	}
	if res := applyLog(t, f, 2, BootstrapToken{AccessorID: uuid.New(), Hash: hashOf("cube_boot"), CreateTime: t0}); !res.Changed {
		t.Fatalf("bootstrap after a version 1 snapshot: %+v", res)
	}
	for _, v := range []string{`{"Version":0}`, `{"Version":4}`} {
		if err := f.Restore(io.NopCloser(strings.NewReader(v))); err == nil || !strings.Contains(err.Error(), "reads versions 1 to 3") {
			t.Fatalf("Restore(%s): %v", v, err)
		}
	}
}

// Token.API never carries the hash (api.Token has no field for it) and
// never a secret.
func TestToken_API(t *testing.T) {
	tok := Token{AccessorID: wireID, Name: "ci", Role: api.RoleSubmit, Hash: wireHash, CreateTime: wireTime}
	want := api.Token{AccessorID: wireID, Name: "ci", Role: api.RoleSubmit, CreateTime: wireTime}
	if got := tok.API(); got != want {
		t.Fatalf("API() = %+v, want %+v", got, want)
	}
}
