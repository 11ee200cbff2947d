package api

import "net/http"

// tokenTransport adds a token to every request it carries.
type tokenTransport struct {
	base  http.RoundTripper
	token string
}

// RoundTrip sets HeaderToken unless the request carries one already.
func (t *tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get(HeaderToken) != "" {
		return t.base.RoundTrip(r)
	}
	r2 := r.Clone(r.Context()) // a RoundTripper must not change its request
	r2.Header.Set(HeaderToken, t.token)
	return t.base.RoundTrip(r2)
}

// withToken returns hc carrying token on every request (hc itself if the
// token is empty).
func withToken(hc *http.Client, token string) *http.Client {
	if token == "" {
		return hc
	}
	c := *hc
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c.Transport = &tokenTransport{base: base, token: token}
	return &c
}
