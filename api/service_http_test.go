package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
)

// The fake's services (ServiceManager): only the leader writes; reads say
// which manager answered in the service's Task.Name.
func (f *fakeManager) svcWrite(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.self {
		f.calls["svc-write-refused"]++
		return ErrNotLeader
	}
	f.calls["svc:"+name]++
	return nil
}

func (f *fakeManager) CreateService(_ context.Context, s Service) (ServiceStatus, error) {
	if err := f.svcWrite("create " + s.Name); err != nil {
		return ServiceStatus{}, err
	}
	if s.Name == "taken" {
		return ServiceStatus{}, fmt.Errorf("service taken: %w", ErrConflict)
	}
	s.Version = 1
	return ServiceStatus{Service: s}, nil
}

func (f *fakeManager) PutService(_ context.Context, s Service) (ServiceStatus, bool, error) {
	if err := f.svcWrite("put " + s.Name); err != nil {
		return ServiceStatus{}, false, err
	}
	return ServiceStatus{Service: s}, s.Name == "new", nil
}

func (f *fakeManager) Services(ctx context.Context, consistent bool) ([]ServiceStatus, error) {
	st, err := f.Service(ctx, "web", consistent)
	return []ServiceStatus{st}, err
}

func (f *fakeManager) Service(_ context.Context, name string, _ bool) (ServiceStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if name != "web" {
		return ServiceStatus{}, fmt.Errorf("service %q: %w", name, ErrNotFound)
	}
	f.calls["svc:get "+name]++
	t := Task{Image: "i", Name: fmt.Sprintf("leader=%v", f.self), Env: seedEnv}
	return ServiceStatus{Service: Service{Name: name, Task: t, History: []ServiceVersion{{Version: 1, Task: t}}}}, nil
}

func (f *fakeManager) ScaleService(_ context.Context, name string, n int) (ServiceStatus, error) {
	if err := f.svcWrite(fmt.Sprintf("scale %s %d", name, n)); err != nil {
		return ServiceStatus{}, err
	}
	return ServiceStatus{Service: Service{Name: name, Count: n}}, nil
}

func (f *fakeManager) RollbackService(_ context.Context, name string, from uint64) (ServiceStatus, error) {
	if err := f.svcWrite(fmt.Sprintf("rollback %s from %d", name, from)); err != nil {
		return ServiceStatus{}, err
	}
	return ServiceStatus{Service: Service{Name: name, Version: 1, Rollout: &Rollout{From: from, To: 1}}}, nil
}

func (f *fakeManager) DeleteService(_ context.Context, name string) error {
	return f.svcWrite("delete " + name)
}

var _ ServiceManager = (*fakeManager)(nil)

// Writes through a follower reach the leader; reads are answered by the
// leader when one is known; bad bodies are 400 before any forwarding.
func TestServiceRoutes_ForwardedToLeader(t *testing.T) {
	c := newTestCluster(t, 3, 0, ManagerHandlerOptions{})
	cl, err := NewClient(c.addrs[2:3], ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	web := Service{Name: "web", Count: 2, Task: Task{Image: "cube-echo:latest"}}
	if st, err := cl.CreateService(ctx, web); err != nil || st.Version != 1 {
		t.Fatalf("create: %+v, %v", st, err)
	}
	if _, err := cl.CreateService(ctx, Service{Name: "taken", Task: Task{Image: "i"}}); !errors.Is(err, ErrConflict) {
		t.Fatalf("create of a taken name: %v", err)
	}
	if _, created, err := cl.PutService(ctx, Service{Name: "new", Task: Task{Image: "i"}}); err != nil || !created {
		t.Fatalf("put new: %v %v", created, err)
	}
	if _, created, err := cl.PutService(ctx, web); err != nil || created {
		t.Fatalf("put web: %v %v", created, err)
	}
	if st, err := cl.ScaleService(ctx, "web", 5); err != nil || st.Count != 5 {
		t.Fatalf("scale: %+v %v", st, err)
	}
	if st, err := cl.RollbackService(ctx, "web"); err != nil || st.Version != 1 {
		t.Fatalf("rollback: %+v %v", st, err)
	}
	if err := cl.DeleteService(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	for _, call := range []string{"svc:create web", "svc:put new", "svc:put web", "svc:scale web 5", "svc:rollback web from 0", "svc:delete web"} {
		if n := c.fakes[0].count(call); n != 1 {
			t.Errorf("%s reached the leader %d times, want 1", call, n)
		}
	}
	if st, err := cl.Service(ctx, "web"); err != nil || st.Task.Name != "leader=true" {
		t.Fatalf("get through a follower: %+v, %v", st, err)
	}
	if list, err := cl.Services(ctx); err != nil || len(list) != 1 || list[0].Task.Name != "leader=true" {
		t.Fatalf("list through a follower: %+v, %v", list, err)
	}
	if _, err := cl.Service(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get of an unknown service: %v", err)
	}
	for _, tc := range []struct{ method, path, body string }{
		{http.MethodPost, "/services", `{"Name":"-bad","Task":{"Image":"i"}}`},
		{http.MethodPost, "/services", `{"Name":"web","Task":{}}`},
		{http.MethodPost, "/services", `{"Name":"web","Task":{"Image":"i"},"Replicas":2}`},
		{http.MethodPut, "/services/web", `{"Name":"api","Task":{"Image":"i"}}`},
		{http.MethodPost, "/services/web/scale", `{"Count":-1}`},
		{http.MethodPost, "/services/web/scale", `{"N":1}`},
		{http.MethodPost, "/services/web/rollback", `{"To":1}`},
	} {
		if r := doHTTP(t, tc.method, c.url(2, tc.path), []byte(tc.body), nil); r.status != http.StatusBadRequest {
			t.Errorf("%s %s %s: %d %s, want 400", tc.method, tc.path, tc.body, r.status, r.body)
		}
	}
	if n := c.fakes[0].count("svc-write-refused") + c.fakes[2].count("svc-write-refused"); n != 0 {
		t.Errorf("%d writes reached a follower's service", n)
	}
}
