package manager

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Config configures a Manager.
type Config struct {
	// ID is this manager's raft server ID.
	ID string
	// API is this manager's HTTP address, advertised as X-Cube-Leader.
	API string
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
	// SourceIP, if set, is the local address the manager's calls to workers
	// and health probes leave from.
	SourceIP string
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
	}
}

// FastConfig returns the tight timings of `make cluster`, `cube dev` and the
// tests: a quicker pass, a healthy run that counts after 2 s, orphans probed
// twice a second, a port clash remembered for 5 s. Placement and recovery decisions are the same as with
// DefaultConfig; only how soon they are taken differs. ID and API must still
// be set.
func FastConfig() Config {
	c := DefaultConfig()
	c.Tick = 100 * time.Millisecond
	c.PollInterval = 2 * time.Second
	c.HealthyRun = 2 * time.Second
	c.OrphanProbeInterval = 500 * time.Millisecond
	c.PortClashMemory = 5 * time.Second
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
	case c.OrphanConnectTimeout < 0:
		return fmt.Errorf("OrphanConnectTimeout (%s) must not be negative", c.OrphanConnectTimeout)
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
