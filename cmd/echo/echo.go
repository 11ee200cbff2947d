package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Environment variables understood by the echo service. They are the only
// way to configure it, because the Cube worker starts tasks from an image
// plus an environment and nothing else.
const (
	// envAddr overrides the listen address (default defaultAddr).
	envAddr = "ECHO_ADDR"
	// envExitAtStart makes the process exit with the given code before it
	// listens, to exercise the orchestrator's failed-start handling.
	envExitAtStart = "ECHO_EXIT_AT_START"
	// envUnhealthyAfter makes /health answer 500 once the given Go duration
	// has elapsed since start-up, to exercise health-check driven restarts.
	envUnhealthyAfter = "ECHO_UNHEALTHY_AFTER"
)

// defaultAddr is the listen address used when ECHO_ADDR is unset. Port 7777
// is the one the Dockerfile EXPOSEs.
const defaultAddr = ":7777"

// maxBodyBytes caps the size of a POST / body so a misbehaving client cannot
// make the service buffer arbitrary amounts of memory.
const maxBodyBytes = 1 << 20

// Message is the JSON document accepted and returned by POST /.
type Message struct {
	Msg string
}

// config is the start-up configuration read from the environment.
type config struct {
	// addr is the TCP address to listen on.
	addr string
	// unhealthyAfter is how long /health stays healthy; zero means forever.
	unhealthyAfter time.Duration
}

// parseExitAtStart interprets ECHO_EXIT_AT_START. It reports ok=false when
// the variable is empty, meaning the service should start normally. It is
// separate from parseConfig because the early exit must happen before any
// other setting is validated: a test task asking for exit code N should get
// exactly N even if its other settings are off.
func parseExitAtStart(getenv func(string) string) (code int, ok bool, err error) {
	v := getenv(envExitAtStart)
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 255 {
		return 0, false, fmt.Errorf("invalid %s=%q: want an integer exit code in [0, 255]", envExitAtStart, v)
	}
	return n, true, nil
}

// parseConfig reads the listen address and health settings from getenv
// (os.Getenv in production, a map lookup in tests).
func parseConfig(getenv func(string) string) (config, error) {
	cfg := config{addr: defaultAddr}
	if v := getenv(envAddr); v != "" {
		cfg.addr = v
	}
	if v := getenv(envUnhealthyAfter); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return config{}, fmt.Errorf("invalid %s=%q: want a positive Go duration such as 3s", envUnhealthyAfter, v)
		}
		cfg.unhealthyAfter = d
	}
	return cfg, nil
}

// newHandler returns the HTTP handler of the echo service.
//
// start is the process start time and unhealthyAfter (zero meaning never)
// how long after it /health keeps answering 200. crash is called after the
// response to POST /crash has been flushed; production passes a func that
// exits the process, tests pass one that records the call, which is why it is
// injected rather than hard-wired to os.Exit.
//
// Routing relies on the method-aware ServeMux patterns of Go 1.22+, which
// answer 405 (with an Allow header) for a known path with the wrong method
// and 404 for unknown paths.
func newHandler(start time.Time, unhealthyAfter time.Duration, crash func()) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /{$}", handleEcho)
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		if unhealthyAfter > 0 && time.Since(start) >= unhealthyAfter {
			http.Error(w, "Internal server error", http.StatusInternalServerError)
			return
		}
		writeText(w, http.StatusOK, "OK")
	})
	mux.HandleFunc("GET /healthfail", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "Internal server error", http.StatusInternalServerError)
	})
	mux.HandleFunc("POST /crash", func(w http.ResponseWriter, r *http.Request) {
		writeText(w, http.StatusOK, "crashing")
		// Push the response onto the wire before crash runs, so the caller
		// sees the 200 rather than a reset connection. The error only says
		// that the writer cannot flush, in which case there is nothing better
		// to do than proceed.
		_ = http.NewResponseController(w).Flush()
		crash()
	})
	return mux
}

// handleEcho decodes a Message from the request body and writes it back.
// The body must hold exactly one JSON value of at most maxBodyBytes.
func handleEcho(w http.ResponseWriter, r *http.Request) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	var m Message
	if err := dec.Decode(&m); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "request body too large", http.StatusBadRequest)
			return
		}
		http.Error(w, "malformed JSON body", http.StatusBadRequest)
		return
	}
	// Reject trailing data such as a second document, so that what is echoed
	// is exactly what was sent.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		http.Error(w, "malformed JSON body: trailing data", http.StatusBadRequest)
		return
	}
	body, err := json.Marshal(m)
	if err != nil {
		// Unreachable for a struct of one string, kept for safety.
		http.Error(w, "encoding response failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// writeText writes a plain-text response with the given status code.
func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
}
