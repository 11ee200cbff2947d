package health

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// Kinds of check.
const (
	// KindHTTP is an HTTP GET of Spec.Path on Spec.Addr; any 2xx answer is a
	// success, any other answer or a connection error a failure (the seed's rule).
	KindHTTP = "http"
	// KindTCP is a TCP connect to Spec.Addr; an accepted connection is a
	// success. Through Docker's userland proxy (docker-proxy) a connect to a
	// published port can succeed while the app inside does not listen yet;
	// prefer an HTTP check where the app has one.
	KindTCP = "tcp"
)

// Defaults used when the task leaves a field empty.
const (
	// DefaultInterval is the time between two probes of one check.
	DefaultInterval = 5 * time.Second
	// DefaultTimeout bounds one probe. When the task sets an Interval shorter
	// than this and no Timeout, the timeout is the interval.
	DefaultTimeout = 2 * time.Second
	// DefaultGrace is the start-up time during which no verdict is given.
	DefaultGrace = 2 * time.Second
	// DefaultThreshold is the number of consecutive failures that make a task
	// unhealthy.
	DefaultThreshold = 3
)

// Bounds that ValidateTask and SpecFor enforce on a task's health fields.
const (
	// MinInterval is the shortest interval allowed: shorter ones would turn
	// health checking into load.
	MinInterval = 100 * time.Millisecond
	// MaxInterval is the longest interval allowed.
	MaxInterval = time.Hour
	// MaxGrace is the longest start-up grace allowed.
	MaxGrace = time.Hour
	// MaxThreshold is the largest failure threshold allowed.
	MaxThreshold = 100
)

// ErrNoHostPort means the container port to probe has no usable published
// host port (yet): typically the worker has not reported HostPorts for the
// running container. It is not a configuration error; derive the spec again
// once the worker reports the task.
var ErrNoHostPort = errors.New("no published host port")

// Spec is one task's check, derived from the task by SpecFor. Checks are per
// placement: a new Generation is a new check, with fresh counters.
type Spec struct {
	// TaskID is the task checked.
	TaskID uuid.UUID
	// Generation is the task's placement the check belongs to; every Result
	// carries it so that the owner can discard a verdict about an older
	// placement.
	Generation uint64
	// Kind is KindHTTP or KindTCP.
	Kind string
	// Addr is the host:port probed.
	Addr string
	// Path is the HTTP path (and optional query) requested; KindHTTP only.
	Path string
	// Interval is the time between the starts of two probes.
	Interval time.Duration
	// Timeout bounds one probe, connection included.
	Timeout time.Duration
	// ConnectTimeout, when set below Timeout, bounds the TCP connect alone:
	// a machine that is powered off answers no SYN, where a live one on a LAN
	// connects in well under a millisecond, so a short connect bound tells
	// the two apart fast without cutting a slow answer short.
	ConnectTimeout time.Duration
	// Grace is the start-up time after StartedAt during which no probe runs,
	// so that no failure counts.
	Grace time.Duration
	// Threshold is the number of consecutive failures after which the task is
	// reported unhealthy.
	Threshold int
	// StartedAt is when the container started; the first probe runs at
	// StartedAt+Grace. Zero: the grace counts from when the check starts.
	StartedAt time.Time
	// SourceIP, if set, is the local address probes leave from.
	SourceIP string
}

// dialer returns the dialer of the spec's probes.
func (s Spec) dialer() *net.Dialer {
	d := &net.Dialer{Timeout: s.Timeout}
	if s.ConnectTimeout > 0 && s.ConnectTimeout < s.Timeout {
		d.Timeout = s.ConnectTimeout
	}
	if ip := net.ParseIP(s.SourceIP); ip != nil {
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	return d
}

// same reports whether two specs describe the same check. StartedAt is
// compared with Equal: a time decoded from JSON and the same time read from
// memory differ in their monotonic reading and location, not in meaning.
func (s Spec) same(o Spec) bool {
	return s.TaskID == o.TaskID && s.Generation == o.Generation && s.Kind == o.Kind &&
		s.Addr == o.Addr && s.Path == o.Path && s.Interval == o.Interval &&
		s.Timeout == o.Timeout && s.ConnectTimeout == o.ConnectTimeout && s.Grace == o.Grace && s.Threshold == o.Threshold &&
		s.StartedAt.Equal(o.StartedAt) && s.SourceIP == o.SourceIP
}

// SpecFor derives the check of a running task placed on the worker whose API
// is at workerAPI (host:port; only the host is used, to reach the task's
// published port). It returns ok=false and no error when the task has no
// health check (HealthCheck is "").
//
// The probed container port is HealthCheckPort, or else the numerically
// lowest exposed TCP port that has a published host port. Among that port's
// bindings the choice is deterministic, so that calling SpecFor on every pass
// yields an equal Spec: IPv4 bindings (HostIp "", "0.0.0.0" or an IPv4
// address) before IPv6 ones, then the lowest host port. The probe goes to
// the worker's host, unless the binding names a specific address, which is
// then used as is. A worker host of "", "0.0.0.0" or "::" means this machine
// (127.0.0.1), as Go's dialer treats it.
//
// SpecFor applies ValidateTask's rules except one: a HealthCheckTimeout
// longer than the interval is cut to the interval rather than refused, so
// that a task stored before stricter validation is still checked.
//
// The error wraps ErrNoHostPort when the port has no usable binding (yet);
// any other error is a *api.ValidationError naming the bad field.
func SpecFor(t api.Task, workerAPI string) (Spec, bool, error) {
	if t.HealthCheck == "" {
		return Spec{}, false, nil
	}
	kind, path, err := kindOf(t.HealthCheck)
	if err != nil {
		return Spec{}, false, err
	}
	tm, err := parseTiming(t, false)
	if err != nil {
		return Spec{}, false, err
	}
	host, err := workerHost(workerAPI)
	if err != nil {
		return Spec{}, false, err
	}
	port, b, err := choosePort(t)
	if err != nil {
		return Spec{}, false, err
	}
	if ip := net.ParseIP(b.hostIP); ip != nil && !ip.IsUnspecified() {
		host = ip.String()
	}
	return Spec{
		TaskID:     t.ID,
		Generation: t.Generation,
		Kind:       kind,
		Addr:       net.JoinHostPort(host, strconv.Itoa(port)),
		Path:       path,
		Interval:   tm.interval,
		Timeout:    tm.timeout,
		Grace:      tm.grace,
		Threshold:  tm.threshold,
		StartedAt:  t.StartTime,
	}, true, nil
}

// kindOf maps a task's HealthCheck to a kind and an HTTP path.
func kindOf(hc string) (kind, path string, err error) {
	switch {
	case hc == KindTCP:
		return KindTCP, "", nil
	case strings.HasPrefix(hc, "/"):
		if err := checkPath(hc); err != nil {
			return "", "", invalid("HealthCheck %q: %v", hc, err)
		}
		return KindHTTP, hc, nil
	}
	return "", "", invalid("HealthCheck %q is neither \"tcp\" nor an HTTP path starting with /", hc)
}

// workerHost returns the host part of a worker's API address. A scheme
// ("http://") and a path are tolerated; an unspecified host means this machine.
func workerHost(addr string) (string, error) {
	a := addr
	if i := strings.Index(a, "://"); i >= 0 {
		a = a[i+3:]
	}
	if i := strings.IndexByte(a, '/'); i >= 0 {
		a = a[:i]
	}
	host, _, err := net.SplitHostPort(a)
	if err != nil {
		// A bare host (no port) is accepted too.
		host = strings.TrimSuffix(strings.TrimPrefix(a, "["), "]")
		if host == "" || (strings.Contains(a, ":") && net.ParseIP(host) == nil) {
			return "", invalid("worker API address %q is not host:port", addr)
		}
	}
	if host == "" {
		return "127.0.0.1", nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return "127.0.0.1", nil
	}
	return host, nil
}

// binding is a usable published address of a container port.
type binding struct {
	hostIP string
	port   int
	ipv4   bool
}

// usableBindings returns the bindings of one container port that can be
// probed, in the order of preference: IPv4 first, then the lowest host port,
// then the address (only to make the order total).
func usableBindings(list []api.PortBinding) []binding {
	var out []binding
	for _, b := range list {
		p, err := strconv.Atoi(b.HostPort)
		if err != nil || p < 1 || p > 65535 {
			continue // not published (yet)
		}
		v4 := b.HostIp == ""
		if !v4 {
			ip := net.ParseIP(b.HostIp)
			if ip == nil {
				continue
			}
			v4 = ip.To4() != nil && !strings.Contains(b.HostIp, ":")
		}
		out = append(out, binding{hostIP: b.HostIp, port: p, ipv4: v4})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ipv4 != out[j].ipv4 {
			return out[i].ipv4
		}
		if out[i].port != out[j].port {
			return out[i].port < out[j].port
		}
		return out[i].hostIP < out[j].hostIP
	})
	return out
}

// choosePort picks the host port to probe: the named HealthCheckPort's, or
// the lowest exposed TCP port that has a usable binding.
func choosePort(t api.Task) (int, binding, error) {
	if t.HealthCheckPort != "" {
		if _, err := tcpPort(t.HealthCheckPort); err != nil {
			return 0, binding{}, invalid("HealthCheckPort %q: %v", t.HealthCheckPort, err)
		}
		bs := usableBindings(t.HostPorts[t.HealthCheckPort])
		if len(bs) == 0 {
			return 0, binding{}, fmt.Errorf("HealthCheckPort %s: %w", t.HealthCheckPort, ErrNoHostPort)
		}
		return bs[0].port, bs[0], nil
	}
	// Candidates: every TCP port the task exposes or has published. A
	// published port is exposed by nature; taking both guards against a task
	// record whose ExposedPorts was dropped on the way.
	type cand struct {
		key  string
		port int
	}
	var cands []cand
	seen := map[string]bool{}
	add := func(k string) {
		if seen[k] {
			return
		}
		seen[k] = true
		if n, err := tcpPort(k); err == nil {
			cands = append(cands, cand{k, n})
		}
	}
	for k := range t.ExposedPorts {
		add(k)
	}
	for k := range t.HostPorts {
		add(k)
	}
	if len(cands) == 0 {
		return 0, binding{}, invalid("HealthCheck %q needs a TCP port to probe, but the task exposes none; add one to ExposedPorts (for example \"7777/tcp\")", t.HealthCheck)
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].port < cands[j].port })
	for _, c := range cands {
		if bs := usableBindings(t.HostPorts[c.key]); len(bs) > 0 {
			return bs[0].port, bs[0], nil
		}
	}
	return 0, binding{}, fmt.Errorf("no exposed TCP port of the task: %w", ErrNoHostPort)
}

// tcpPort parses a "port/tcp" key and returns the port number.
func tcpPort(k string) (int, error) {
	p, proto, ok := strings.Cut(k, "/")
	if !ok {
		return 0, errors.New("want port/proto, for example \"7777/tcp\"")
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", p)
	}
	if proto != "tcp" {
		return 0, fmt.Errorf("protocol %q cannot be checked; health checks probe TCP ports", proto)
	}
	return n, nil
}

func invalid(format string, args ...any) error {
	return &api.ValidationError{Msg: fmt.Sprintf(format, args...)}
}
