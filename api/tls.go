package api

import (
	"crypto/tls"
	"net/http"
	"strings"
)

// NewTLSTransport is newTransport speaking TLS with cfg (nil: plain HTTP
// only). Every Cube client of a Cube API over TLS (the CLI, a manager
// calling workers or forwarding to the leader, a worker reporting) uses it,
// so the dial and dead-peer bounds stay those of every Cube connection.
func NewTLSTransport(sourceIP string, cfg *tls.Config) *http.Transport {
	t := newTransport(sourceIP)
	if cfg != nil {
		t.TLSClientConfig = cfg.Clone()
		// A custom dialer turns HTTP/2's automatic set-up off; ask for it.
		t.ForceAttemptHTTP2 = true
	}
	return t
}

// NewHTTPClientTLS is NewHTTPClient speaking TLS with cfg (nil: plain
// HTTP): for a manager calling the other managers' API (its joiner).
func NewHTTPClientTLS(sourceIP string, cfg *tls.Config) *http.Client {
	return &http.Client{Transport: NewTLSTransport(sourceIP, cfg)}
}

// withScheme prefixes an address without one with scheme.
func withScheme(scheme, addr string) string {
	if scheme == "" || strings.Contains(addr, "://") {
		return addr
	}
	return scheme + "://" + strings.TrimSpace(addr)
}
