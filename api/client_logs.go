package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/google/uuid"
)

// FollowLogs copies a task's container output to w as the container writes
// it: its last tail lines (0: all), then what it writes next, until the
// container ends (nil: the stream ended) or ctx does (ctx's error). Any
// manager serves it, relaying from the task's worker. Opening the stream is
// retried as every call is (another manager on a connection error or a
// 503, for RetryFor); each attempt waits at most the request timeout for
// the answer, and none bounds the stream itself. A stream that breaks once
// open (its manager or worker went away) is an error: the caller decides
// whether to follow again, knowing how much it has printed.
func (c *Client) FollowLogs(ctx context.Context, id uuid.UUID, tail int, w io.Writer) error {
	path := "/tasks/" + id.String() + "/logs" + LogOptions{Tail: tail, Follow: true}.query()
	resp, base, err := c.openStream(ctx, path)
	if err != nil {
		return fmt.Errorf("follow logs of task %s: %w", id, err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("logs of task %s from %s broke off: %w", id, base, err)
	}
	return nil
}

// openStream sends GET path to the managers in the order call uses (the
// known leader, then round-robin), retrying as call does, and returns the
// first 2xx answer with its body open for the caller to read and close.
// Only the wait for the answer is bounded (the request timeout), by a
// timer rather than a deadline on the request's context, which would also
// cut the stream off later.
func (c *Client) openStream(ctx context.Context, path string) (*http.Response, string, error) {
	start := time.Now()
	deadline := start.Add(c.retryFor)
	backoff := minBackoff
	hint := c.Leader()
	var lastErr error
	// For GiveUpUnreachable, as in call.
	var dialFailed map[string]error
	answered := false
	for attempt := 1; ; attempt++ {
		var target string
		if hint != "" {
			target, hint = baseURL(c.scheme, hint), ""
		} else {
			target = c.nextManager()
		}
		resp, err := c.openOnce(ctx, target+path)
		c.reached(target, err == nil || ctx.Err() != nil)
		if err == nil {
			c.learn(target, resp.Header)
			if resp.StatusCode >= 200 && resp.StatusCode < 300 {
				return resp, target, nil
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			err = responseError(resp.StatusCode, body)
			if !retryable(resp.StatusCode) {
				return nil, target, err
			}
		} else {
			c.forget(target)
		}
		if _, ok := dialError(err); ok && ctx.Err() == nil {
			if dialFailed == nil {
				dialFailed = map[string]error{}
			}
			dialFailed[target] = err
		} else {
			answered = true
		}
		if ue := c.unreachable(dialFailed, answered, start); ue != nil {
			return nil, target, fmt.Errorf("GET %s: %w", path, ue)
		}
		lastErr = err
		switch remaining := time.Until(deadline); {
		case ctx.Err() != nil:
			return nil, target, fmt.Errorf("GET %s: %w (last error: %v)", path, ctx.Err(), lastErr)
		case remaining <= 0:
			return nil, target, unavailableError(http.MethodGet, path, c.retryFor, lastErr)
		case attempt%(len(c.managers)+1) != 0:
			continue // the other managers first, at once
		default:
			timer := time.NewTimer(min(Jitter(backoff), remaining))
			backoff = min(2*backoff, maxBackoff)
			select {
			case <-ctx.Done():
				timer.Stop()
				return nil, target, fmt.Errorf("GET %s: %w (last error: %v)", path, ctx.Err(), lastErr)
			case <-timer.C:
			}
		}
	}
}

// openOnce sends one GET and returns the answer once its header is in, or
// an error when none came within the request timeout. The response body's
// Close releases the request.
func (c *Client) openOnce(ctx context.Context, url string) (*http.Response, error) {
	ctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(c.timeout, cancel)
	resp, err := send(ctx, c.hc, http.MethodGet, url, nil)
	if !timer.Stop() {
		if err == nil {
			resp.Body.Close()
		}
		cancel()
		return nil, fmt.Errorf("GET %s: no answer within %s: %w", url, c.timeout, context.DeadlineExceeded)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}
