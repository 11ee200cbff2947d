package worker

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/hashicorp/go-hclog"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/testkit"
)

// These tests run against the real local Docker engine and the image the
// Makefile builds from cmd/echo.

const (
	echoImage = "cube-echo:latest"
	echoPort  = "7777/tcp"
	// dockerTestLabel marks every container a test creates; its value is
	// unique per test so cleanup removes exactly that test's containers.
	dockerTestLabel = "cube.test"
)

// requireImage fails the test when the echo image has not been built.
func requireImage(t *testing.T) {
	t.Helper()
	cli := rawDockerClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cli.ImageInspect(ctx, echoImage); err != nil {
		if client.IsErrNotFound(err) {
			t.Fatalf("image %s missing: run make images", echoImage)
		}
		t.Fatalf("inspect image %s: %v", echoImage, err)
	}
}

// rawDockerClient returns an SDK client for checks the Runtime interface
// does not expose (HostConfig, Config).
func rawDockerClient(t *testing.T) *client.Client {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatalf("docker client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// newTestDocker returns a Docker runtime logging into the test log, after
// checking that the engine answers and the echo image exists.
func newTestDocker(t *testing.T) *Docker {
	t.Helper()
	cfg := DefaultDockerConfig()
	cfg.Logger = testkit.LoggerAt(t, t.Name(), hclog.Debug)
	d, err := NewDocker(cfg)
	if err != nil {
		t.Fatalf("NewDocker: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Ping(ctx); err != nil {
		t.Fatalf("docker engine not reachable: %v", err)
	}
	requireImage(t)
	return d
}

func dkRandomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// dkTestLabels returns labels unique to this test and registers a cleanup that
// force-removes every container carrying them.
func dkTestLabels(t *testing.T) map[string]string {
	t.Helper()
	value := dkRandomHex(t, 8)
	cli := rawDockerClient(t)
	// Cleanup filters on the test label alone: callers add labels to the
	// map they get back, and containers with other extra labels must go too.
	t.Cleanup(func() { dkRemoveLabelled(t, cli, map[string]string{dockerTestLabel: value}) })
	return map[string]string{dockerTestLabel: value}
}

func dkRemoveLabelled(t *testing.T, cli *client.Client, labels map[string]string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := filters.NewArgs()
	for k, v := range labels {
		args.Add("label", k+"="+v)
	}
	list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: args})
	if err != nil {
		t.Errorf("cleanup: list containers: %v", err)
		return
	}
	for _, c := range list {
		err := cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && !client.IsErrNotFound(err) {
			t.Errorf("cleanup: remove %s: %v", c.ID, err)
		}
	}
}

// echoSpec is a spec for the echo service with port 7777 published on a
// random host port.
func echoSpec(t *testing.T, labels map[string]string) Spec {
	return Spec{
		Name:         "cube-test-" + dkRandomHex(t, 6),
		Image:        echoImage,
		Labels:       labels,
		ExposedPorts: api.PortSet{echoPort: {}},
	}
}

func dkCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// dkCreateAndStart creates and starts spec, failing the test on error.
func dkCreateAndStart(t *testing.T, d *Docker, spec Spec) string {
	t.Helper()
	ctx := dkCtx(t, 60*time.Second)
	id, err := d.Create(ctx, spec)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := d.Start(ctx, id); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return id
}

// dkWaitStatus polls Inspect until cond holds or the deadline passes.
func dkWaitStatus(t *testing.T, d *Docker, id string, within time.Duration, what string, cond func(ContainerStatus) bool) ContainerStatus {
	t.Helper()
	var st ContainerStatus
	testkit.Eventually(t, within, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var err error
		if st, err = d.Inspect(ctx, id); err != nil {
			t.Fatalf("Inspect %s: %v", id, err)
		}
		if !cond(st) {
			return fmt.Errorf("container %s: not %s; last status %+v", id, what, st)
		}
		return nil
	})
	return st
}

// loopbackPort returns the host port 7777/tcp is published on, for a binding
// reachable via 127.0.0.1.
func loopbackPort(t *testing.T, st ContainerStatus) string {
	t.Helper()
	for _, b := range st.HostPorts[echoPort] {
		switch b.HostIp {
		case "", "0.0.0.0", "127.0.0.1":
			if b.HostPort != "" {
				return b.HostPort
			}
		}
	}
	t.Fatalf("no 127.0.0.1-reachable binding for %s in %+v", echoPort, st.HostPorts)
	return ""
}

var echoHTTPClient = &http.Client{Timeout: 10 * time.Second}

// dkWaitHealthy polls GET /health on 127.0.0.1:port until it answers 200: the
// port is published before the service inside listens.
func dkWaitHealthy(t *testing.T, port string) {
	t.Helper()
	url := "http://127.0.0.1:" + port + "/health"
	testkit.Eventually(t, 15*time.Second, func() error {
		resp, err := echoHTTPClient.Get(url)
		if err != nil {
			return fmt.Errorf("GET %s: not healthy: %w", url, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: not healthy: status %s", url, resp.Status)
		}
		return nil
	})
}

func TestDocker_CreateStartRandomPort(t *testing.T) {
	d := newTestDocker(t)
	labels := dkTestLabels(t)
	labels[LabelTask] = "task-" + dkRandomHex(t, 4)
	labels[LabelGeneration] = "3"
	spec := echoSpec(t, labels)
	id := dkCreateAndStart(t, d, spec)

	st := dkWaitStatus(t, d, id, 15*time.Second, "running", func(s ContainerStatus) bool {
		return s.Status == StatusRunning && len(s.HostPorts[echoPort]) > 0
	})
	if !st.Running || st.ID != id || st.Name != spec.Name {
		t.Errorf("status = %+v; want running, ID %s, Name %s", st, id, spec.Name)
	}
	if st.StartedAt.IsZero() || !st.FinishedAt.IsZero() {
		t.Errorf("StartedAt = %v, FinishedAt = %v; want set, zero", st.StartedAt, st.FinishedAt)
	}
	for k, v := range labels {
		if st.Labels[k] != v {
			t.Errorf("label %s = %q; want %q", k, st.Labels[k], v)
		}
	}
	bs := st.HostPorts[echoPort]
	if len(bs) > 1 && !isIPv4Host(bs[0].HostIp) {
		t.Errorf("HostPorts %+v: IPv4 binding not first", bs)
	}
	port := loopbackPort(t, st)
	dkWaitHealthy(t, port)

	raw, err := rawDockerClient(t).ContainerInspect(dkCtx(t, 30*time.Second), id)
	if err != nil {
		t.Fatalf("raw inspect: %v", err)
	}
	if rp := raw.HostConfig.RestartPolicy.Name; rp != "" && rp != container.RestartPolicyDisabled {
		t.Errorf("RestartPolicy = %q; want none", rp)
	}
	if raw.HostConfig.PublishAllPorts {
		t.Errorf("PublishAllPorts set; want explicit bindings only")
	}
}

func TestDocker_PortBindingPinned(t *testing.T) {
	d := newTestDocker(t)
	for _, withIP := range []bool{false, true} {
		t.Run(fmt.Sprintf("withIP=%v", withIP), func(t *testing.T) {
			labels := dkTestLabels(t)
			_, port, err := net.SplitHostPort(testkit.FreeAddr(t))
			if err != nil {
				t.Fatal(err)
			}
			binding, wantIP := port, "0.0.0.0"
			if withIP {
				binding, wantIP = "127.0.0.1:"+port, "127.0.0.1"
			}
			spec := echoSpec(t, labels)
			spec.PortBindings = map[string]string{echoPort: binding}
			id := dkCreateAndStart(t, d, spec)
			st := dkWaitStatus(t, d, id, 15*time.Second, "running with ports", func(s ContainerStatus) bool {
				return s.Status == StatusRunning && len(s.HostPorts[echoPort]) > 0
			})
			bs := st.HostPorts[echoPort]
			if bs[0].HostIp != wantIP || bs[0].HostPort != port {
				t.Errorf("HostPorts[%s] = %+v; want first %s:%s", echoPort, bs, wantIP, port)
			}
			for _, b := range bs {
				if b.HostPort != port {
					t.Errorf("binding %+v; want host port %s only", b, port)
				}
			}
			dkWaitHealthy(t, port)
		})
	}
}

func TestDocker_Resources(t *testing.T) {
	d := newTestDocker(t)
	spec := echoSpec(t, dkTestLabels(t))
	spec.Memory = 64 << 20
	spec.Cpu = 0.5
	id := dkCreateAndStart(t, d, spec)
	raw, err := rawDockerClient(t).ContainerInspect(dkCtx(t, 30*time.Second), id)
	if err != nil {
		t.Fatalf("raw inspect: %v", err)
	}
	if raw.HostConfig.Memory != 64<<20 || raw.HostConfig.NanoCPUs != 5e8 {
		t.Errorf("Memory = %d, NanoCPUs = %d; want %d, %d", raw.HostConfig.Memory, raw.HostConfig.NanoCPUs, 64<<20, int64(5e8))
	}
	dkWaitStatus(t, d, id, 15*time.Second, "running", func(s ContainerStatus) bool { return s.Status == StatusRunning })
}

func TestDocker_EnvAndCmd(t *testing.T) {
	d := newTestDocker(t)
	spec := echoSpec(t, dkTestLabels(t))
	spec.Env = []string{"ECHO_EXIT_AT_START=7"}
	// "/echo" works whether the image names the binary as ENTRYPOINT (it is
	// then an ignored argument) or as CMD (it replaces it).
	spec.Cmd = []string{"/echo"}
	id := dkCreateAndStart(t, d, spec)
	st := dkWaitStatus(t, d, id, 15*time.Second, "exited", func(s ContainerStatus) bool { return s.Status == StatusExited })
	if st.Running || st.ExitCode != 7 || st.FinishedAt.IsZero() || st.StartedAt.IsZero() {
		t.Errorf("status = %+v; want exited with code 7 and both times set", st)
	}
	// FinishedAt can read a fraction of a millisecond before StartedAt for a
	// container that exits at once: that is the engine's data, not ours.
	raw, err := rawDockerClient(t).ContainerInspect(dkCtx(t, 30*time.Second), id)
	if err != nil {
		t.Fatalf("raw inspect: %v", err)
	}
	if !slices.Equal([]string(raw.Config.Cmd), spec.Cmd) {
		t.Errorf("Cmd = %q; want %q", raw.Config.Cmd, spec.Cmd)
	}
	if !slices.Contains(raw.Config.Env, "ECHO_EXIT_AT_START=7") {
		t.Errorf("Env = %q; want ECHO_EXIT_AT_START=7 in it", raw.Config.Env)
	}
}

// dkNextEvent waits for an event on ch for id (and action, unless empty).
func dkNextEvent(t *testing.T, ch <-chan Event, id, action string, within time.Duration) Event {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("event channel closed while waiting for %s of %s", action, id)
			}
			if ev.ContainerID == id && (action == "" || ev.Action == action) {
				return ev
			}
		case <-timer.C:
			t.Fatalf("no %q event for %s within %s", action, id, within)
		}
	}
}

func TestDocker_WatchDie(t *testing.T) {
	d := newTestDocker(t)
	labels := dkTestLabels(t)
	ctx, cancel := context.WithCancel(context.Background())
	events := d.Watch(ctx, labels)
	t.Cleanup(func() { cancel(); dkDrainClosed(t, events) })

	// Another test's container must not show up.
	other := echoSpec(t, dkTestLabels(t))
	otherID := dkCreateAndStart(t, d, other)

	id := dkCreateAndStart(t, d, echoSpec(t, labels))
	ev := dkNextEvent(t, events, id, "start", 15*time.Second)
	if ev.Labels[dockerTestLabel] != labels[dockerTestLabel] {
		t.Errorf("start event labels = %v; want %s=%s", ev.Labels, dockerTestLabel, labels[dockerTestLabel])
	}
	st := dkWaitStatus(t, d, id, 15*time.Second, "running with ports", func(s ContainerStatus) bool {
		return s.Status == StatusRunning && len(s.HostPorts[echoPort]) > 0
	})
	port := loopbackPort(t, st)
	dkWaitHealthy(t, port)

	resp, err := echoHTTPClient.Post("http://127.0.0.1:"+port+"/crash", "text/plain", nil)
	if err != nil {
		t.Fatalf("POST /crash: %v", err)
	}
	resp.Body.Close()
	crashed := time.Now()
	ev = dkNextEvent(t, events, id, "die", 30*time.Second)
	latency := time.Since(crashed)
	t.Logf("die event latency after POST /crash: %s (event time %s after)", latency, ev.Time.Sub(crashed))
	if ev.ExitCode != 1 {
		t.Errorf("die ExitCode = %d; want 1", ev.ExitCode)
	}
	if ev.Time.IsZero() {
		t.Errorf("die event without time")
	}
	if ev.Labels[dockerTestLabel] != labels[dockerTestLabel] {
		t.Errorf("die event labels = %v", ev.Labels)
	}
	// Nothing of the other container may have arrived.
	for {
		select {
		case ev := <-events:
			if ev.ContainerID == otherID {
				t.Errorf("event of a container without the labels: %+v", ev)
			}
			continue
		default:
		}
		break
	}
}

// dkDrainClosed waits for the Watch channel to close after its ctx ended.
func dkDrainClosed(t *testing.T, ch <-chan Event) {
	t.Helper()
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timer.C:
			t.Errorf("Watch channel not closed 5s after ctx ended")
			return
		}
	}
}

func TestDocker_StopRemove(t *testing.T) {
	d := newTestDocker(t)
	id := dkCreateAndStart(t, d, echoSpec(t, dkTestLabels(t)))
	st := dkWaitStatus(t, d, id, 15*time.Second, "running", func(s ContainerStatus) bool { return s.Status == StatusRunning })
	// Wait until the service answers: a SIGTERM that lands before its
	// handler is installed makes the Go runtime exit with code 2.
	dkWaitHealthy(t, loopbackPort(t, st))
	ctx := dkCtx(t, 60*time.Second)

	start := time.Now()
	if err := d.Stop(ctx, id, 5*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("Stop took %s", time.Since(start))
	st, err := d.Inspect(ctx, id)
	if err != nil {
		t.Fatalf("Inspect after Stop: %v", err)
	}
	// The echo service handles SIGTERM and exits 0 well within the grace.
	if st.Status != StatusExited || st.Running || st.ExitCode != 0 {
		t.Errorf("after Stop: %+v; want exited, code 0", st)
	}
	if err := d.Stop(ctx, id, time.Second); err != nil {
		t.Errorf("Stop of a stopped container: %v", err)
	}
	if err := d.Remove(ctx, id); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := d.Inspect(ctx, id); !errors.Is(err, ErrContainerNotFound) {
		t.Errorf("Inspect after Remove: %v; want ErrContainerNotFound", err)
	}
	if err := d.Remove(ctx, id); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if err := d.Stop(ctx, id, time.Second); !errors.Is(err, ErrContainerNotFound) {
		t.Errorf("Stop of a removed container: %v; want ErrContainerNotFound", err)
	}
	if err := d.Start(ctx, id); !errors.Is(err, ErrContainerNotFound) {
		t.Errorf("Start of a removed container: %v; want ErrContainerNotFound", err)
	}
}

func TestDocker_RemoveRunning(t *testing.T) {
	d := newTestDocker(t)
	id := dkCreateAndStart(t, d, echoSpec(t, dkTestLabels(t)))
	ctx := dkCtx(t, 60*time.Second)
	if err := d.Remove(ctx, id); err != nil {
		t.Fatalf("Remove of a running container: %v", err)
	}
	if _, err := d.Inspect(ctx, id); !errors.Is(err, ErrContainerNotFound) {
		t.Errorf("Inspect after Remove: %v; want ErrContainerNotFound", err)
	}
}

func TestDocker_EnsureImage(t *testing.T) {
	d := newTestDocker(t)
	ctx := dkCtx(t, 60*time.Second)
	if err := d.EnsureImage(ctx, echoImage); err != nil {
		t.Errorf("EnsureImage(%s): %v", echoImage, err)
	}
	const missing = "cube-no-such-image:v0"
	start := time.Now()
	err := d.EnsureImage(ctx, missing)
	took := time.Since(start)
	t.Logf("EnsureImage(%s) failed in %s: %v", missing, took, err)
	if !errors.Is(err, ErrImageUnavailable) {
		t.Fatalf("EnsureImage(%s) = %v; want ErrImageUnavailable", missing, err)
	}
	if !strings.Contains(err.Error(), missing) {
		t.Errorf("error %q does not name the image", err)
	}
	if took > 30*time.Second {
		t.Errorf("EnsureImage took %s; want under 30s", took)
	}
}

func TestDocker_CreateMissingImage(t *testing.T) {
	d := newTestDocker(t)
	spec := echoSpec(t, dkTestLabels(t))
	spec.Image = "cube-no-such-image:v0"
	_, err := d.Create(dkCtx(t, 30*time.Second), spec)
	if !errors.Is(err, ErrImageUnavailable) || !strings.Contains(err.Error(), "create container for cube-no-such-image:v0") {
		t.Errorf("Create with a missing image: %v; want ErrImageUnavailable naming the image", err)
	}
}

// dkReadLogs reads a whole Logs stream.
func dkReadLogs(t *testing.T, d *Docker, id string, tail int) string {
	t.Helper()
	rc, err := d.Logs(dkCtx(t, 30*time.Second), id, api.LogOptions{Tail: tail})
	if err != nil {
		t.Fatalf("Logs(%d): %v", tail, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read logs: %v", err)
	}
	return string(b)
}

func TestDocker_Logs(t *testing.T) {
	d := newTestDocker(t)
	id := dkCreateAndStart(t, d, echoSpec(t, dkTestLabels(t)))
	st := dkWaitStatus(t, d, id, 15*time.Second, "running with ports", func(s ContainerStatus) bool {
		return s.Status == StatusRunning && len(s.HostPorts[echoPort]) > 0
	})
	dkWaitHealthy(t, loopbackPort(t, st))

	all := dkReadLogs(t, d, id, 0)
	if !strings.Contains(all, "listening on") {
		t.Fatalf("logs = %q; want the start line", all)
	}
	// A graceful stop logs two more lines; the last one is "stopped".
	if err := d.Stop(dkCtx(t, 60*time.Second), id, 5*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	all = dkReadLogs(t, d, id, 0)
	lines := strings.Split(strings.TrimSpace(all), "\n")
	if len(lines) < 3 {
		t.Fatalf("logs after stop = %q; want at least 3 lines", all)
	}
	last := dkReadLogs(t, d, id, 1)
	if got := strings.Split(strings.TrimSpace(last), "\n"); len(got) != 1 || got[0] != lines[len(lines)-1] {
		t.Errorf("Logs(tail 1) = %q; want %q", last, lines[len(lines)-1])
	}
	// No frame headers may leak into the text (stdcopy demultiplexed).
	if strings.ContainsRune(all, '\x00') || strings.ContainsRune(all, '\x02') {
		t.Errorf("logs contain stream framing: %q", all)
	}

	// Close without reading releases everything and returns promptly.
	rc, err := d.Logs(dkCtx(t, 30*time.Second), id, api.LogOptions{})
	if err != nil {
		t.Fatalf("Logs: %v", err)
	}
	closed := make(chan struct{})
	go func() { rc.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatalf("Close of an unread log stream blocked")
	}
	if _, err := rc.Read(make([]byte, 1)); err == nil {
		t.Errorf("Read after Close succeeded")
	}

	// The caller's ctx ending unblocks a reader too.
	ctx, cancel := context.WithCancel(context.Background())
	rc, err = d.Logs(ctx, id, api.LogOptions{})
	if err != nil {
		t.Fatalf("Logs: %v", err)
	}
	cancel()
	done := make(chan error, 1)
	go func() { _, err := io.ReadAll(rc); done <- err }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("reader not released after ctx ended")
	}
	rc.Close()

	if _, err := d.Logs(dkCtx(t, 30*time.Second), "cube-no-such-container", api.LogOptions{}); !errors.Is(err, ErrContainerNotFound) {
		t.Errorf("Logs of a missing container: %v; want ErrContainerNotFound", err)
	}
}

// A followed stream gives what the container wrote, then what it writes
// next, and ends when the container stops: the graceful stop's last line
// ("stopped") arrives, then the end of the stream.
func TestDocker_LogsFollow(t *testing.T) {
	d := newTestDocker(t)
	id := dkCreateAndStart(t, d, echoSpec(t, dkTestLabels(t)))
	st := dkWaitStatus(t, d, id, 15*time.Second, "running with ports", func(s ContainerStatus) bool {
		return s.Status == StatusRunning && len(s.HostPorts[echoPort]) > 0
	})
	dkWaitHealthy(t, loopbackPort(t, st))
	rc, err := d.Logs(dkCtx(t, 2*time.Minute), id, api.LogOptions{Follow: true})
	if err != nil {
		t.Fatalf("Logs(follow): %v", err)
	}
	defer rc.Close()
	br := bufio.NewReader(rc)
	var seen []string
	for !strings.Contains(strings.Join(seen, ""), "listening on") {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("followed logs ended before the start line: %q, %v", seen, err)
		}
		seen = append(seen, line)
	}
	// Written while the stream is open: the stop's lines come through it.
	stopped := make(chan error, 1)
	go func() { stopped <- d.Stop(dkCtx(t, 60*time.Second), id, 5*time.Second) }()
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("followed logs after the stop: %v", err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(rest)), "\n")
	if len(lines) == 0 || !strings.Contains(lines[len(lines)-1], "stopped") {
		t.Fatalf("followed logs after the start line: %q; want them to end with the stop's last line", rest)
	}
}

func TestDocker_List(t *testing.T) {
	d := newTestDocker(t)
	labels := dkTestLabels(t)
	labels[LabelWorker] = "w-" + dkRandomHex(t, 4)

	running := dkCreateAndStart(t, d, echoSpec(t, labels))
	exitSpec := echoSpec(t, labels)
	exitSpec.Env = []string{"ECHO_EXIT_AT_START=3"}
	exited := dkCreateAndStart(t, d, exitSpec)
	created, err := d.Create(dkCtx(t, 30*time.Second), echoSpec(t, labels))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	// Same test label, different worker: List must require every label.
	otherLabels := map[string]string{dockerTestLabel: labels[dockerTestLabel], LabelWorker: "someone-else"}
	other := dkCreateAndStart(t, d, echoSpec(t, otherLabels))

	dkWaitStatus(t, d, exited, 15*time.Second, "exited", func(s ContainerStatus) bool { return s.Status == StatusExited })
	dkWaitStatus(t, d, running, 15*time.Second, "running", func(s ContainerStatus) bool { return s.Status == StatusRunning })

	list, err := d.List(dkCtx(t, 30*time.Second), labels)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	got := map[string]ContainerStatus{}
	for _, st := range list {
		got[st.ID] = st
	}
	if len(list) != 3 || len(got) != 3 {
		t.Fatalf("List = %d containers %v; want exactly %s, %s, %s", len(list), list, running, exited, created)
	}
	if _, ok := got[other]; ok {
		t.Errorf("List returned a container without all the labels")
	}
	if st := got[running]; st.Status != StatusRunning || !st.Running {
		t.Errorf("running container: %+v", st)
	}
	if st := got[exited]; st.Status != StatusExited || st.ExitCode != 3 {
		t.Errorf("exited container: %+v; want exited with code 3", st)
	}
	if st := got[created]; st.Status != StatusCreated || st.Running {
		t.Errorf("created container: %+v", st)
	}
	for _, st := range list {
		if st.Labels[LabelWorker] != labels[LabelWorker] {
			t.Errorf("container %s labels %v", st.ID, st.Labels)
		}
	}
}

func TestDocker_RuntimeUnavailable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "no-such-docker.sock")
	t.Setenv("DOCKER_HOST", "unix://"+sock)
	d, err := NewDocker(DockerConfig{})
	if err != nil {
		t.Fatalf("NewDocker: %v", err)
	}
	defer d.Close()
	ctx := dkCtx(t, 30*time.Second)

	start := time.Now()
	err = d.Ping(ctx)
	took := time.Since(start)
	if !errors.Is(err, ErrRuntimeUnavailable) {
		t.Fatalf("Ping = %v; want ErrRuntimeUnavailable", err)
	}
	if took > 10*time.Second {
		t.Errorf("Ping took %s; want a failure well before the 30s deadline", took)
	}
	t.Logf("Ping failed in %s: %v", took, err)

	if _, err := d.Inspect(ctx, "x"); !errors.Is(err, ErrRuntimeUnavailable) {
		t.Errorf("Inspect = %v; want ErrRuntimeUnavailable", err)
	}
	if _, err := d.List(ctx, map[string]string{"a": "b"}); !errors.Is(err, ErrRuntimeUnavailable) {
		t.Errorf("List = %v; want ErrRuntimeUnavailable", err)
	}
	if err := d.EnsureImage(ctx, echoImage); !errors.Is(err, ErrRuntimeUnavailable) {
		t.Errorf("EnsureImage = %v; want ErrRuntimeUnavailable", err)
	}

	// Watch keeps retrying without sending anything and ends with its ctx.
	wctx, cancel := context.WithCancel(context.Background())
	events := d.Watch(wctx, nil)
	select {
	case ev, ok := <-events:
		t.Errorf("Watch on a missing engine sent %+v (open %v)", ev, ok)
	case <-time.After(400 * time.Millisecond):
	}
	cancel()
	dkDrainClosed(t, events)
}

// socketProxy forwards a unix socket to the Docker engine's and can cut every
// connection and refuse new ones, which looks like an engine restart to the
// client.
type socketProxy struct {
	ln      net.Listener
	target  string
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	refuse  bool
	wg      sync.WaitGroup
	stopped bool
}

func newSocketProxy(t *testing.T) *socketProxy {
	t.Helper()
	target := "/var/run/docker.sock"
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		if !strings.HasPrefix(h, "unix://") {
			t.Skipf("the proxy test needs a unix-socket DOCKER_HOST, have %s", h)
		}
		target = strings.TrimPrefix(h, "unix://")
	}
	// A short path: unix socket paths are limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "cube-proxy")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("unix", filepath.Join(dir, "d.sock"))
	if err != nil {
		t.Fatal(err)
	}
	p := &socketProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *socketProxy) addr() string { return "unix://" + p.ln.Addr().String() }

func (p *socketProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.refuse || p.stopped {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("unix", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.conns[up] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *socketProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// cut closes every open connection and sets whether new ones are refused.
func (p *socketProxy) cut(refuse bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = refuse
	for c := range p.conns {
		c.Close()
	}
}

func (p *socketProxy) setRefuse(refuse bool) {
	p.mu.Lock()
	p.refuse = refuse
	p.mu.Unlock()
}

func (p *socketProxy) close() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.ln.Close()
	p.cut(true)
	p.wg.Wait()
}

func TestDocker_WatchResync(t *testing.T) {
	direct := newTestDocker(t) // also checks engine and image
	proxy := newSocketProxy(t)
	t.Setenv("DOCKER_HOST", proxy.addr())
	cfg := DefaultDockerConfig()
	cfg.Logger = direct.log
	d, err := NewDocker(cfg)
	if err != nil {
		t.Fatalf("NewDocker: %v", err)
	}
	defer d.Close()

	labels := dkTestLabels(t)
	ctx, cancel := context.WithCancel(context.Background())
	events := d.Watch(ctx, labels)
	t.Cleanup(func() { cancel(); dkDrainClosed(t, events) })

	first := dkCreateAndStart(t, direct, echoSpec(t, labels))
	dkNextEvent(t, events, first, "start", 15*time.Second)

	// Break the stream and keep the "engine" away while a container starts:
	// its start event must still arrive, replayed through Since.
	proxy.cut(true)
	second := dkCreateAndStart(t, direct, echoSpec(t, labels))
	// Let Watch fail at least one reconnect attempt.
	time.Sleep(300 * time.Millisecond)
	proxy.setRefuse(false)

	var gotResync, gotSecondStart bool
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for !gotResync || !gotSecondStart {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("event channel closed")
			}
			switch {
			case ev.Action == Resync:
				if ev.ContainerID != "" || ev.Time.IsZero() {
					t.Errorf("resync event = %+v", ev)
				}
				gotResync = true
			case ev.ContainerID == second && ev.Action == "start":
				gotSecondStart = true
			case ev.ContainerID == first && ev.Action == "start":
				t.Errorf("start of the first container delivered twice")
			}
		case <-deadline.C:
			t.Fatalf("after reconnect: resync %v, start of the container started in the gap %v", gotResync, gotSecondStart)
		}
	}

	// The new stream delivers live events.
	if err := direct.Stop(dkCtx(t, 60*time.Second), second, 5*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	ev := dkNextEvent(t, events, second, "die", 15*time.Second)
	if ev.ExitCode != 0 {
		t.Errorf("die after stop: ExitCode %d; want 0", ev.ExitCode)
	}
}

// TestDocker_ConcurrentFirstCalls runs the first calls of a fresh client
// concurrently: the SDK negotiates the API version inside the first request
// and several of its methods read the version unguarded, which the race
// detector flags unless Docker settles the version first.
func TestDocker_ConcurrentFirstCalls(t *testing.T) {
	requireImage(t)
	d, err := NewDocker(DockerConfig{})
	if err != nil {
		t.Fatalf("NewDocker: %v", err)
	}
	defer d.Close()
	labels := dkTestLabels(t)
	ctx, cancel := context.WithCancel(context.Background())
	events := d.Watch(ctx, labels)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 4 {
		wg.Add(3)
		go func() {
			defer wg.Done()
			if _, err := d.List(dkCtx(t, 30*time.Second), labels); err != nil {
				errs <- fmt.Errorf("List: %w", err)
			}
		}()
		go func() {
			defer wg.Done()
			if _, err := d.Inspect(dkCtx(t, 30*time.Second), "cube-no-such-container"); !errors.Is(err, ErrContainerNotFound) {
				errs <- fmt.Errorf("Inspect: %v; want ErrContainerNotFound", err)
			}
		}()
		go func() {
			defer wg.Done()
			if err := d.Ping(dkCtx(t, 30*time.Second)); err != nil {
				errs <- fmt.Errorf("Ping: %w", err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	cancel()
	dkDrainClosed(t, events)
}
