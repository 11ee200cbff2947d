package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cube-orch/cube/security"
)

// runRoot runs the cube command with args and returns its output.
func runRoot(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// makeIdentity makes a CA, one certificate of role/name, a gossip key and
// a token file in a temporary directory, through the CLI.
func makeIdentity(t *testing.T, role, name string) (dir, key string) {
	t.Helper()
	dir = t.TempDir()
	if _, err := runRoot(t, "tls", "ca", "create", "--dir", dir); err != nil {
		t.Fatal(err)
	}
	if _, err := runRoot(t, "tls", "cert", "create", "--"+role, "--name", name, "--dir", dir); err != nil {
		t.Fatal(err)
	}
	out, err := runRoot(t, "keygen")
	if err != nil {
		t.Fatal(err)
	}
	return dir, strings.TrimSpace(out)
}

func TestTLSCommands(t *testing.T) {
	dir, key := makeIdentity(t, "worker", "w1")
	if _, err := security.DecodeGossipKey(key); err != nil {
		t.Fatalf("keygen printed %q: %v", key, err)
	}
	b, err := security.Load(security.Files{CA: filepath.Join(dir, "cube-ca.pem"), Cert: filepath.Join(dir, "worker-w1.pem"), Key: filepath.Join(dir, "worker-w1-key.pem")})
	if err != nil {
		t.Fatal(err)
	}
	if b.Self != (security.Identity{Role: security.RoleWorker, Name: "w1"}) {
		t.Fatalf("certificate names %+v", b.Self)
	}
	if _, err := runRoot(t, "tls", "ca", "create", "--dir", dir); !errors.Is(err, security.ErrExists) {
		t.Fatalf("second CA in the same dir: %v, want ErrExists", err)
	}
	if _, err := runRoot(t, "tls", "cert", "create", "--worker", "--client", "--name", "x", "--dir", dir); err == nil || !strings.Contains(err.Error(), "exactly one") {
		t.Fatalf("two roles: %v", err)
	}
	tok, err := runRoot(t, "keygen", "--token")
	if err != nil || !strings.HasPrefix(tok, security.TokenPrefix) {
		t.Fatalf("keygen --token = %q, %v", tok, err)
	}
}

func TestAgentSecurity_Resolve(t *testing.T) {
	dir, key := makeIdentity(t, "manager", "m1")
	files := security.Files{CA: filepath.Join(dir, "cube-ca.pem"), Cert: filepath.Join(dir, "manager-m1.pem"), Key: filepath.Join(dir, "manager-m1-key.pem")}
	tokFile := filepath.Join(dir, "op.token")
	tok, _ := security.NewToken()
	if err := os.WriteFile(tokFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		s       agentSecurity
		role    string
		wantErr string
	}{
		{"nothing: refused", agentSecurity{}, "manager", "no TLS certificate given"},
		{"insecure", agentSecurity{insecure: true}, "manager", ""},
		{"insecure with a certificate", agentSecurity{insecure: true, files: files}, "manager", "cannot be combined"},
		{"certificate without key file", agentSecurity{files: security.Files{CA: files.CA, Cert: files.Cert}}, "manager", "needs the CA certificate"},
		{"no gossip key", agentSecurity{files: files}, "manager", "no gossip key"},
		{"bad gossip key", agentSecurity{files: files, encrypt: "c2hvcnQ="}, "manager", "want 16, 24 or 32"},
		{"manager certificate for a worker", agentSecurity{files: files, encrypt: key}, "worker", "a worker needs one"},
		{"bad token file", agentSecurity{files: files, encrypt: key, bootstrap: files.CA}, "manager", "does not hold a Cube token"},
		{"all there", agentSecurity{files: files, encrypt: key, bootstrap: tokFile}, "manager", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, keys, hash, err := tc.s.resolve(tc.role)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.s.insecure {
				if f.Enabled() || keys != nil || hash != "" {
					t.Fatalf("insecure resolved to %+v %v %q", f, keys, hash)
				}
				return
			}
			if f != files || len(keys) != 1 || keys[0] != key || hash != security.HashToken(tok) {
				t.Fatalf("resolved %+v %v %q", f, keys, hash)
			}
		})
	}
}

// A manager and a worker started with no credentials refuse to start, with
// the way out in the message.
func TestAgents_RefuseToStartOpen(t *testing.T) {
	clearEnv(t)
	for _, args := range [][]string{
		{"manager", "--id", "m1", "--data", t.TempDir()},
		{"worker", "--name", "w1", "--data", t.TempDir()},
	} {
		_, err := runRoot(t, args...)
		if !errors.Is(err, errNoCredentials) || !strings.Contains(err.Error(), "--insecure") {
			t.Fatalf("cube %s: err = %v", args[0], err)
		}
	}
}

func TestConfigFile_TLSBlock(t *testing.T) {
	clearEnv(t)
	path := writeFile(t, `
id = "m1"
data_dir = "/tmp/m1"
encrypt = "k"
tls {
  ca_file   = "/etc/cube/ca.pem"
  cert_file = "/etc/cube/m1.pem"
  key_file  = "/etc/cube/m1-key.pem"
}
`)
	cmd, m := newManagerCmdFlags()
	if err := parseOnly(cmd, []string{"--config", path}); err != nil {
		t.Fatal(err)
	}
	want := security.Files{CA: "/etc/cube/ca.pem", Cert: "/etc/cube/m1.pem", Key: "/etc/cube/m1-key.pem"}
	if m.sec.files != want || m.sec.encrypt != "k" {
		t.Fatalf("files %+v encrypt %q", m.sec.files, m.sec.encrypt)
	}
	bad := writeFile(t, "id = \"m1\"\ndata_dir = \"/tmp\"\ntls {\n  ca = \"x\"\n}\n")
	cmd, _ = newManagerCmdFlags()
	if err := parseOnly(cmd, []string{"--config", bad}); err == nil || !strings.Contains(err.Error(), "ca") {
		t.Fatalf("unknown key in tls block: %v", err)
	}
}

func TestClusterEnv(t *testing.T) {
	dir := t.TempDir()
	envFile := filepath.Join(dir, ".cluster", "env")
	if err := os.MkdirAll(filepath.Dir(envFile), 0o700); err != nil {
		t.Fatal(err)
	}
	body := "# comment\nexport CUBE_MANAGERS=https://127.0.0.1:5556\nexport CUBE_TOKEN='cube_abc'\nexport CUBE_CACERT=.cluster/tls/cube-ca.pem\nexport CUBE_CLIENT_CERT=/abs/c.pem\n"
	if err := os.WriteFile(envFile, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	none := func(string) (string, bool) { return "", false }
	withFile := func(k string) (string, bool) {
		if k == "CUBE_ENV_FILE" {
			return envFile, true
		}
		return "", false
	}
	env := clusterEnv(withFile)
	for k, want := range map[string]string{
		"CUBE_MANAGERS":    "https://127.0.0.1:5556",
		"CUBE_TOKEN":       "cube_abc",
		"CUBE_CACERT":      filepath.Join(dir, ".cluster/tls/cube-ca.pem"),
		"CUBE_CLIENT_CERT": "/abs/c.pem",
		"CUBE_CLIENT_KEY":  "",
	} {
		if got := env(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	// Any CUBE_* client variable in the environment: the file is not read.
	fromEnv := clusterEnv(func(k string) (string, bool) {
		if k == "CUBE_TOKEN" {
			return "cube_env", true
		}
		return withFile(k)
	})
	if fromEnv("CUBE_TOKEN") != "cube_env" || fromEnv("CUBE_MANAGERS") != "" {
		t.Fatalf("environment should win over the file")
	}
	if !fileExists(clusterEnvFile) && clusterEnv(none)("CUBE_TOKEN") != "" {
		t.Fatal("no file, no environment: want nothing")
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
