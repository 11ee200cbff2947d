package security

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// testPKI makes a CA in a temporary directory and returns a function that
// signs certificates with it.
func testPKI(t *testing.T) (dir string, sign func(Role, string) Files) {
	t.Helper()
	dir = t.TempDir()
	ca, cakey, err := CreateCA(dir, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	return dir, func(r Role, name string) Files {
		t.Helper()
		c, k, err := CreateCert(ca, cakey, dir, CertRequest{Role: r, Name: name, Hosts: []string{"127.0.0.1", "localhost"}})
		if err != nil {
			t.Fatal(err)
		}
		return Files{CA: ca, Cert: c, Key: k}
	}
}

func TestCreateCA_RefusesToOverwrite(t *testing.T) {
	dir, _ := testPKI(t)
	if _, _, err := CreateCA(dir, "", 0); !errors.Is(err, ErrExists) {
		t.Fatalf("second CreateCA: got %v, want ErrExists", err)
	}
	st, err := os.Stat(dir + "/" + CAKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode %v, want 0600", st.Mode().Perm())
	}
}

func TestLoad_IdentityAndErrors(t *testing.T) {
	_, sign := testPKI(t)
	f := sign(RoleWorker, "w1")
	b, err := Load(f)
	if err != nil {
		t.Fatal(err)
	}
	if b.Self != (Identity{Role: RoleWorker, Name: "w1"}) {
		t.Fatalf("Self = %+v", b.Self)
	}
	_, other := testPKI(t)
	foreign := other(RoleManager, "m1")
	if _, err := Load(Files{CA: f.CA, Cert: foreign.Cert, Key: foreign.Key}); err == nil || !strings.Contains(err.Error(), "not signed by the CA") {
		t.Fatalf("certificate of another CA: got %v", err)
	}
	if _, err := Load(Files{CA: f.CA}); err == nil {
		t.Fatal("CA alone: no error")
	}
	if _, _, err := CreateCert(f.CA, strings.Replace(f.CA, ".pem", "-key.pem", 1), t.TempDir(), CertRequest{Role: "admin", Name: "x"}); err == nil {
		t.Fatal("unknown role accepted")
	}
	if _, _, err := CreateCert(f.CA, strings.Replace(f.CA, ".pem", "-key.pem", 1), t.TempDir(), CertRequest{Role: RoleClient, Name: "../x"}); err == nil {
		t.Fatal("name with a slash accepted")
	}
}

// handshake runs one TLS connection over real TCP between server and client
// configs and returns the server's view of the peer, or the first error.
func handshake(t *testing.T, server, client *tls.Config) (Identity, error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		id  Identity
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		cs := tc.ConnectionState()
		id, _ := PeerIdentity(&cs)
		_, _ = tc.Write([]byte("x"))
		done <- result{id: id}
	}()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, cerr := tls.DialWithDialer(d, "tcp", ln.Addr().String(), client)
	if cerr == nil {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, cerr = io.ReadFull(c, make([]byte, 1))
		c.Close()
	}
	r := <-done
	if cerr != nil {
		return Identity{}, cerr
	}
	return r.id, r.err
}

func TestTLS_RolesOverTCP(t *testing.T) {
	_, sign := testPKI(t)
	_, otherSign := testPKI(t)
	load := func(f Files) *Bundle {
		b, err := Load(f)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	m1, m2 := load(sign(RoleManager, "m1")), load(sign(RoleManager, "m2"))
	w1, cl := load(sign(RoleWorker, "w1")), load(sign(RoleClient, "ops"))
	stranger := load(otherSign(RoleManager, "m9"))

	cases := []struct {
		name    string
		server  *tls.Config
		client  *tls.Config
		want    Identity
		wantErr bool
	}{
		{"raft: manager to manager", m1.ServerConfig(true, RoleManager), m2.ClientConfig(RoleManager), Identity{RoleManager, "m2"}, false},
		{"raft: worker refused", m1.ServerConfig(true, RoleManager), w1.ClientConfig(RoleManager), Identity{}, true},
		{"raft: other CA refused", m1.ServerConfig(true, RoleManager), stranger.ClientConfig(RoleManager), Identity{}, true},
		{"worker API: no certificate refused", w1.ServerConfig(true, RoleManager), &tls.Config{RootCAs: w1.Pool(), ServerName: ServerName(RoleWorker)}, Identity{}, true},
		{"manager API: no certificate allowed", m1.ServerConfig(false), &tls.Config{RootCAs: m1.Pool(), ServerName: "127.0.0.1"}, Identity{}, false},
		{"manager API: client certificate", m1.ServerConfig(false), cl.ClientConfig(RoleManager), Identity{RoleClient, "ops"}, false},
		{"worker posing as manager server", w1.ServerConfig(false), m1.ClientConfig(RoleManager), Identity{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, err := handshake(t, tc.server, tc.client)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tc.wantErr)
			}
			if id != tc.want {
				t.Fatalf("peer = %+v, want %+v", id, tc.want)
			}
		})
	}
}

func TestTokenAndGossipKey(t *testing.T) {
	a, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewToken()
	if a == b || !strings.HasPrefix(a, TokenPrefix) {
		t.Fatalf("tokens %q %q", a, b)
	}
	if HashToken(a) == HashToken(b) || len(HashToken(a)) != 64 {
		t.Fatal("hashes collide or wrong length")
	}
	p := t.TempDir() + "/t"
	_ = os.WriteFile(p, []byte(a+"\n"), 0o600)
	if got, err := ReadTokenFile(p); err != nil || got != a {
		t.Fatalf("ReadTokenFile = %q, %v", got, err)
	}
	_ = os.WriteFile(p, []byte("hunter2"), 0o600)
	if _, err := ReadTokenFile(p); err == nil {
		t.Fatal("a non-token accepted")
	}
	k, _ := NewGossipKey()
	if kb, err := DecodeGossipKey(k); err != nil || len(kb) != 32 {
		t.Fatalf("DecodeGossipKey = %d bytes, %v", len(kb), err)
	}
	if _, err := DecodeGossipKey("c2hvcnQ="); err == nil {
		t.Fatal("5-byte key accepted")
	}
}

// Certificates are valid from Backdate before their making, so that a
// peer whose clock is stepped back minutes after they were made (NTP
// correcting it) still accepts them: the CA and a node certificate verify
// at 10 and 59 minutes before now, and a handshake between two managers
// succeeds with one of them living 10 minutes in the past.
func TestCertificates_ValidForAClockSteppedBack(t *testing.T) {
	_, sign := testPKI(t)
	m1, m2 := sign(RoleManager, "m1"), sign(RoleManager, "m2")
	b1, err := Load(m1)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := Load(m2)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := loadKeyPair(m1.Cert, m1.Key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _, err := loadCA(m1.CA, strings.Replace(m1.CA, ".pem", "-key.pem", 1))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*x509.Certificate{ca, pair.Leaf} {
		if age := time.Since(c.NotBefore); age < Backdate-time.Minute || age > Backdate+time.Minute {
			t.Errorf("%s: NotBefore %s ago, want %s", c.Subject.CommonName, age.Round(time.Second), Backdate)
		}
	}
	for _, back := range []time.Duration{10 * time.Minute, Backdate - time.Minute} {
		if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: b1.Pool(), CurrentTime: time.Now().Add(-back), DNSName: ServerName(RoleManager)}); err != nil {
			t.Errorf("verified on a clock %s back: %v", back, err)
		}
	}
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: b1.Pool(), CurrentTime: time.Now().Add(-Backdate - time.Minute)}); err == nil {
		t.Errorf("verified on a clock %s back, before its validity", Backdate+time.Minute)
	}
	// m1's clock 10 minutes back, both as the server and as the client.
	past := func() time.Time { return time.Now().Add(-10 * time.Minute) }
	server, client := b1.ServerConfig(true, RoleManager), b1.ClientConfig(RoleManager)
	server.Time, client.Time = past, past
	if id, err := handshake(t, server, b2.ClientConfig(RoleManager)); err != nil || id != (Identity{RoleManager, "m2"}) {
		t.Errorf("m1 with its clock back, serving m2: %+v %v", id, err)
	}
	if _, err := handshake(t, b2.ServerConfig(true, RoleManager), client); err != nil {
		t.Errorf("m1 with its clock back, calling m2: %v", err)
	}
}
