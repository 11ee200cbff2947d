package health

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/cube-orch/cube/api"
)

// maxPathLen bounds an HTTP check path.
const maxPathLen = 4096

// timing is a task's health-check timing with defaults applied.
type timing struct {
	interval, timeout, grace time.Duration
	threshold                int
}

// ValidateTask checks the health-check fields of a submitted task and returns
// the first problem found as a *api.ValidationError (an HTTP 400) whose
// message names the field and the bound. The rules:
//
//   - HealthCheck is "", "tcp", or an HTTP path starting with "/" (no white
//     space or control characters). A task with a check must expose a TCP
//     port to probe.
//   - HealthCheckPort is "" or a "port/tcp" key of ExposedPorts.
//   - HealthCheckInterval is a Go duration from MinInterval to MaxInterval.
//   - HealthCheckTimeout is a Go duration > 0 and no longer than the interval:
//     probes of one check never overlap, so a longer timeout would silently
//     stretch the interval and the time to detect a failure (interval ×
//     threshold). Left empty, it is DefaultTimeout or the interval, whichever
//     is shorter, so setting only a short interval is never an error.
//   - HealthCheckGrace is a Go duration from 0 to MaxGrace.
//   - HealthCheckThreshold is from 0 (the default) to MaxThreshold.
//
// The timing fields are checked even when HealthCheck is "", so that a typo
// is reported when it is made rather than when a check is added.
func ValidateTask(t api.Task) error {
	if t.HealthCheck != "" {
		if _, _, err := kindOf(t.HealthCheck); err != nil {
			return err
		}
	}
	if t.HealthCheckPort != "" {
		if _, err := tcpPort(t.HealthCheckPort); err != nil {
			return invalid("HealthCheckPort %q: %v", t.HealthCheckPort, err)
		}
		if _, ok := t.ExposedPorts[t.HealthCheckPort]; !ok {
			return invalid("HealthCheckPort %q is not in ExposedPorts; expose the port too", t.HealthCheckPort)
		}
	} else if t.HealthCheck != "" && !exposesTCP(t) {
		return invalid("HealthCheck %q needs a TCP port to probe, but the task exposes none; add one to ExposedPorts (for example \"7777/tcp\")", t.HealthCheck)
	}
	_, err := parseTiming(t, true)
	return err
}

// exposesTCP reports whether the task exposes at least one TCP port.
func exposesTCP(t api.Task) bool {
	for k := range t.ExposedPorts {
		if _, err := tcpPort(k); err == nil {
			return true
		}
	}
	return false
}

// checkPath checks an HTTP check path.
func checkPath(p string) error {
	if len(p) > maxPathLen {
		return fmt.Errorf("path is longer than %d characters", maxPathLen)
	}
	if strings.IndexFunc(p, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return errors.New("path contains white space or control characters; escape them (%20)")
	}
	if _, err := url.ParseRequestURI(p); err != nil {
		return fmt.Errorf("not a valid URL path: %v", err)
	}
	return nil
}

// parseTiming parses and bounds a task's timing fields and applies defaults.
// When strict is false (SpecFor, on a task already accepted), a timeout
// longer than the interval is cut to the interval instead of refused: a
// stored task must still be checked even if an older validation let it in.
func parseTiming(t api.Task, strict bool) (timing, error) {
	tm := timing{interval: DefaultInterval, timeout: DefaultTimeout, grace: DefaultGrace, threshold: DefaultThreshold}
	var err error
	if t.HealthCheckInterval != "" {
		if tm.interval, err = parseDuration("HealthCheckInterval", t.HealthCheckInterval); err != nil {
			return timing{}, err
		}
		if tm.interval < MinInterval || tm.interval > MaxInterval {
			return timing{}, invalid("HealthCheckInterval %s must be from %s to %s", tm.interval, MinInterval, MaxInterval)
		}
	}
	if t.HealthCheckTimeout != "" {
		if tm.timeout, err = parseDuration("HealthCheckTimeout", t.HealthCheckTimeout); err != nil {
			return timing{}, err
		}
		if tm.timeout <= 0 {
			return timing{}, invalid("HealthCheckTimeout %s must be greater than 0", tm.timeout)
		}
		if tm.timeout > tm.interval && !strict {
			tm.timeout = tm.interval
		}
		if tm.timeout > tm.interval {
			return timing{}, invalid("HealthCheckTimeout (%s) cannot be larger than HealthCheckInterval (%s)", tm.timeout, tm.interval)
		}
	} else {
		tm.timeout = min(tm.timeout, tm.interval)
	}
	if t.HealthCheckGrace != "" {
		if tm.grace, err = parseDuration("HealthCheckGrace", t.HealthCheckGrace); err != nil {
			return timing{}, err
		}
		if tm.grace < 0 || tm.grace > MaxGrace {
			return timing{}, invalid("HealthCheckGrace %s must be from 0s to %s", tm.grace, MaxGrace)
		}
	}
	switch {
	case t.HealthCheckThreshold < 0 || t.HealthCheckThreshold > MaxThreshold:
		return timing{}, invalid("HealthCheckThreshold %d must be from 0 (the default, %d) to %d", t.HealthCheckThreshold, DefaultThreshold, MaxThreshold)
	case t.HealthCheckThreshold > 0:
		tm.threshold = t.HealthCheckThreshold
	}
	return tm, nil
}

// parseDuration parses a Go duration, naming the field when it does not parse.
func parseDuration(field, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, invalid("%s %q is not a Go duration such as \"5s\" or \"500ms\"", field, v)
	}
	return d, nil
}
