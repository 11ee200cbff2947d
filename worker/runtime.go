package worker

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/cube-orch/cube/api"
)

// Labels Cube puts on every container it creates. They let a restarted worker
// find its containers again and tell a current container from a superseded one.
const (
	LabelTask       = "cube.task"       // task UUID
	LabelWorker     = "cube.worker"     // worker name
	LabelGeneration = "cube.generation" // placement generation, decimal
)

// Runtime errors, matched with errors.Is.
var (
	// ErrContainerNotFound: the container does not exist (removed, or never created).
	ErrContainerNotFound = errors.New("container not found")
	// ErrImageUnavailable: the image is not present and could not be pulled.
	ErrImageUnavailable = errors.New("image unavailable")
	// ErrRuntimeUnavailable: the container engine does not answer.
	ErrRuntimeUnavailable = errors.New("container runtime unavailable")
	// ErrContainerExists: a container with the spec's name already exists.
	ErrContainerExists = errors.New("container name in use")
	// ErrPortTaken: the container could not start because a host port it
	// publishes is already taken on the machine.
	ErrPortTaken = errors.New("host port taken")
)

// Spec is everything needed to create a task's container.
type Spec struct {
	// Name is the container name; unique per task and generation.
	Name   string
	Image  string
	Env    []string
	Cmd    []string
	Labels map[string]string
	// ExposedPorts are published on the host: on the host port PortBindings
	// names, or on a random one.
	ExposedPorts api.PortSet
	PortBindings map[string]string
	// Memory limit in bytes and CPU limit in cores; 0 means no limit.
	Memory int64
	Cpu    float64
	// Privileged, NetworkMode ("" or "host"), Binds (Docker bind syntax,
	// "/host:/container[:ro]") and CapAdd are the task's escalations; the
	// worker passes them only once its configuration allowed them.
	Privileged  bool
	NetworkMode string
	Binds       []string
	CapAdd      []string
}

// Container statuses, as Docker names them, plus StatusGone for a container
// that no longer exists.
const (
	StatusCreated    = "created"
	StatusRunning    = "running"
	StatusPaused     = "paused"
	StatusRestarting = "restarting"
	StatusRemoving   = "removing"
	StatusExited     = "exited"
	StatusDead       = "dead"
	StatusGone       = "gone"
)

// ContainerStatus is what the runtime knows about one container.
type ContainerStatus struct {
	ID   string
	Name string
	// Image is the image the container was created from, as the spec named it.
	Image  string
	Status string // one of the Status constants
	// Running is true for running, paused and restarting containers: a process
	// exists. ExitCode, OOMKilled and Error describe the last exit.
	Running    bool
	ExitCode   int
	OOMKilled  bool
	Error      string
	StartedAt  time.Time
	FinishedAt time.Time
	HostPorts  api.PortMap
	Labels     map[string]string
}

// Event is a change the runtime observed in one of Cube's containers.
type Event struct {
	// ContainerID is empty for a Resync event.
	ContainerID string
	// Action is Docker's: "start", "die", "oom", "kill", "stop", "destroy", or
	// Resync after the stream was re-established (events may have been missed:
	// re-inspect everything tracked).
	Action   string
	ExitCode int // for "die"
	Labels   map[string]string
	Time     time.Time
}

// Resync is the Action of the synthetic event sent after the event stream was
// broken and re-established.
const Resync = "resync"

// Runtime runs containers. The Docker implementation is the real one; every
// method honours ctx and the implementation bounds each call with a timeout.
type Runtime interface {
	// Ping reports whether the engine answers (ErrRuntimeUnavailable if not).
	Ping(ctx context.Context) error
	// EnsureImage makes the image present locally: uses it if present, else
	// tries to pull it; ErrImageUnavailable (wrapped, with the cause) if neither.
	EnsureImage(ctx context.Context, image string) error
	// Create creates (does not start) a container; never with a restart
	// policy. A container of the same name is ErrContainerExists.
	Create(ctx context.Context, spec Spec) (containerID string, err error)
	// Start starts a created container.
	Start(ctx context.Context, containerID string) error
	// Stop stops a container: SIGTERM, then SIGKILL after grace. Stopping a
	// stopped container is not an error; a missing one is ErrContainerNotFound.
	Stop(ctx context.Context, containerID string, grace time.Duration) error
	// Remove force-removes a container; a missing one is not an error.
	Remove(ctx context.Context, containerID string) error
	// Inspect returns the container's status; ErrContainerNotFound if it is gone.
	Inspect(ctx context.Context, containerID string) (ContainerStatus, error)
	// List returns every container (running or not) carrying all the labels.
	List(ctx context.Context, labels map[string]string) ([]ContainerStatus, error)
	// Logs returns the container's stdout and stderr, the last opts.Tail
	// lines (0: all); with opts.Follow the stream goes on with what the
	// container writes until it ends (or ctx does).
	Logs(ctx context.Context, containerID string, opts api.LogOptions) (io.ReadCloser, error)
	// Watch streams events of containers carrying all the labels until ctx ends,
	// re-subscribing (and sending a Resync event) when the stream breaks. The
	// channel is closed when Watch returns.
	Watch(ctx context.Context, labels map[string]string) <-chan Event
}
