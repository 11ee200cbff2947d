package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"
)

// prober runs the probes of one check. Each check has its own, so that no
// connection pool, lock or slow peer is shared between checks.
type prober struct {
	spec      Spec
	url       string // KindHTTP
	urlErr    error  // the path does not form a URL
	transport *http.Transport
	client    *http.Client
}

func newProber(s Spec) *prober {
	p := &prober{spec: s}
	if s.Kind != KindHTTP {
		return p
	}
	u, err := url.Parse("http://" + s.Addr + s.Path)
	if err != nil {
		p.urlErr = err
		return p
	}
	p.url = u.String()
	dialer := s.dialer()
	p.transport = &http.Transport{
		// Never through a proxy from the environment: the address is the
		// worker's own published port.
		Proxy:       nil,
		DialContext: dialer.DialContext,
		// A fresh connection per probe, as the seed and the kubelet do: a
		// kept-alive connection would hide a server that no longer accepts
		// new ones.
		DisableKeepAlives:     true,
		ResponseHeaderTimeout: s.Timeout,
		DisableCompression:    true,
	}
	p.client = &http.Client{Transport: p.transport, Timeout: s.Timeout}
	return p
}

// close releases the check's idle connections, if any.
func (p *prober) close() {
	if p.transport != nil {
		p.transport.CloseIdleConnections()
	}
}

// probe runs one probe, bounded by the spec's Timeout and by ctx, and returns
// whether it succeeded and, for a person, what happened.
func (p *prober) probe(ctx context.Context) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, p.spec.Timeout)
	defer cancel()
	switch p.spec.Kind {
	case KindHTTP:
		return p.probeHTTP(ctx)
	case KindTCP:
		return p.probeTCP(ctx)
	}
	return false, fmt.Sprintf("unknown check kind %q", p.spec.Kind)
}

func (p *prober) probeHTTP(ctx context.Context) (bool, string) {
	what := "GET " + p.spec.Path
	if p.urlErr != nil {
		return false, fmt.Sprintf("%s: bad URL: %v", what, p.urlErr)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return false, fmt.Sprintf("%s: %v", what, err)
	}
	req.Header.Set("User-Agent", "cube-health/1")
	resp, err := p.client.Do(req)
	if err != nil {
		return false, p.describe(what, err)
	}
	// Only the status counts; the body is not read, so a slow body cannot
	// delay the verdict. Closing it closes the connection (no keep-alive).
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return false, fmt.Sprintf("%s returned %d", what, resp.StatusCode)
	}
	return true, fmt.Sprintf("%s returned %d", what, resp.StatusCode)
}

func (p *prober) probeTCP(ctx context.Context) (bool, string) {
	conn, err := p.spec.dialer().DialContext(ctx, "tcp", p.spec.Addr)
	if err != nil {
		return false, p.describe("connect "+p.spec.Addr, err)
	}
	_ = conn.Close()
	return true, "connected to " + p.spec.Addr
}

// describe words a probe error for a person: "timed out after 2s",
// "connect 127.0.0.1:1234: connection refused".
func (p *prober) describe(what string, err error) string {
	var ne net.Error
	var dial *net.OpError
	if errors.As(err, &dial) && dial.Op == "dial" && dial.Timeout() && p.spec.dialer().Timeout < p.spec.Timeout {
		return fmt.Sprintf("%s: connect timed out after %s", what, p.spec.dialer().Timeout)
	}
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Sprintf("%s timed out after %s", what, p.spec.Timeout)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var op *net.OpError
	if errors.As(err, &op) {
		inner := op.Err
		var se *os.SyscallError
		if errors.As(inner, &se) {
			inner = se.Err
		}
		addr := p.spec.Addr
		if op.Addr != nil {
			addr = op.Addr.String()
		}
		if op.Op == "dial" {
			if p.spec.Kind == KindTCP {
				return fmt.Sprintf("connect %s: %v", addr, inner)
			}
			return fmt.Sprintf("%s: connect %s: %v", what, addr, inner)
		}
		return fmt.Sprintf("%s: %s %s: %v", what, op.Op, addr, inner)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return what + ": connection closed before a complete answer"
	}
	return fmt.Sprintf("%s: %v", what, err)
}

// firstProbeDelay returns how long a check started at now waits before its
// first probe: until StartedAt+Grace, but never longer than Grace, so that a
// StartedAt in the future (a worker clock ahead of this one) cannot postpone
// the check beyond its grace. A zero StartedAt waits the whole Grace.
func firstProbeDelay(s Spec, now time.Time) time.Duration {
	if s.StartedAt.IsZero() {
		return s.Grace
	}
	d := s.StartedAt.Add(s.Grace).Sub(now)
	return max(0, min(d, s.Grace))
}
