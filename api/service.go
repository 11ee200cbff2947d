package api

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Service is a named task template the leader keeps running Count times
// (DESIGN §6): Swarm's service, Nomad's group count. Its tasks are ordinary
// tasks that name the service and the version they were made from
// (Task.Service, Task.ServiceVersion).
//
// A client sends Name, Count, Task, Update, Constraints and Prefer; the
// cluster sets the rest. Changing the template (Task) makes a new Version
// and starts a rolling update to it; changing only Count scales the
// current version at once.
type Service struct {
	// Name identifies the service: 1-63 letters, digits, '-', '_' or '.',
	// starting with a letter or digit.
	Name string
	// Count is how many tasks of the current version should run (0-1000).
	Count int
	// Task is the template of every task of the service. ID, State, Worker,
	// Generation and the other fields a cluster sets are ignored.
	Task Task
	// Update is how a new version replaces the old one.
	Update UpdatePolicy
	// Constraints must all hold on a worker for a task of the service to be
	// placed there: "key==value" or "key!=value" against the worker's labels
	// (cube worker --label key=value). A service no worker meets stays with
	// its tasks Pending, the reason saying so.
	Constraints []string `json:",omitempty"`
	// Prefer lists constraints that are wished for, not required: among the
	// workers that meet Constraints, those meeting more of Prefer come first.
	Prefer []string `json:",omitempty"`

	// Version is the version of the current template; it starts at 1 and
	// grows by one each time the template changes. Set by the cluster.
	Version uint64
	// CreateTime and UpdateTime are when the service was created and last
	// changed (leader's clock). Set by the cluster.
	CreateTime time.Time
	UpdateTime time.Time
	// History holds the last versions of the template, newest last (at most
	// ServiceHistoryMax), for cube service inspect and rollback. Set by the
	// cluster.
	History []ServiceVersion `json:",omitempty"`
	// Rollout is the last (or current) change of version. Set by the cluster.
	Rollout *Rollout `json:",omitempty"`
}

// ServiceHistoryMax bounds Service.History.
const ServiceHistoryMax = 10

// UpdatePolicy says how a rolling update proceeds.
type UpdatePolicy struct {
	// MaxParallel is how many tasks are replaced at a time (default 1).
	MaxParallel int `json:",omitempty"`
	// MinHealthyTime is how long a new task must be healthy (Running, and
	// passing its health check if it has one) before it counts as done; a Go
	// duration ("10s", default "5s").
	MinHealthyTime string `json:",omitempty"`
	// HealthyDeadline bounds the wait for a batch's tasks to be healthy for
	// MinHealthyTime; past it the rollout fails ("5m" by default).
	HealthyDeadline string `json:",omitempty"`
	// AutoRevert, when a rollout fails, rolls back to the last version that
	// was healthy.
	AutoRevert bool `json:",omitempty"`
}

// The update policy's defaults.
const (
	DefaultMaxParallel     = 1
	DefaultMinHealthyTime  = 5 * time.Second
	DefaultHealthyDeadline = 5 * time.Minute
)

// ServiceVersion is one version of a service's template.
type ServiceVersion struct {
	Version uint64
	Task    Task
	// Time is when the version was made; By names who made it (the token's
	// name), empty without tokens.
	Time time.Time
	By   string `json:",omitempty"`
	// Healthy is set once every task of this version was healthy together
	// (a rollout to it completed): the versions AutoRevert and rollback go
	// back to.
	Healthy bool `json:",omitempty"`
}

// The states of a rollout.
const (
	RolloutRunning    = "running"     // replacing tasks batch by batch
	RolloutCompleted  = "completed"   // every task is of the new version and healthy
	RolloutFailed     = "failed"      // a batch was not healthy in time; stopped there
	RolloutRolledBack = "rolled-back" // failed, and a rollback to From was started
)

// Rollout is a change of a service from one version to another, kept in the
// replicated state so that a new leader carries it on where it was.
type Rollout struct {
	From, To uint64
	State    string
	// Reason says why a rollout failed, or that it is a rollback.
	Reason string `json:",omitempty"`
	// Replaced counts the tasks of From replaced so far.
	Replaced   int
	StartTime  time.Time
	UpdateTime time.Time
}

// ServiceStatus is what GET /services and GET /services/{name} return: the
// service and counts of its tasks, worked out from the task list.
type ServiceStatus struct {
	Service
	// Running counts the service's tasks in state Running; Healthy those of
	// them that pass their health check (all Running ones if the template
	// has none); ByVersion counts Running tasks by version.
	Running   int
	Healthy   int
	ByVersion map[uint64]int `json:",omitempty"`
}

var validServiceName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// MaxServiceCount bounds Service.Count.
const MaxServiceCount = 1000

// ValidateService checks what a client sends for a service, naming the
// field and its bound; the cluster-set fields are not checked.
func ValidateService(s Service) error {
	if !validServiceName.MatchString(s.Name) {
		return fmt.Errorf("service Name %q must be 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit", s.Name)
	}
	if s.Count < 0 || s.Count > MaxServiceCount {
		return fmt.Errorf("service %s: Count %d must be between 0 and %d", s.Name, s.Count, MaxServiceCount)
	}
	if strings.TrimSpace(s.Task.Image) == "" {
		return fmt.Errorf("service %s: Task.Image is required", s.Name)
	}
	if s.Update.MaxParallel < 0 {
		return fmt.Errorf("service %s: Update.MaxParallel %d must not be negative (0: the default, %d)", s.Name, s.Update.MaxParallel, DefaultMaxParallel)
	}
	for field, v := range map[string]string{"Update.MinHealthyTime": s.Update.MinHealthyTime, "Update.HealthyDeadline": s.Update.HealthyDeadline} {
		if v == "" {
			continue
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("service %s: %s %q must be a non-negative Go duration such as \"10s\"", s.Name, field, v)
		}
	}
	for field, list := range map[string][]string{"Constraints": s.Constraints, "Prefer": s.Prefer} {
		for _, c := range list {
			if _, err := ParseConstraint(c); err != nil {
				return fmt.Errorf("service %s: %s: %w", s.Name, field, err)
			}
		}
	}
	return nil
}

// Constraint is one parsed "key==value" or "key!=value".
type Constraint struct {
	Key, Value string
	Not        bool
}

var validLabelKey = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_./-]{0,62}$`)

// ParseConstraint parses "key==value" or "key!=value" (spaces around the
// operator are allowed).
func ParseConstraint(s string) (Constraint, error) {
	op, not := "==", false
	i := strings.Index(s, "==")
	if j := strings.Index(s, "!="); j >= 0 && (i < 0 || j < i) {
		i, op, not = j, "!=", true
	}
	if i < 0 {
		return Constraint{}, fmt.Errorf("constraint %q must be key==value or key!=value", s)
	}
	c := Constraint{Key: strings.TrimSpace(s[:i]), Value: strings.TrimSpace(s[i+len(op):]), Not: not}
	if !validLabelKey.MatchString(c.Key) {
		return Constraint{}, fmt.Errorf("constraint %q: key %q must be 1-63 letters, digits, '_', '.', '/' or '-'", s, c.Key)
	}
	if strings.ContainsAny(c.Value, "=!") {
		return Constraint{}, fmt.Errorf("constraint %q: value %q must not contain '=' or '!'", s, c.Value)
	}
	return c, nil
}

// Holds reports whether the constraint holds on a worker with these labels.
// A "key!=value" holds on a worker without the key.
func (c Constraint) Holds(labels map[string]string) bool {
	v, ok := labels[c.Key]
	if c.Not {
		return !ok || v != c.Value
	}
	return ok && v == c.Value
}

// String returns the constraint as it is written.
func (c Constraint) String() string {
	if c.Not {
		return c.Key + "!=" + c.Value
	}
	return c.Key + "==" + c.Value
}
