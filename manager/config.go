package manager

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/hashicorp/go-hclog"
)

// Config configures a Manager.
type Config struct {
	// ID is this manager's raft server ID.
	ID string
	// API is this manager's HTTP address, advertised as X-Cube-Leader.
	API string
	// Version is the build this manager runs (cube version), shown in GET
	// /cluster and gossiped to the others.
	Version string
	// Scheduler is "epvm" (default) or "roundrobin".
	Scheduler string
	// WriteTimeout bounds one replicated write (enqueue and commit).
	WriteTimeout time.Duration
	// Tick is the leader loop's period; it also wakes at once on every change
	// of the replicated state or of gossip membership.
	Tick time.Duration
	// PollInterval is how often the leader lists each worker's tasks, a
	// safety net behind the reports workers push.
	PollInterval time.Duration
	// WorkerTimeout bounds one call to a worker's API.
	WorkerTimeout time.Duration
	// RetryMin and RetryMax bound the back-off between attempts to reach a
	// worker (dispatch or stop).
	RetryMin, RetryMax time.Duration
	// RestartBase and RestartCap bound the back-off between restarts of a task
	// that keeps failing; the first restart after a healthy run is immediate.
	RestartBase, RestartCap time.Duration
	// HealthyRun is how long a run must last to count as healthy, which resets
	// a task's back-off.
	HealthyRun time.Duration
	// OrphanProbeInterval is how often the leader probes a task whose worker
	// is lost, to tell a dead machine from a dead worker agent.
	OrphanProbeInterval time.Duration
	// OrphanConnectTimeout bounds the TCP connect of that probe: a powered-off
	// machine answers no SYN, so without a bound of its own the probe would
	// wait for its whole timeout (WorkerTimeout) before the task is placed
	// elsewhere. On a LAN a live machine connects in well under a millisecond.
	// 0: 500 ms.
	OrphanConnectTimeout time.Duration
	// PortClashMemory is how long the leader keeps a worker out of the
	// candidates for a static host port after a start failed there because
	// the port was taken on its machine (by something the scheduler cannot
	// see: a process, or a container of another worker on the same host).
	// 0: 30 s.
	PortClashMemory time.Duration
	// ScheduledTimeout is how long a task may stay Scheduled on one worker
	// (placed there, its container not reported running) before the leader
	// acts: it sends the assignment again at the same generation (harmless:
	// a worker that has it answers with its record, which the leader
	// commits; one that lost it starts it), and after twice this long it
	// places the task again (Pending, not counted as a restart) and stops
	// the copy there, fenced by its generation. It is the safety net behind
	// the worker's own bound on a start (its StartTimeout, 5 min by
	// default, which covers pulling an image), so it must exceed that.
	// The clock starts when this leader first sees the placement: a new
	// leader gives every Scheduled task the full time again.
	ScheduledTimeout time.Duration
	// SourceIP, if set, is the local address the manager's calls to workers
	// and health probes leave from.
	SourceIP string
	// Autopilot is how the leader promotes joined managers (raft
	// non-voters) to voters: once caught up and healthy for its
	// StabilizationTime (10 s by default, 1 s in the fast profile).
	Autopilot cluster.AutopilotConfig
	// ManagerClient are the options of the API clients the leader builds to
	// call other managers (GET /cluster/self, before promoting a non-voter);
	// Timeout and RetryFor are set per call from Autopilot.StatusTimeout.
	// With security on they must carry this manager's certificate: set HTTP
	// to one shared client with the TLS transport (and the https scheme).
	// HTTP nil: one shared plain-HTTP client leaving from SourceIP.
	ManagerClient api.ClientOptions
	// WorkerTLS, if set, is the TLS config of the manager's calls to
	// workers (its manager certificate; the worker's verified as a
	// worker's), which then go over https. Nil: plain HTTP.
	WorkerTLS *tls.Config
	// BootstrapTokenHash, if set, is the hash (security.HashToken) of the
	// operator token the leader stores on gaining leadership while the
	// cluster has never held a token.
	BootstrapTokenHash string
	// GCInterval is how often the leader collects garbage: it removes the
	// finished tasks older than TaskGCThreshold and the workers dead or
	// gone for longer than WorkerGCThreshold. 0: no periodic collection
	// (POST /system/gc still collects on demand).
	GCInterval time.Duration
	// TaskGCThreshold is how long a finished task stays in the state
	// (counted from its FinishTime) before garbage collection removes it.
	TaskGCThreshold time.Duration
	// WorkerGCThreshold is how long a worker stays in the state once gossip
	// saw it dead or leave, if no live task is placed on it.
	WorkerGCThreshold time.Duration
	// MaxTasks is the state quota: while the state holds that many tasks
	// (finished ones included, until collected), a new one is refused with
	// 429. 0: no quota.
	MaxTasks int
	// MaxEventStreams caps the GET /events streams one manager serves at
	// once; one more is refused with 429.
	MaxEventStreams int
	// EventsLeaderTimeout is how long this manager serves event streams
	// (GET /events) while out of touch with a raft leader
	// (cluster.Raft.LeaderContact): past it, it ends them with a last line
	// saying why, and refuses new ones (503), so that their readers resume
	// on a manager that still follows the cluster. A manager cut off from
	// the others (a partition, a stalled raft) learns of no new change,
	// yet its streams would stay open, quiet and heartbeating, forever.
	// Keep it well above an election (a few raft HeartbeatTimeouts), so
	// that a leader change does not move every reader.
	EventsLeaderTimeout time.Duration
	// GossipChanges, if set, wakes the leader loop when membership changes.
	GossipChanges <-chan struct{}
	// Logger is the root logger; the manager logs under "manager".
	Logger hclog.Logger
}

// DefaultConfig returns production defaults; ID and API must still be set.
func DefaultConfig() Config {
	return Config{
		Scheduler:     "epvm",
		WriteTimeout:  5 * time.Second,
		Tick:          250 * time.Millisecond,
		PollInterval:  5 * time.Second,
		WorkerTimeout: 10 * time.Second,
		RetryMin:      100 * time.Millisecond,
		RetryMax:      5 * time.Second,

		RestartBase:          100 * time.Millisecond,
		RestartCap:           30 * time.Second,
		HealthyRun:           10 * time.Second,
		OrphanProbeInterval:  time.Second,
		PortClashMemory:      30 * time.Second,
		OrphanConnectTimeout: 500 * time.Millisecond,
		ScheduledTimeout:     10 * time.Minute,
		Autopilot:            cluster.DefaultAutopilotConfig(),

		// As Nomad's server defaults: gc_interval 5m, job_gc_threshold 4h,
		// node_gc_threshold 24h.
		GCInterval:        5 * time.Minute,
		TaskGCThreshold:   4 * time.Hour,
		WorkerGCThreshold: 24 * time.Hour,
		MaxTasks:          DefaultMaxTasks,
		MaxEventStreams:   DefaultMaxEventStreams,
		// Ten raft HeartbeatTimeouts of the default profile: an election
		// settles in one to three.
		EventsLeaderTimeout: 10 * time.Second,
	}
}

// DefaultMaxTasks is the default state quota: about 100 MB of tasks in
// every manager's memory and snapshots.
const DefaultMaxTasks = 200_000

// DefaultMaxEventStreams is the default cap on a manager's event streams.
const DefaultMaxEventStreams = 64

// FastConfig returns the tight timings of `make cluster`, `cube dev` and the
// tests: a quicker pass, a healthy run that counts after 2 s, orphans probed
// twice a second, a port clash remembered for 5 s, a task Scheduled for a
// minute sent again (placed again after two), a joined manager promoted
// after 1 s of health, event streams ended after 3 s out of touch with a
// leader (15 fast HeartbeatTimeouts). Placement and recovery decisions are the same as with
// DefaultConfig; only how soon they are taken differs. ID and API must still
// be set.
func FastConfig() Config {
	c := DefaultConfig()
	c.Tick = 100 * time.Millisecond
	c.PollInterval = 2 * time.Second
	c.HealthyRun = 2 * time.Second
	c.OrphanProbeInterval = 500 * time.Millisecond
	c.PortClashMemory = 5 * time.Second
	c.ScheduledTimeout = time.Minute
	c.Autopilot = cluster.FastAutopilotConfig()
	c.EventsLeaderTimeout = 3 * time.Second
	return c
}

// Validate checks the configuration, naming the field and its bound.
func (c Config) Validate() error {
	switch {
	case c.ID == "":
		return errors.New("ID is required")
	case c.API == "":
		return errors.New("API is required")
	case c.WriteTimeout <= 0:
		return fmt.Errorf("WriteTimeout (%s) must be positive", c.WriteTimeout)
	case c.Tick <= 0:
		return fmt.Errorf("Tick (%s) must be positive", c.Tick)
	case c.PollInterval <= 0:
		return fmt.Errorf("PollInterval (%s) must be positive", c.PollInterval)
	case c.WorkerTimeout <= 0:
		return fmt.Errorf("WorkerTimeout (%s) must be positive", c.WorkerTimeout)
	case c.RetryMin <= 0 || c.RetryMax < c.RetryMin:
		return fmt.Errorf("RetryMin (%s) must be positive and at most RetryMax (%s)", c.RetryMin, c.RetryMax)
	case c.RestartBase <= 0 || c.RestartCap < c.RestartBase:
		return fmt.Errorf("RestartBase (%s) must be positive and at most RestartCap (%s)", c.RestartBase, c.RestartCap)
	case c.HealthyRun < 0:
		return fmt.Errorf("HealthyRun (%s) must not be negative", c.HealthyRun)
	case c.OrphanProbeInterval <= 0:
		return fmt.Errorf("OrphanProbeInterval (%s) must be positive", c.OrphanProbeInterval)
	case c.PortClashMemory < 0:
		return fmt.Errorf("PortClashMemory (%s) must not be negative", c.PortClashMemory)
	case c.GCInterval < 0:
		return fmt.Errorf("GCInterval (%s) must not be negative (0 turns periodic collection off)", c.GCInterval)
	case c.TaskGCThreshold < 0:
		return fmt.Errorf("TaskGCThreshold (%s) must not be negative", c.TaskGCThreshold)
	case c.WorkerGCThreshold < 0:
		return fmt.Errorf("WorkerGCThreshold (%s) must not be negative", c.WorkerGCThreshold)
	case c.MaxTasks < 0:
		return fmt.Errorf("MaxTasks (%d) must not be negative (0 means no quota)", c.MaxTasks)
	case c.MaxEventStreams < 1:
		return fmt.Errorf("MaxEventStreams (%d) must be at least 1", c.MaxEventStreams)
	case c.EventsLeaderTimeout <= 0:
		return fmt.Errorf("EventsLeaderTimeout (%s) must be positive", c.EventsLeaderTimeout)
	case c.ScheduledTimeout <= 0:
		return fmt.Errorf("ScheduledTimeout (%s) must be positive", c.ScheduledTimeout)
	case c.OrphanConnectTimeout < 0:
		return fmt.Errorf("OrphanConnectTimeout (%s) must not be negative", c.OrphanConnectTimeout)
	case c.BootstrapTokenHash != "" && !isTokenHash(c.BootstrapTokenHash):
		return errors.New("BootstrapTokenHash must be the 64 lowercase hex digits of security.HashToken(secret), not the secret itself")
	}
	if err := c.Autopilot.Validate(); err != nil {
		return err
	}
	_, err := NewScheduler(c.Scheduler)
	return err
}

// orphanConnectTimeout is OrphanConnectTimeout, 500 ms when unset.
func (c Config) orphanConnectTimeout() time.Duration {
	if c.OrphanConnectTimeout > 0 {
		return c.OrphanConnectTimeout
	}
	return 500 * time.Millisecond
}

// isTokenHash reports whether h has the form of security.HashToken's
// output: 64 lowercase hex digits.
func isTokenHash(h string) bool {
	if len(h) != 64 {
		return false
	}
	for _, c := range h {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
