package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
)

// servicePath is the path of one service.
func servicePath(name string) string { return ServicesPath + "/" + url.PathEscape(name) }

// CreateService creates a service (POST /services) and returns its status.
// ErrConflict if a service of that name exists. A retry after an attempt
// whose answer was lost finds the service that attempt made: one found
// with one version of the same image, command, environment and Count is
// taken as made by this call.
func (c *Client) CreateService(ctx context.Context, s Service) (ServiceStatus, error) {
	var st ServiceStatus
	_, err := c.call(ctx, http.MethodPost, ServicesPath, EncodeJSON(s), &st)
	if errors.Is(err, ErrConflict) {
		if cur, gerr := c.Service(ctx, s.Name); gerr == nil && cur.Version == 1 && len(cur.History) == 1 && cur.Count == s.Count &&
			cur.Task.Image == s.Task.Image && slices.Equal(cur.Task.Cmd, s.Task.Cmd) && slices.Equal(cur.Task.Env, s.Task.Env) {
			return cur, nil
		}
	}
	if err != nil {
		return ServiceStatus{}, fmt.Errorf("create service %s: %w", s.Name, err)
	}
	return st, nil
}

// PutService creates or changes a service (PUT /services/{name}): created
// is true when it did not exist. It is idempotent: the same service again
// changes nothing.
func (c *Client) PutService(ctx context.Context, s Service) (ServiceStatus, bool, error) {
	var st ServiceStatus
	status, err := c.call(ctx, http.MethodPut, servicePath(s.Name), EncodeJSON(s), &st)
	if err != nil {
		return ServiceStatus{}, false, fmt.Errorf("put service %s: %w", s.Name, err)
	}
	return st, status == http.StatusCreated, nil
}

// Services lists every service's status, by name.
func (c *Client) Services(ctx context.Context) ([]ServiceStatus, error) {
	var out []ServiceStatus
	if _, err := c.call(ctx, http.MethodGet, ServicesPath, nil, &out); err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	return out, nil
}

// Service returns one service's status; ErrNotFound if there is none.
func (c *Client) Service(ctx context.Context, name string) (ServiceStatus, error) {
	var st ServiceStatus
	if _, err := c.call(ctx, http.MethodGet, servicePath(name), nil, &st); err != nil {
		return ServiceStatus{}, fmt.Errorf("get service %s: %w", name, err)
	}
	return st, nil
}

// ScaleService sets a service's Count; the leader starts or stops tasks
// at once. Idempotent.
func (c *Client) ScaleService(ctx context.Context, name string, n int) (ServiceStatus, error) {
	var st ServiceStatus
	if _, err := c.call(ctx, http.MethodPost, servicePath(name)+"/scale", EncodeJSON(ScaleRequest{Count: n}), &st); err != nil {
		return ServiceStatus{}, fmt.Errorf("scale service %s: %w", name, err)
	}
	return st, nil
}

// RollbackService makes the last healthy version before the current one
// current again (ErrConflict if there is none). It reads the service first
// and asks for a rollback from the version it saw, so that a retry of an
// attempt that did apply does not roll back once more: it finds the
// rollback made and returns the service as it is.
func (c *Client) RollbackService(ctx context.Context, name string) (ServiceStatus, error) {
	cur, err := c.Service(ctx, name)
	if err != nil {
		return ServiceStatus{}, fmt.Errorf("rollback service %s: %w", name, err)
	}
	var st ServiceStatus
	_, err = c.call(ctx, http.MethodPost, servicePath(name)+"/rollback", EncodeJSON(RollbackRequest{From: cur.Version}), &st)
	if errors.Is(err, ErrConflict) {
		if now, gerr := c.Service(ctx, name); gerr == nil && now.Version != cur.Version && now.Rollout != nil &&
			now.Rollout.From == cur.Version && now.Rollout.To == now.Version {
			return now, nil // an earlier attempt of this call rolled back
		}
	}
	if err != nil {
		return ServiceStatus{}, fmt.Errorf("rollback service %s: %w", name, err)
	}
	return st, nil
}

// DeleteService deletes a service and stops its tasks. ErrNotFound if
// there is none (also for a retry of an attempt that did delete it).
func (c *Client) DeleteService(ctx context.Context, name string) error {
	if _, err := c.call(ctx, http.MethodDelete, servicePath(name), nil, nil); err != nil {
		return fmt.Errorf("delete service %s: %w", name, err)
	}
	return nil
}
