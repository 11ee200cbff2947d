package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/docker/go-connections/nat"
	"github.com/hashicorp/go-hclog"

	"github.com/cube-orch/cube/api"
)

// Defaults of DockerConfig.
const (
	DefaultDockerCallTimeout = 30 * time.Second
	DefaultDockerPullTimeout = 5 * time.Minute
)

// Back-off bounds for re-subscribing to the engine's event stream.
const (
	watchBackoffMin = 100 * time.Millisecond
	watchBackoffMax = 5 * time.Second
)

// watchActions are the Docker container actions Watch forwards; every other
// action (exec_*, health_status, attach, ...) says nothing about whether the
// task's process is alive.
var watchActions = []events.Action{
	events.ActionStart,
	events.ActionDie,
	events.ActionOOM,
	events.ActionKill,
	events.ActionStop,
	events.ActionDestroy,
}

// DockerConfig configures the Docker runtime.
type DockerConfig struct {
	// CallTimeout bounds each short Docker call (inspect, create, start,
	// remove, list, ...); default 30s.
	CallTimeout time.Duration
	// PullTimeout bounds an image pull; default 5m.
	PullTimeout time.Duration
	// Logger receives the runtime's diagnostics; default a null logger.
	Logger hclog.Logger
}

// DefaultDockerConfig returns the default configuration.
func DefaultDockerConfig() DockerConfig {
	return DockerConfig{
		CallTimeout: DefaultDockerCallTimeout,
		PullTimeout: DefaultDockerPullTimeout,
		Logger:      hclog.NewNullLogger(),
	}
}

// Docker is the Runtime backed by the local Docker engine. It holds one
// client shared by all calls; it is safe for concurrent use.
type Docker struct {
	cli *client.Client
	cfg DockerConfig
	log hclog.Logger
	// negotiated is set once the client's API version is settled; negMu
	// lets one caller at a time try.
	negotiated atomic.Bool
	negMu      sync.Mutex
}

var _ Runtime = (*Docker)(nil)

// NewDocker connects to the engine named by the environment (DOCKER_HOST and
// friends, else the default socket). It does not contact the engine: use Ping
// for that. Zero fields of cfg take their defaults.
func NewDocker(cfg DockerConfig) (*Docker, error) {
	def := DefaultDockerConfig()
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = def.CallTimeout
	}
	if cfg.PullTimeout <= 0 {
		cfg.PullTimeout = def.PullTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = def.Logger
	}
	// Version negotiation is required: the SDK defaults to its own (newer)
	// API version, which an older engine such as 20.10 (API 1.41) rejects.
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("create docker client: %w", err)
	}
	return &Docker{cli: cli, cfg: cfg, log: cfg.Logger.Named("docker")}, nil
}

// Close releases the client's connections.
func (d *Docker) Close() error {
	return d.cli.Close()
}

// callCtx bounds one short call.
func (d *Docker) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d.cfg.CallTimeout)
}

// dockerErr wraps err with what was being done. A connection failure, or our
// own call timeout expiring while the caller's ctx is still live, means the
// engine does not answer: that is ErrRuntimeUnavailable. Both sentinel and
// cause are wrapped so errors.Is works for either.
func dockerErr(ctx context.Context, err error, format string, args ...any) error {
	op := fmt.Sprintf(format, args...)
	if client.IsErrConnectionFailed(err) ||
		(errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil) {
		return fmt.Errorf("%s: %w: %w", op, ErrRuntimeUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// portTaken reports whether a start failed because a published host port is
// taken: by another container ("Bind for 0.0.0.0:7777 failed: port is
// already allocated") or by another process on the machine ("listen tcp4
// 0.0.0.0:7777: bind: address already in use").
func portTaken(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "port is already allocated") || strings.Contains(msg, "address already in use")
}

// portTakenError is the engine's error for a taken host port: errors.Is it
// ErrPortTaken, and its message is the engine's alone.
type portTakenError struct{ error }

func (portTakenError) Is(target error) bool { return target == ErrPortTaken }
func (e portTakenError) Unwrap() error      { return e.error }

// dockerContainerErr is dockerErr that also maps a not-found error to
// ErrContainerNotFound.
func dockerContainerErr(ctx context.Context, err error, format string, args ...any) error {
	if cerrdefs.IsNotFound(err) {
		return fmt.Errorf("%s: %w: %w", fmt.Sprintf(format, args...), ErrContainerNotFound, err)
	}
	return dockerErr(ctx, err, format, args...)
}

// negotiate makes sure the client has settled its API version before any
// other call. The SDK negotiates lazily inside the first request and writes
// the version under its lock, but many methods (Events, ContainerList,
// Ping's error path, ...) read it without that lock, which is a data race
// when calls run concurrently before negotiation is done. Doing it once,
// serialised by negMu, before every call removes the race.
func (d *Docker) negotiate(ctx context.Context) error {
	if d.negotiated.Load() {
		return nil
	}
	d.negMu.Lock()
	defer d.negMu.Unlock()
	if d.negotiated.Load() {
		return nil
	}
	cctx, cancel := d.callCtx(ctx)
	defer cancel()
	// Any versioned request negotiates first; /version is a cheap one.
	if _, err := d.cli.ServerVersion(cctx); err != nil {
		return dockerErr(ctx, err, "reach docker engine")
	}
	d.negotiated.Store(true)
	return nil
}

// Ping reports whether the engine answers.
func (d *Docker) Ping(ctx context.Context) error {
	err := d.negotiate(ctx)
	if err == nil {
		cctx, cancel := d.callCtx(ctx)
		_, err = d.cli.Ping(cctx)
		cancel()
	}
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil, errors.Is(err, ErrRuntimeUnavailable):
		return fmt.Errorf("ping docker engine: %w", err)
	default:
		// Whatever else stopped the ping (an error status, a garbled
		// answer), the engine is not usable.
		return fmt.Errorf("ping docker engine: %w: %w", ErrRuntimeUnavailable, err)
	}
}

// EnsureImage uses the image if present, else pulls it.
func (d *Docker) EnsureImage(ctx context.Context, ref string) error {
	if err := d.negotiate(ctx); err != nil {
		return fmt.Errorf("inspect image %s: %w", ref, err)
	}
	cctx, cancel := d.callCtx(ctx)
	_, err := d.cli.ImageInspect(cctx, ref)
	cancel()
	switch {
	case err == nil:
		return nil
	case !cerrdefs.IsNotFound(err):
		return dockerErr(ctx, err, "inspect image %s", ref)
	}

	d.log.Info("pulling image", "image", ref)
	start := time.Now()
	if err := d.pull(ctx, ref); err != nil {
		if client.IsErrConnectionFailed(err) || ctx.Err() != nil {
			// Not the image's fault: the engine is gone or the caller gave up.
			return dockerErr(ctx, err, "pull image %s", ref)
		}
		d.log.Warn("image pull failed", "image", ref, "error", err)
		return fmt.Errorf("%w: image %q is not present locally and could not be pulled: %v",
			ErrImageUnavailable, ref, err)
	}
	d.log.Info("image pulled", "image", ref, "duration", time.Since(start))
	return nil
}

// pullMessage is the part of a pull-progress JSON message that reports a
// failure. The engine answers a pull with 200 and then streams progress, so a
// failure after the first byte only shows up here, not as an HTTP error.
type pullMessage struct {
	Error       string `json:"error"`
	ErrorDetail *struct {
		Message string `json:"message"`
	} `json:"errorDetail"`
}

// pull pulls ref, reading the progress stream to its end.
func (d *Docker) pull(ctx context.Context, ref string) error {
	pctx, cancel := context.WithTimeout(ctx, d.cfg.PullTimeout)
	defer cancel()
	body, err := d.cli.ImagePull(pctx, ref, image.PullOptions{})
	if err != nil {
		return err
	}
	defer body.Close()
	dec := json.NewDecoder(body)
	for {
		var m pullMessage
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read pull progress: %w", err)
		}
		if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
			return errors.New(m.ErrorDetail.Message)
		}
		if m.Error != "" {
			return errors.New(m.Error)
		}
	}
}

// Create creates the container described by spec, without starting it.
func (d *Docker) Create(ctx context.Context, spec Spec) (string, error) {
	exposed, bindings, err := dockerPortConfig(spec.ExposedPorts, spec.PortBindings)
	if err != nil {
		return "", fmt.Errorf("create container for %s: %w", spec.Image, err)
	}
	if err := d.negotiate(ctx); err != nil {
		return "", fmt.Errorf("create container for %s: %w", spec.Image, err)
	}
	cfg := &container.Config{
		Image:        spec.Image,
		Env:          spec.Env,
		Cmd:          spec.Cmd,
		Labels:       spec.Labels,
		ExposedPorts: exposed,
	}
	if container.NetworkMode(spec.NetworkMode).IsHost() {
		// On the host's network the container binds host ports itself;
		// there is nothing to publish (the engine would discard it with a
		// warning).
		bindings = nil
	}
	hostCfg := &container.HostConfig{
		PortBindings: bindings,
		Privileged:   spec.Privileged,
		NetworkMode:  container.NetworkMode(spec.NetworkMode),
		Binds:        spec.Binds,
		CapAdd:       spec.CapAdd,
		Resources: container.Resources{
			Memory:   spec.Memory,
			NanoCPUs: int64(math.Round(spec.Cpu * 1e9)),
		},
		// RestartPolicy stays empty, i.e. "no": Cube decides on restarts and
		// Docker restarting behind its back would hide failures from it.
	}
	cctx, cancel := d.callCtx(ctx)
	defer cancel()
	resp, err := d.cli.ContainerCreate(cctx, cfg, hostCfg, nil, nil, spec.Name)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			// The only thing create can miss is the image (EnsureImage was
			// skipped, or the image was removed since).
			return "", fmt.Errorf("create container for %s: %w: %w", spec.Image, ErrImageUnavailable, err)
		}
		if cerrdefs.IsConflict(err) {
			return "", fmt.Errorf("create container %s: %w: %w", spec.Name, ErrContainerExists, err)
		}
		return "", dockerErr(ctx, err, "create container for %s", spec.Image)
	}
	for _, w := range resp.Warnings {
		d.log.Warn("container create warning", "name", spec.Name, "warning", w)
	}
	d.log.Debug("container created", "name", spec.Name, "id", resp.ID, "image", spec.Image)
	return resp.ID, nil
}

// dockerPortConfig turns the spec's ports into Docker's. Every exposed port
// gets a binding: the pinned host address from bindings, or an empty
// HostIP/HostPort, which the engine fills with a random free port on all
// addresses. Building an entry per port (rather than PublishAllPorts plus
// explicit bindings) publishes each port exactly once.
func dockerPortConfig(exposed api.PortSet, bindings map[string]string) (nat.PortSet, nat.PortMap, error) {
	if len(exposed) == 0 && len(bindings) == 0 {
		return nil, nil, nil
	}
	ps := make(nat.PortSet, len(exposed))
	pm := make(nat.PortMap, len(exposed))
	for k := range exposed {
		p, err := dockerPort(k)
		if err != nil {
			return nil, nil, err
		}
		ps[p] = struct{}{}
		pm[p] = []nat.PortBinding{{}}
	}
	for k, v := range bindings {
		p, err := dockerPort(k)
		if err != nil {
			return nil, nil, err
		}
		if _, ok := ps[p]; !ok {
			return nil, nil, fmt.Errorf("port binding %q: port is not exposed", k)
		}
		var b nat.PortBinding
		if strings.Contains(v, ":") {
			host, port, err := net.SplitHostPort(v)
			if err != nil {
				return nil, nil, fmt.Errorf("port binding %q=%q: %w", k, v, err)
			}
			b = nat.PortBinding{HostIP: host, HostPort: port}
		} else {
			b = nat.PortBinding{HostPort: v}
		}
		pm[p] = []nat.PortBinding{b}
	}
	return ps, pm, nil
}

// dockerPort parses "7777/tcp" (or "7777", meaning tcp).
func dockerPort(k string) (nat.Port, error) {
	proto, port := nat.SplitProtoPort(k)
	if port == "" {
		return "", fmt.Errorf("invalid port %q", k)
	}
	if _, err := nat.ParsePort(port); err != nil {
		return "", fmt.Errorf("invalid port %q: %w", k, err)
	}
	return nat.NewPort(proto, port)
}

// Start starts a created container.
func (d *Docker) Start(ctx context.Context, id string) error {
	if err := d.negotiate(ctx); err != nil {
		return fmt.Errorf("start container %s: %w", id, err)
	}
	cctx, cancel := d.callCtx(ctx)
	defer cancel()
	if err := d.cli.ContainerStart(cctx, id, container.StartOptions{}); err != nil {
		if portTaken(err) {
			return fmt.Errorf("start container %s: %w", id, portTakenError{err})
		}
		return dockerContainerErr(ctx, err, "start container %s", id)
	}
	return nil
}

// Stop sends SIGTERM and, after grace, SIGKILL. The call is bounded by grace
// plus CallTimeout, since the engine only answers once the process is gone.
func (d *Docker) Stop(ctx context.Context, id string, grace time.Duration) error {
	if err := d.negotiate(ctx); err != nil {
		return fmt.Errorf("stop container %s: %w", id, err)
	}
	if grace < 0 {
		grace = 0
	}
	// Docker takes whole seconds; round up so the process gets at least the
	// grace asked for.
	secs := int(math.Ceil(grace.Seconds()))
	cctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+d.cfg.CallTimeout)
	defer cancel()
	// A stopped container answers 304, which the SDK reports as success.
	if err := d.cli.ContainerStop(cctx, id, container.StopOptions{Timeout: &secs}); err != nil {
		return dockerContainerErr(ctx, err, "stop container %s", id)
	}
	return nil
}

// Remove force-removes a container and its anonymous volumes.
func (d *Docker) Remove(ctx context.Context, id string) error {
	if err := d.negotiate(ctx); err != nil {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	cctx, cancel := d.callCtx(ctx)
	defer cancel()
	err := d.cli.ContainerRemove(cctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		// A removal already in progress (409) is also left to the engine to
		// finish; it is reported so the caller retries and sees not-found.
		return dockerErr(ctx, err, "remove container %s", id)
	}
	return nil
}

// Inspect returns the container's status.
func (d *Docker) Inspect(ctx context.Context, id string) (ContainerStatus, error) {
	if err := d.negotiate(ctx); err != nil {
		return ContainerStatus{}, fmt.Errorf("inspect container %s: %w", id, err)
	}
	cctx, cancel := d.callCtx(ctx)
	defer cancel()
	resp, err := d.cli.ContainerInspect(cctx, id)
	if err != nil {
		return ContainerStatus{}, dockerContainerErr(ctx, err, "inspect container %s", id)
	}
	return statusFromInspect(resp), nil
}

// statusFromInspect converts Docker's inspect answer. Every pointer in it may
// be nil in principle, so each is checked.
func statusFromInspect(resp container.InspectResponse) ContainerStatus {
	var st ContainerStatus
	if resp.ContainerJSONBase != nil {
		st.ID = resp.ID
		st.Name = strings.TrimPrefix(resp.Name, "/")
		if s := resp.State; s != nil {
			st.Status = string(s.Status)
			st.Running = s.Running || s.Paused || s.Restarting
			st.ExitCode = s.ExitCode
			st.OOMKilled = s.OOMKilled
			st.Error = s.Error
			st.StartedAt = parseDockerTime(s.StartedAt)
			st.FinishedAt = parseDockerTime(s.FinishedAt)
		}
	}
	if resp.Config != nil {
		st.Image = resp.Config.Image
	}
	if resp.Config != nil && len(resp.Config.Labels) > 0 {
		st.Labels = make(map[string]string, len(resp.Config.Labels))
		for k, v := range resp.Config.Labels {
			st.Labels[k] = v
		}
	}
	if resp.NetworkSettings != nil {
		st.HostPorts = dockerHostPorts(resp.NetworkSettings.Ports)
	}
	return st
}

// parseDockerTime parses an inspect timestamp; Docker writes
// "0001-01-01T00:00:00Z" for "never", which becomes the zero time.
func parseDockerTime(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.IsZero() || t.Year() <= 1 {
		return time.Time{}
	}
	return t
}

// dockerHostPorts converts published ports, IPv4 bindings first, then by
// address and port, so equal states compare equal.
func dockerHostPorts(ports nat.PortMap) api.PortMap {
	var out api.PortMap
	for p, bs := range ports {
		if len(bs) == 0 {
			// Exposed but not published (or not yet: the container is not
			// running).
			continue
		}
		list := make([]api.PortBinding, 0, len(bs))
		for _, b := range bs {
			list = append(list, api.PortBinding{HostIp: b.HostIP, HostPort: b.HostPort})
		}
		sort.SliceStable(list, func(i, j int) bool {
			ai, aj := isIPv4Host(list[i].HostIp), isIPv4Host(list[j].HostIp)
			if ai != aj {
				return ai
			}
			if list[i].HostIp != list[j].HostIp {
				return list[i].HostIp < list[j].HostIp
			}
			return list[i].HostPort < list[j].HostPort
		})
		if out == nil {
			out = make(api.PortMap, len(ports))
		}
		out[string(p)] = list
	}
	return out
}

// isIPv4Host reports whether a binding address is IPv4; an empty one counts as
// IPv4 (it is what older engines report for "all addresses").
func isIPv4Host(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.To4() != nil
}

// dockerLabelFilters builds Docker filters requiring every label.
func dockerLabelFilters(labels map[string]string) filters.Args {
	args := filters.NewArgs()
	for k, v := range labels {
		args.Add("label", k+"="+v)
	}
	return args
}

// List returns every container carrying all the labels. Each is inspected,
// because the list answer lacks the exit code and timestamps; a container
// removed between list and inspect is left out.
func (d *Docker) List(ctx context.Context, labels map[string]string) ([]ContainerStatus, error) {
	if err := d.negotiate(ctx); err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	cctx, cancel := d.callCtx(ctx)
	summaries, err := d.cli.ContainerList(cctx, container.ListOptions{All: true, Filters: dockerLabelFilters(labels)})
	cancel()
	if err != nil {
		return nil, dockerErr(ctx, err, "list containers")
	}
	out := make([]ContainerStatus, 0, len(summaries))
	for _, s := range summaries {
		st, err := d.Inspect(ctx, s.ID)
		if errors.Is(err, ErrContainerNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list containers: %w", err)
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Logs returns the container's stdout and stderr merged into one stream;
// followed (opts.Follow), the engine keeps it open until the container
// stops. Opening the stream is bounded by CallTimeout; reading it is bounded
// by ctx only, so a slow reader, or a followed container that writes
// nothing for a while, is not cut off. Close releases the connection and
// the copying goroutine.
func (d *Docker) Logs(ctx context.Context, id string, opts api.LogOptions) (io.ReadCloser, error) {
	if err := d.negotiate(ctx); err != nil {
		return nil, fmt.Errorf("read logs of container %s: %w", id, err)
	}
	tailArg := "all"
	if opts.Tail > 0 {
		tailArg = strconv.Itoa(opts.Tail)
	}
	sctx, cancel := context.WithCancel(ctx)
	// The timer, not a WithTimeout, bounds the open: a deadline on sctx would
	// also cut off reading the body later.
	timer := time.AfterFunc(d.cfg.CallTimeout, cancel)
	body, err := d.cli.ContainerLogs(sctx, id, container.LogsOptions{
		ShowStdout: true,
		ShowStderr: true,
		Tail:       tailArg,
		Follow:     opts.Follow,
	})
	if !timer.Stop() && err == nil {
		// The timer fired just as the answer came: the body is unusable.
		err = context.DeadlineExceeded
		body.Close()
	}
	if err != nil {
		cancel()
		if errors.Is(err, context.Canceled) && ctx.Err() == nil {
			err = context.DeadlineExceeded
		}
		return nil, dockerContainerErr(ctx, err, "read logs of container %s", id)
	}

	pr, pw := io.Pipe()
	done := make(chan struct{})
	// Ending sctx (caller's ctx or Close) unblocks the copier whether it
	// waits on the engine (the transport aborts the read) or on the reader
	// (the pipe's write end is closed).
	stopAfter := context.AfterFunc(sctx, func() { pw.CloseWithError(sctx.Err()) })
	go func() {
		defer close(done)
		defer body.Close()
		// The engine multiplexes stdout and stderr into one framed stream for
		// non-TTY containers, the only kind Cube creates.
		_, err := stdcopy.StdCopy(pw, pw, body)
		pw.CloseWithError(err) // nil: EOF for the reader
		// Release the context at once for a caller that reads to EOF and
		// forgets Close; the pipe keeps the error set first.
		cancel()
	}()
	return &logReader{PipeReader: pr, cancel: cancel, stop: stopAfter, done: done}, nil
}

// logReader is the stream Logs returns.
type logReader struct {
	*io.PipeReader
	cancel context.CancelFunc
	stop   func() bool
	done   chan struct{}
	once   sync.Once
}

// Close stops the copy and waits for it to release the connection.
func (r *logReader) Close() error {
	r.once.Do(func() {
		r.PipeReader.Close()
		r.cancel()
		<-r.done
		r.stop()
	})
	return nil
}

// Watch streams the events of containers carrying all the labels until ctx
// ends. When the engine's stream breaks it re-subscribes with back-off from
// the last event's time and then sends a Resync event.
func (d *Docker) Watch(ctx context.Context, labels map[string]string) <-chan Event {
	out := make(chan Event, 16)
	go d.watch(ctx, labels, out)
	return out
}

// eventKey identifies an event for de-duplication across re-subscriptions.
type eventKey struct {
	id     string
	action events.Action
}

func (d *Docker) watch(ctx context.Context, labels map[string]string, out chan<- Event) {
	defer close(out)

	send := func(ev Event) bool {
		select {
		case out <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}

	args := dockerLabelFilters(labels)
	args.Add("type", string(events.ContainerEventType))
	for _, a := range watchActions {
		args.Add("event", string(a))
	}

	var (
		lastNano int64 // time of the newest event seen
		// Keys of the events seen at lastNano: re-subscribing with Since
		// replays events at or after that instant, which includes them.
		seenAtLast = map[eventKey]bool{}
		backoff    = watchBackoffMin
		resync     = false
		since      string
	)
	for {
		err := d.negotiate(ctx)
		if err == nil && resync {
			// Ping first so that a down engine costs one cheap call per
			// attempt, and Resync is only sent once a stream is really open.
			err = d.Ping(ctx)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d.log.Warn("event stream connect failed", "error", err, "retry_in", backoff)
			if !watchSleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, watchBackoffMax)
			// Whatever happened before the stream opens is unknown to the
			// consumer.
			resync = true
			continue
		}
		sctx, cancel := context.WithCancel(ctx)
		opened := time.Now()
		boundary := int64(-1)
		if since != "" {
			boundary = lastNano
		}
		msgs, errs := d.cli.Events(sctx, events.ListOptions{Since: since, Filters: args})
		if resync {
			d.log.Info("event stream re-established", "since", since)
			if !send(Event{Action: Resync, Time: time.Now()}) {
				cancel()
				return
			}
		}
		if lastNano == 0 {
			// No event yet: a later re-subscription replays from the moment
			// this stream was opened.
			lastNano = opened.UnixNano()
		}
		received := false
		var streamErr error
	recv:
		for {
			select {
			case <-ctx.Done():
				cancel()
				return
			case err, ok := <-errs:
				if !ok {
					err = io.EOF
				}
				streamErr = err
				break recv
			case m := <-msgs:
				received = true
				ev, ok := eventFromMessage(m)
				if !ok {
					continue
				}
				n := ev.Time.UnixNano()
				k := eventKey{m.Actor.ID, m.Action}
				// Only the replay at the boundary can repeat an event: the
				// engine replays from Since inclusive. Elsewhere an older
				// time is no duplicate: concurrent events may reach the
				// stream slightly out of time order.
				if n == boundary && seenAtLast[k] {
					continue
				}
				switch {
				case n > lastNano:
					lastNano = n
					clear(seenAtLast)
					seenAtLast[k] = true
				case n == lastNano:
					seenAtLast[k] = true
				}
				if !send(ev) {
					cancel()
					return
				}
			}
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		if received || time.Since(opened) > watchBackoffMax {
			backoff = watchBackoffMin
		}
		since = fmt.Sprintf("%d.%09d", lastNano/1e9, lastNano%1e9)
		d.log.Warn("event stream broken", "error", streamErr, "retry_in", backoff)
		if !watchSleep(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, watchBackoffMax)
		resync = true
	}
}

// eventFromMessage converts an engine message; ok is false for messages
// Watch does not forward.
func eventFromMessage(m events.Message) (Event, bool) {
	if m.Type != events.ContainerEventType {
		return Event{}, false
	}
	forward := false
	for _, a := range watchActions {
		if m.Action == a {
			forward = true
			break
		}
	}
	if !forward {
		return Event{}, false
	}
	t := time.Unix(0, m.TimeNano)
	if m.TimeNano == 0 {
		t = time.Unix(m.Time, 0)
	}
	ev := Event{
		ContainerID: m.Actor.ID,
		Action:      string(m.Action),
		Time:        t,
	}
	if len(m.Actor.Attributes) > 0 {
		ev.Labels = make(map[string]string, len(m.Actor.Attributes))
		for k, v := range m.Actor.Attributes {
			ev.Labels[k] = v
		}
	}
	if m.Action == events.ActionDie {
		if code, err := strconv.Atoi(m.Actor.Attributes["exitCode"]); err == nil {
			ev.ExitCode = code
		}
	}
	return ev, true
}

// watchSleep waits for d or ctx, reporting whether d elapsed.
func watchSleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
