package manager

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
	"github.com/cube-orch/cube/security"
	"github.com/google/uuid"
)

// testPKI makes a CA in a temporary directory and returns a function that
// signs a certificate for a role and name (hosts 127.0.0.1 and localhost).
func testPKI(t *testing.T) func(security.Role, string) security.Files {
	t.Helper()
	dir := t.TempDir()
	ca, cakey, err := security.CreateCA(dir, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	return func(r security.Role, name string) security.Files {
		t.Helper()
		cert, key, err := security.CreateCert(ca, cakey, dir, security.CertRequest{Role: r, Name: name, Hosts: []string{"127.0.0.1", "localhost"}})
		if err != nil {
			t.Fatal(err)
		}
		return security.Files{CA: ca, Cert: cert, Key: key}
	}
}

func loadTLS(t *testing.T, f security.Files) *security.Bundle {
	t.Helper()
	b, err := security.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// clientTLS is the TLS config of a CLI holding f's certificate (none when
// f.Cert is empty) that trusts caFile.
func clientTLS(t *testing.T, caFile string, f security.Files) *tls.Config {
	t.Helper()
	cfg, err := security.ClientTLS(caFile, f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// authAnswer is what the test server answers: the Caller, or the error.
type authAnswer struct {
	Caller api.Caller
	Err    string
}

// The Authenticator on a real TLS server, served as the manager serves its
// API (a certificate verified if given, not required): every kind of
// credential, and none.
func TestAuthenticator_Identities(t *testing.T) {
	sign := testPKI(t)
	srvFiles := sign(security.RoleManager, "m1")
	ci := "cube_ci-secret-0123456789abcdefghijklmnopqrstuvwxyz"
	gone := "cube_gone-secret-0123456789abcdefghijklmnopqrstuvwxy"
	f := fsm.New()
	for _, cmd := range []any{
		fsm.CreateToken{AccessorID: uuid.New(), Name: "ci", Role: api.RoleSubmit, Hash: security.HashToken(ci), CreateTime: time.Now()},
		fsm.CreateToken{AccessorID: uuid.MustParse("00000000-0000-0000-0000-00000000000a"), Name: "gone", Role: api.RoleOperator, Hash: security.HashToken(gone), CreateTime: time.Now()},
		fsm.DeleteToken{AccessorID: uuid.MustParse("00000000-0000-0000-0000-00000000000a")},
	} {
		if res := f.ApplyCommand(cmd); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	auth := NewAuthenticator(f)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := auth.Authenticate(r)
		a := authAnswer{Caller: c}
		if err != nil {
			a.Err = err.Error()
			if !errors.Is(err, api.ErrUnauthenticated) {
				a.Err = "NOT ErrUnauthenticated: " + a.Err
			}
		}
		_ = json.NewEncoder(w).Encode(a)
	})
	srv := httptest.NewUnstartedServer(handler)
	srv.TLS = loadTLS(t, srvFiles).ServerConfig(false)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	plain := httptest.NewServer(handler) // TLS off: tokens still resolve
	t.Cleanup(plain.Close)

	none := security.Files{}
	for _, tc := range []struct {
		name    string
		cert    security.Files
		header  map[string]string
		plain   bool
		want    api.Caller
		wantErr string
	}{
		{"manager certificate", sign(security.RoleManager, "m2"), nil, false, api.Caller{Kind: api.CallerManager, Name: "m2", Role: api.RoleOperator}, ""},
		{"worker certificate", sign(security.RoleWorker, "w1"), nil, false, api.Caller{Kind: api.CallerWorker, Name: "w1"}, ""},
		{"client certificate", sign(security.RoleClient, "alice"), nil, false, api.Caller{Kind: api.CallerClient, Name: "alice", Role: api.RoleOperator}, ""},
		{"certificate wins over a token", sign(security.RoleClient, "bob"), map[string]string{api.HeaderToken: "cube_nobody"}, false, api.Caller{Kind: api.CallerClient, Name: "bob", Role: api.RoleOperator}, ""},
		{"X-Cube-Token", none, map[string]string{api.HeaderToken: ci}, false, api.Caller{Kind: api.CallerToken, Name: "ci", Role: api.RoleSubmit}, ""},
		{"Bearer", none, map[string]string{"Authorization": "Bearer " + ci}, false, api.Caller{Kind: api.CallerToken, Name: "ci", Role: api.RoleSubmit}, ""},
		{"bearer in lower case", none, map[string]string{"Authorization": "bearer " + ci}, false, api.Caller{Kind: api.CallerToken, Name: "ci", Role: api.RoleSubmit}, ""},
		{"X-Cube-Token over plain HTTP", none, map[string]string{api.HeaderToken: ci}, true, api.Caller{Kind: api.CallerToken, Name: "ci", Role: api.RoleSubmit}, ""},
		{"nothing", none, nil, false, api.Caller{}, "unauthenticated: no credentials; present a client certificate or a token (X-Cube-Token, or Authorization: Bearer)"},
		{"nothing over plain HTTP", none, nil, true, api.Caller{}, "no credentials"},
		{"unknown token", none, map[string]string{api.HeaderToken: "cube_mistyped"}, false, api.Caller{}, "unauthenticated: the token is not known to this cluster"},
		{"deleted token", none, map[string]string{"Authorization": "Bearer " + gone}, false, api.Caller{}, "the token is not known to this cluster"},
		{"Basic authorization", none, map[string]string{"Authorization": "Basic YWxpY2U6cHc="}, false, api.Caller{}, `the Authorization header is not "Bearer <token>"`},
		{"empty Bearer", none, map[string]string{"Authorization": "Bearer "}, false, api.Caller{}, `is not "Bearer <token>"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := srv.URL
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS(t, srvFiles.CA, tc.cert)}}
			if tc.plain {
				url, hc = plain.URL, plain.Client()
			}
			req, err := http.NewRequest(http.MethodGet, url+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var got authAnswer
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("answer %q: %v", body, err)
			}
			if got.Caller != tc.want || !strings.Contains(got.Err, tc.wantErr) || (tc.wantErr == "") != (got.Err == "") {
				t.Fatalf("Authenticate = %+v, %q; want %+v, error containing %q", got.Caller, got.Err, tc.want, tc.wantErr)
			}
			for _, v := range tc.header {
				if secret := strings.TrimPrefix(strings.TrimPrefix(v, "Bearer "), "bearer "); got.Err != "" && strings.Contains(got.Err, secret) && secret != "" {
					t.Fatalf("the error echoes the credential: %q", got.Err)
				}
			}
		})
	}

	// A certificate from another CA does not get through the handshake.
	foreign := testPKI(t)(security.RoleClient, "mallory")
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS(t, srvFiles.CA, foreign)}}
	if resp, err := hc.Get(srv.URL + "/"); err == nil {
		resp.Body.Close()
		t.Fatalf("a certificate of another CA was accepted: %d", resp.StatusCode)
	}
}
