package security

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
)

// TokenPrefix starts every token secret, so that a leaked one is easy to
// recognise (and to scan for) in logs and repositories.
const TokenPrefix = "cube_"

// NewToken returns a new token secret: TokenPrefix and 32 random bytes.
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// HashToken returns what the cluster stores of a token: the hex SHA-256 of
// its secret. Secrets are 256 random bits, so a plain hash is enough (no
// password hashing): nobody can guess one from its hash, and lookups stay
// one map access per request.
func HashToken(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// ReadTokenFile returns the token secret in the file at path (surrounding
// space trimmed).
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if !strings.HasPrefix(s, TokenPrefix) || len(s) < len(TokenPrefix)+32 {
		return "", fmt.Errorf("%s does not hold a Cube token (%s…); make one with cube keygen --token", path, TokenPrefix)
	}
	return s, nil
}

// GossipKeySize is the size of the gossip keys NewGossipKey makes: AES-256.
const GossipKeySize = 32

// NewGossipKey returns a new gossip encryption key, base64 encoded (as
// Consul's keygen prints it).
func NewGossipKey() (string, error) {
	b := make([]byte, GossipKeySize)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// DecodeGossipKey decodes a base64 gossip key; memberlist takes 16, 24 or
// 32 bytes (AES-128, -192, -256).
func DecodeGossipKey(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("gossip key is not base64: %w", err)
	}
	switch len(b) {
	case 16, 24, 32:
		return b, nil
	}
	return nil, fmt.Errorf("gossip key is %d bytes; want 16, 24 or 32 (make one with cube keygen)", len(b))
}
