package api

import (
	"io"
	"net/http"
	"net/url"
	"strconv"
)

// LogOptions are the choices of a task's logs (GET /tasks/{id}/logs on
// managers and workers: ?tail=N&follow=1).
type LogOptions struct {
	// Tail, if > 0, is how many of the last lines to send; 0 sends all.
	Tail int
	// Follow keeps the stream open after what the container wrote so far
	// and sends what it writes next, until the container ends (the stream
	// then ends) or the caller goes away.
	Follow bool
}

// query returns the options as the query string of the logs path ("" for
// the defaults).
func (o LogOptions) query() string {
	q := url.Values{}
	if o.Tail > 0 {
		q.Set("tail", strconv.Itoa(o.Tail))
	}
	if o.Follow {
		q.Set("follow", "1")
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// logOptions reads the options of a logs request: tail=N (a whole number,
// 0 for all) and follow, set by its presence with any value but a false
// one, as ?consistent is.
func logOptions(r *http.Request) (LogOptions, error) {
	tail, err := QueryInt(r, "tail", 0)
	if err != nil {
		return LogOptions{}, err
	}
	return LogOptions{Tail: tail, Follow: queryFlag(r, "follow")}, nil
}

// queryFlag reports whether the query parameter name is set: present with
// any value but a false one ("0", "false", …), so ?name, ?name=1 and
// ?name=true all count.
func queryFlag(r *http.Request, name string) bool {
	q := r.URL.Query()
	if !q.Has(name) {
		return false
	}
	if b, err := strconv.ParseBool(q.Get(name)); err == nil {
		return b
	}
	return true
}

// serveLogs writes a logs stream as the answer. A followed stream is
// flushed at once, so that the caller has the answer's status before the
// container writes anything, and then after every write, so that each
// line reaches the caller as the container writes it; the copy ends with
// the stream (the container ended) or when the caller goes away (the
// request's context ends the stream). A stream that fails part way (the
// worker went away under a manager's relay, the engine under a worker's)
// aborts the answer instead of ending it, so that the caller sees a break
// and never takes it for the container's end (net/http's ErrAbortHandler,
// as httputil.ReverseProxy does).
func serveLogs(w http.ResponseWriter, rc io.Reader, follow bool) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	ctl := http.NewResponseController(w)
	if follow {
		w.WriteHeader(http.StatusOK)
		_ = ctl.Flush()
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := rc.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return // the caller went away
			}
			if follow && ctl.Flush() != nil {
				return
			}
		}
		switch {
		case err == io.EOF:
			return
		case err != nil:
			panic(http.ErrAbortHandler)
		}
	}
}
