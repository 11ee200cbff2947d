package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// Path roots the page on a manager's API: /ui/ serves index.html, /ui/app.js
// and /ui/style.css beside it.
const Path = "/ui/"

//go:embed static
var static embed.FS

// contentTypes are the types of the page's files, set here rather than
// looked up in the system's MIME tables (mime.TypeByExtension reads
// /etc/mime.types, which differ between machines): a browser refuses a
// script or a style sheet of the wrong type under nosniff.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}

// securityHeaders go on every answer of the page's handler. The policy lets
// the page load only its own script and style sheet and talk only to the
// manager that served it (connect-src 'self'), so that a task name or a
// reason crafted as markup cannot run script even if it reached the DOM; no
// other site may frame the page (its buttons stop tasks and drain workers).
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
		"img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
	"X-Content-Type-Options": "nosniff",
	"X-Frame-Options":        "DENY",
	"Referrer-Policy":        "no-referrer",
	// Revalidated on every load (cheap: an ETag answers 304), so that a
	// manager upgraded to a new binary serves its new page at once.
	"Cache-Control": "no-cache",
}

// file is one embedded file with what its answers carry.
type file struct {
	name, contentType, etag string
	body                    []byte
}

// handler serves the embedded files under Path.
type handler struct {
	files map[string]file // by the request path: "/ui/", "/ui/app.js", …
}

// Handler returns the page's handler. It expects requests for paths under
// Path (it is mounted there, not behind http.StripPrefix), answers GET and
// HEAD only, and 404 for a file it does not have.
func Handler() http.Handler {
	h := &handler{files: make(map[string]file)}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, "static/")
		ct, ok := contentTypes[path.Ext(name)]
		if !ok {
			return fmt.Errorf("ui: embedded file %s has no content type in contentTypes", p)
		}
		sum := sha256.Sum256(body)
		f := file{name: name, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, body: body}
		h.files[Path+name] = f
		if name == "index.html" {
			h.files[Path] = f
		}
		return nil
	})
	if err != nil {
		// The files are compiled in: a failure here is a broken build,
		// caught by the package's tests, never a condition at run time.
		panic(err)
	}
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for k, v := range securityHeaders {
		w.Header().Set(k, v)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "the page answers GET and HEAD only", http.StatusMethodNotAllowed)
		return
	}
	f, ok := h.files[r.URL.Path]
	if !ok {
		http.Error(w, fmt.Sprintf("no such file %s; the page is at %s", r.URL.Path, Path), http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", f.contentType)
	w.Header().Set("ETag", f.etag)
	// ServeContent answers HEAD, If-None-Match (304) and ranges; the zero
	// time leaves Last-Modified out, the ETag stands for the content.
	http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.body))
}
