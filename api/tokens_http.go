package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// MaxTokenNameLen bounds a token's name, in characters.
const MaxTokenNameLen = 64

// Validate checks a token request: a Name of 1 to MaxTokenNameLen printable
// characters that neither starts nor ends with a space, and a Role that is
// one of read, submit and operator.
func (r TokenRequest) Validate() error {
	n := utf8.RuneCountInString(r.Name)
	switch {
	case n == 0 || n > MaxTokenNameLen:
		return &ValidationError{Msg: fmt.Sprintf("Name is required: 1 to %d characters (got %d)", MaxTokenNameLen, n)}
	case !utf8.ValidString(r.Name) || strings.IndexFunc(r.Name, func(c rune) bool { return !unicode.IsPrint(c) }) >= 0:
		return &ValidationError{Msg: fmt.Sprintf("Name %q holds a character that is not printable", r.Name)}
	case strings.TrimSpace(r.Name) != r.Name:
		return &ValidationError{Msg: fmt.Sprintf("Name %q starts or ends with a space", r.Name)}
	}
	switch r.Role {
	case RoleRead, RoleSubmit, RoleOperator:
		return nil
	}
	return &ValidationError{Msg: fmt.Sprintf("Role %q is not a token role; want read, submit or operator", r.Role)}
}

// decodeTokenRequest reads the body of POST /tokens: one TokenRequest, no
// unknown fields, nothing after it.
func decodeTokenRequest(body []byte) (TokenRequest, error) {
	var req TokenRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		if errors.Is(err, io.EOF) {
			return TokenRequest{}, &ValidationError{Msg: `request body is empty; expected {"Name":"…","Role":"read|submit|operator"}`}
		}
		return TokenRequest{}, describeJSONError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return TokenRequest{}, &ValidationError{Msg: "request body holds data after the JSON value"}
	}
	return req, req.Validate()
}

// createToken answers POST /tokens: 201 and the token with its secret. The
// body is checked here before any forwarding, as for a task.
func (h *managerHandler) createToken(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r)
	var req TokenRequest
	if err == nil {
		req, err = decodeTokenRequest(body)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if !h.serveHere(w, r, body, true) {
		return
	}
	tok, err := h.svc.CreateToken(r.Context(), req)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	// The answer holds a credential: no cache may keep it.
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, tok)
}

// listTokens answers GET /tokens: every token, never a secret.
func (h *managerHandler) listTokens(w http.ResponseWriter, r *http.Request) {
	consistent := consistentRead(r)
	if !h.serveHere(w, r, nil, consistent) {
		return
	}
	toks, err := h.svc.Tokens(r.Context(), consistent)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]Token, len(toks))
	for i, t := range toks {
		t.Secret = "" // a service that set one must not leak it here
		out[i] = t
	}
	writeJSON(w, http.StatusOK, out)
}

// deleteToken answers DELETE /tokens/{accessor}: 204 once committed.
func (h *managerHandler) deleteToken(w http.ResponseWriter, r *http.Request) {
	raw := r.PathValue("accessor")
	id, err := uuid.Parse(raw)
	if err != nil {
		h.fail(w, r, &ValidationError{Msg: fmt.Sprintf("token accessor %q is not a UUID", raw)})
		return
	}
	if !h.serveHere(w, r, nil, true) {
		return
	}
	if err := h.svc.DeleteToken(r.Context(), id); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
