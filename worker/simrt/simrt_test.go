package simrt_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/worker"
	"github.com/cube-orch/cube/worker/runtimetest"
	"github.com/cube-orch/cube/worker/simrt"
)

const image = "cube-echo:latest"

func newRT(t *testing.T, cfg simrt.Config) *simrt.Runtime {
	t.Helper()
	rt, err := simrt.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

// TestRuntime_Contract runs the Runtime contract the Docker runtime passes
// too (worker/runtime_contract_test.go).
func TestRuntime_Contract(t *testing.T) {
	var n int
	runtimetest.Run(t, runtimetest.Fixture{
		New: func(t *testing.T) worker.Runtime {
			return newRT(t, simrt.Config{StartDelay: 2 * time.Millisecond, Images: []string{image}})
		},
		Image:        image,
		MissingImage: "cube-no-such-image:latest",
		Labels: func(t *testing.T) map[string]string {
			n++
			return map[string]string{"cube.test": fmt.Sprintf("%s-%d", t.Name(), n)}
		},
		Crash: func(t *testing.T, rt worker.Runtime, id string) int {
			if err := rt.(*simrt.Runtime).Kill(id, 137); err != nil {
				t.Fatalf("Kill: %v", err)
			}
			return 137
		},
		Within: 5 * time.Second,
	})
}

func TestConfig_Validate(t *testing.T) {
	cases := []struct {
		name string
		cfg  simrt.Config
		ok   bool
	}{
		{"zero", simrt.Config{}, true},
		{"all set", simrt.Config{StartDelay: time.Second, Jitter: time.Second, FailRate: 0.5, FailAfter: time.Second, FailCode: 3}, true},
		{"negative delay", simrt.Config{StartDelay: -1}, false},
		{"negative jitter", simrt.Config{Jitter: -1}, false},
		{"rate above 1", simrt.Config{FailRate: 1.5}, false},
		{"negative rate", simrt.Config{FailRate: -0.1}, false},
		{"negative fail after", simrt.Config{FailAfter: -1}, false},
		{"code above 255", simrt.Config{FailCode: 256}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			if (err == nil) != c.ok {
				t.Errorf("Validate(%+v) = %v; want ok %v", c.cfg, err, c.ok)
			}
		})
	}
}

// TestRuntime_StartDelay: Start returns once the delay passed, and honours
// its context meanwhile.
func TestRuntime_StartDelay(t *testing.T) {
	rt := newRT(t, simrt.Config{StartDelay: 200 * time.Millisecond})
	ctx := context.Background()
	id, err := rt.Create(ctx, worker.Spec{Name: "slow", Image: image})
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := rt.Start(ctx, id); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if took := time.Since(begin); took < 200*time.Millisecond {
		t.Errorf("Start took %s; want at least the start delay 200ms", took)
	}
	id2, err := rt.Create(ctx, worker.Spec{Name: "cancelled", Image: image})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if err := rt.Start(cctx, id2); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Start with a context ending before the delay: %v; want DeadlineExceeded", err)
	}
	st, err := rt.Inspect(ctx, id2)
	if err != nil || st.Status != worker.StatusCreated {
		t.Errorf("after a cancelled Start: %+v, %v; want created", st, err)
	}
}

// TestRuntime_FailRate: with FailRate 1 every start exits with FailCode
// after FailAfter; with 0 none does; in between about that share does.
func TestRuntime_FailRate(t *testing.T) {
	cases := []struct {
		name     string
		rate     float64
		min, max int // failures out of 200
	}{
		{"never", 0, 0, 0},
		{"always", 1, 200, 200},
		{"a quarter", 0.25, 25, 75}, // 50 expected; the bounds are ±5 σ and more
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rt := newRT(t, simrt.Config{FailRate: c.rate, FailAfter: 5 * time.Millisecond, FailCode: 3, Seed: 42})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			events := rt.Watch(ctx, map[string]string{"set": c.name})
			for i := range 200 {
				id, err := rt.Create(ctx, worker.Spec{Name: fmt.Sprintf("c%d", i), Image: image, Labels: map[string]string{"set": c.name}})
				if err != nil {
					t.Fatal(err)
				}
				if err := rt.Start(ctx, id); err != nil {
					t.Fatal(err)
				}
			}
			deadline := time.After(10 * time.Second)
			for rt.Stats().Failures < c.min {
				select {
				case <-deadline:
					t.Fatalf("%d failures after 10 s; want at least %d", rt.Stats().Failures, c.min)
				case <-time.After(5 * time.Millisecond):
				}
			}
			time.Sleep(50 * time.Millisecond) // every exit due has happened (FailAfter 5 ms)
			s := rt.Stats()
			if s.Failures < c.min || s.Failures > c.max || s.Starts != 200 || s.Running != 200-s.Failures {
				t.Errorf("stats %+v; want 200 starts, failures in [%d, %d], the rest running", s, c.min, c.max)
			}
			dies := 0
			for dies < s.Failures {
				select {
				case ev := <-events:
					if ev.Action == "die" {
						dies++
						if ev.ExitCode != 3 {
							t.Errorf("die event code %d; want FailCode 3", ev.ExitCode)
						}
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("%d die events; want %d", dies, s.Failures)
				}
			}
		})
	}
}

// TestRuntime_Down: a down engine answers nothing, keeps its containers,
// and sends Resync to every watcher when it answers again.
func TestRuntime_Down(t *testing.T) {
	rt := newRT(t, simrt.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := rt.Watch(ctx, nil)
	id, err := rt.Create(ctx, worker.Spec{Name: "x1", Image: image})
	if err != nil {
		t.Fatal(err)
	}
	rt.SetDown(true)
	if err := rt.Ping(ctx); !errors.Is(err, worker.ErrRuntimeUnavailable) {
		t.Errorf("Ping while down: %v; want ErrRuntimeUnavailable", err)
	}
	if _, err := rt.Inspect(ctx, id); !errors.Is(err, worker.ErrRuntimeUnavailable) {
		t.Errorf("Inspect while down: %v; want ErrRuntimeUnavailable", err)
	}
	if _, err := rt.List(ctx, nil); !errors.Is(err, worker.ErrRuntimeUnavailable) {
		t.Errorf("List while down: %v; want ErrRuntimeUnavailable", err)
	}
	rt.SetDown(false)
	for {
		select {
		case ev := <-events:
			if ev.Action != worker.Resync {
				continue
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no Resync event after the engine came back")
		}
		break
	}
	if st, err := rt.Inspect(ctx, id); err != nil || st.Status != worker.StatusCreated {
		t.Errorf("Inspect after coming back: %+v, %v; want the container, created", st, err)
	}
}

// TestRuntime_Close: Close ends every Watch (its channel closes), stops the
// pending exits, and every later call fails.
func TestRuntime_Close(t *testing.T) {
	rt, err := simrt.New(simrt.Config{FailRate: 1, FailAfter: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	events := rt.Watch(ctx, nil)
	id, err := rt.Create(ctx, worker.Spec{Name: "x1", Image: image})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { rt.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return within 5 s")
	}
	for range events { // must end: the channel is closed
	}
	if err := rt.Ping(ctx); !errors.Is(err, simrt.ErrClosed) {
		t.Errorf("Ping after Close: %v; want ErrClosed", err)
	}
	if ch := rt.Watch(ctx, nil); ch != nil {
		if _, ok := <-ch; ok {
			t.Error("Watch after Close delivered an event; want a closed channel")
		}
	}
	rt.Close() // twice is fine
}

// TestRuntime_Ports: exposed ports get a host binding (pinned or made up)
// while the container runs, none otherwise.
func TestRuntime_Ports(t *testing.T) {
	rt := newRT(t, simrt.Config{})
	ctx := context.Background()
	spec := worker.Spec{Name: "p1", Image: image,
		ExposedPorts: map[string]struct{}{"7777/tcp": {}, "80/tcp": {}},
		PortBindings: map[string]string{"80/tcp": "127.0.0.1:8080"}}
	id, err := rt.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := rt.Inspect(ctx, id); len(st.HostPorts) != 0 {
		t.Errorf("ports of a created container: %v; want none", st.HostPorts)
	}
	if err := rt.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	st, _ := rt.Inspect(ctx, id)
	if b := st.HostPorts["80/tcp"]; len(b) != 1 || b[0].HostIp != "127.0.0.1" || b[0].HostPort != "8080" {
		t.Errorf("pinned binding = %v; want 127.0.0.1:8080", b)
	}
	if b := st.HostPorts["7777/tcp"]; len(b) != 1 || b[0].HostPort == "" {
		t.Errorf("random binding = %v; want one with a port", b)
	}
}

// TestRuntime_Concurrent drives many containers from many goroutines (run
// with -race): creates, starts, crashes, stops and removes, with watchers
// reading, and checks that the counts add up.
func TestRuntime_Concurrent(t *testing.T) {
	rt := newRT(t, simrt.Config{StartDelay: time.Millisecond, Jitter: time.Millisecond, FailRate: 0.3, FailAfter: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var seen sync.WaitGroup
	for w := range 4 {
		ch := rt.Watch(ctx, map[string]string{"group": fmt.Sprint(w)})
		seen.Add(1)
		go func() {
			defer seen.Done()
			for range ch {
			}
		}()
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				spec := worker.Spec{Name: fmt.Sprintf("g%d-%d", g, i), Image: image, Labels: map[string]string{"group": fmt.Sprint(g % 4)}}
				id, err := rt.Create(ctx, spec)
				if err != nil {
					t.Errorf("Create: %v", err)
					return
				}
				if err := rt.Start(ctx, id); err != nil {
					t.Errorf("Start: %v", err)
					return
				}
				if i%3 == 0 {
					_ = rt.Kill(id, 137) // may have exited already
				}
				if i%2 == 0 {
					if err := rt.Stop(ctx, id, 0); err != nil {
						t.Errorf("Stop: %v", err)
					}
					if err := rt.Remove(ctx, id); err != nil {
						t.Errorf("Remove: %v", err)
					}
				}
			}
		}()
	}
	wg.Wait()
	list, err := rt.List(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := rt.Stats(); len(list) != 8*25 || s.Containers != 8*25 || s.Starts != 400 {
		t.Errorf("%d listed, stats %+v; want 200 containers left of 400 started", len(list), s)
	}
	cancel()
	seen.Wait()
}
