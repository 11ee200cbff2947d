package api

import (
	"net/http"
	"time"
)

// NewHTTPServer returns the server every Cube node serves its API with:
// bounded header, body and idle times, so a slow or silent client cannot
// hold a connection for ever. No write timeout: event streams and log
// follows last as long as the client reads.
func NewHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
}

// NewHTTPClient returns an HTTP client with Cube's pooled transport whose
// connections leave from sourceIP ("" for any). Share one between the
// Clients a component builds over time, so their connections are reused
// instead of piling up until idle timeouts.
func NewHTTPClient(sourceIP string) *http.Client {
	return &http.Client{Transport: newTransport(sourceIP)}
}
