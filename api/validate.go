package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"unicode"
)

// MaxBodyBytes bounds every request body the APIs read; a larger body gets 413.
const MaxBodyBytes = 1 << 20

// MinMemory is the smallest memory limit the Docker engine accepts (6 MiB).
const MinMemory = 6 << 20

// Limits on free-form fields, so that one task cannot bloat the replicated state.
const (
	maxNameLen   = 256
	maxImageLen  = 512
	maxListItems = 256
	maxItemLen   = 4096
	maxPorts     = 64
	// maxContainerIDLen bounds a reported ContainerID (Docker's are 64 hex digits).
	maxContainerIDLen = 128
	// maxBindings bounds the host addresses one container port is
	// published on in a report (Docker publishes on one per IP family).
	maxBindings = 8
	// maxHostFieldLen bounds a reported HostIp or HostPort.
	maxHostFieldLen = 64
	// maxRestartsBound bounds MaxRestarts (beyond it, use -1: no limit).
	maxRestartsBound = 1_000_000
)

// MaxResourceBytes bounds a task's Memory and Disk (1 PiB): far beyond any
// machine, and low enough that the sums the scheduler and GET /nodes make
// stay exact for any realistic number of tasks (they saturate beyond, see
// AddBytes).
const MaxResourceBytes = 1 << 50

// AddBytes returns a+b for byte counts ≥ 0, saturating at math.MaxInt64
// instead of wrapping around to a negative number: a sum of allocations can
// only overstate what is used, never make room that is not there.
func AddBytes(a, b int64) int64 {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// AddCPU adds b cores to a, both counted in whole nanocores (0.1 + 0.2
// is 0.3, not 0.30000000000000004): the managers' allocation sums are kept
// that way (fsm.Nodes), so a sum built by adding tasks one at a time is
// the same number whatever the order, and equals the one the state holds.
func AddCPU(a, b float64) float64 {
	return float64(NanoCPU(a)+NanoCPU(b)) / 1e9
}

// NanoCPU is c cores in whole nanocores.
func NanoCPU(c float64) int64 { return int64(math.Round(c * 1e9)) }

// Restart policies Cube understands.
var restartPolicies = map[string]bool{"": true, "no": true, "on-failure": true, "always": true, "unless-stopped": true}

// DecodeTaskEvent reads one TaskEvent from r, refusing unknown fields, trailing
// data and wrong types with a message a person can act on. It does not
// validate values; call Validate for that.
func DecodeTaskEvent(r io.Reader) (TaskEvent, error) {
	var ev TaskEvent
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		return TaskEvent{}, describeJSONError(err)
	}
	if dec.More() {
		return TaskEvent{}, &ValidationError{Msg: "request body holds more than one JSON value"}
	}
	if _, err := dec.Token(); err != io.EOF {
		return TaskEvent{}, &ValidationError{Msg: "request body holds data after the JSON value"}
	}
	return ev, nil
}

// describeJSONError turns encoding/json's errors into messages that name the
// field and what was wrong with it.
func describeJSONError(err error) error {
	var (
		syntax   *json.SyntaxError
		typ      *json.UnmarshalTypeError
		maxBytes *http.MaxBytesError
	)
	switch {
	case errors.Is(err, io.EOF):
		return &ValidationError{Msg: "request body is empty; expected a JSON TaskEvent"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &ValidationError{Msg: "request body ends in the middle of a JSON value"}
	case errors.As(err, &syntax):
		return &ValidationError{Msg: fmt.Sprintf("malformed JSON at byte %d: %v", syntax.Offset, syntax)}
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "request body"
		}
		return &ValidationError{Msg: fmt.Sprintf("field %s: expected %s, got JSON %s", field, typ.Type, typ.Value)}
	case errors.As(err, &maxBytes):
		return err // the handler answers 413
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if strings.Contains(msg, "UUID") {
		msg = "invalid ID: " + msg + " (expected a UUID such as 266592cd-960d-4091-981c-8c25c44b1018)"
	}
	return &ValidationError{Msg: msg}
}

// ValidationError is bad input: the API answers it with 400 and its message.
type ValidationError struct{ Msg string }

func (e *ValidationError) Error() string { return e.Msg }

// Validate checks the event's own fields and its task.
func (ev *TaskEvent) Validate() error {
	if !ev.State.Valid() {
		return &ValidationError{Msg: fmt.Sprintf("State %d is not a task state (0 Pending … 4 Failed)", ev.State)}
	}
	return ev.Task.Validate()
}

// Validate checks a submitted task and returns the first problem found, worded
// so that a person knows which field to fix and how. The health-check timing
// fields are checked by the manager (package health), which interprets them.
func (t *Task) Validate() error {
	bad := func(format string, args ...any) error {
		return &ValidationError{Msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case strings.TrimSpace(t.Image) == "":
		return bad("Image is required")
	case len(t.Image) > maxImageLen:
		return bad("Image is longer than %d characters", maxImageLen)
	case strings.IndexFunc(t.Image, unicode.IsSpace) >= 0:
		return bad("Image %q contains white space", t.Image)
	case len(t.Name) > maxNameLen:
		return bad("Name is longer than %d characters", maxNameLen)
	case len(t.Service) > maxNameLen:
		return bad("Service is longer than %d characters", maxNameLen)
	case !t.State.Valid():
		return bad("Task.State %d is not a task state (0 Pending … 4 Failed)", t.State)
	case !t.DesiredState.Valid():
		return bad("DesiredState %d is not a task state (0 Pending … 4 Failed)", t.DesiredState)
	case math.IsNaN(t.Cpu) || math.IsInf(t.Cpu, 0) || t.Cpu < 0:
		return bad("Cpu must be a number of cores ≥ 0, got %v", t.Cpu)
	case t.Cpu > 1024:
		return bad("Cpu %v is more cores than any machine has (max 1024)", t.Cpu)
	case t.Memory < 0:
		return bad("Memory must be ≥ 0 bytes, got %d", t.Memory)
	case t.Memory > 0 && t.Memory < MinMemory:
		return bad("Memory %d is below Docker's minimum of %d bytes (6 MiB); use 0 for no limit", t.Memory, MinMemory)
	case t.Memory > MaxResourceBytes:
		return bad("Memory %d is above the bound of %d bytes (1 PiB)", t.Memory, int64(MaxResourceBytes))
	case t.Disk < 0:
		return bad("Disk must be ≥ 0 bytes, got %d", t.Disk)
	case t.Disk > MaxResourceBytes:
		return bad("Disk %d is above the bound of %d bytes (1 PiB)", t.Disk, int64(MaxResourceBytes))
	case len(t.HealthCheckPort) > maxNameLen || len(t.HealthCheckInterval) > maxNameLen ||
		len(t.HealthCheckTimeout) > maxNameLen || len(t.HealthCheckGrace) > maxNameLen:
		return bad("HealthCheckPort, HealthCheckInterval, HealthCheckTimeout and HealthCheckGrace are at most %d characters each", maxNameLen)
	case t.MaxRestarts > maxRestartsBound:
		return bad("MaxRestarts %d is above the bound of %d; use -1 for no limit", t.MaxRestarts, maxRestartsBound)
	case t.Generation > MaxGeneration:
		return bad("Generation %d is above the bound of %d (MaxGeneration, 2^53)", t.Generation, uint64(MaxGeneration))
	case t.RestartCount < 0:
		return bad("RestartCount must be ≥ 0, got %d", t.RestartCount)
	case !restartPolicies[t.RestartPolicy]:
		return bad("RestartPolicy %q is not one of \"no\", \"on-failure\", \"always\", \"unless-stopped\"", t.RestartPolicy)
	case t.HealthCheck != "" && t.HealthCheck != "tcp" && !strings.HasPrefix(t.HealthCheck, "/"):
		return bad("HealthCheck %q must be an HTTP path starting with / or \"tcp\"", t.HealthCheck)
	case t.MaxRestarts < -1:
		return bad("MaxRestarts %d must be -1 (no limit), 0 (the default, 3) or more", t.MaxRestarts)
	case len(t.HealthCheck) > maxItemLen:
		return bad("HealthCheck is longer than %d characters", maxItemLen)
	case len(t.ExposedPorts) > maxPorts:
		return bad("ExposedPorts has %d entries, at most %d are allowed", len(t.ExposedPorts), maxPorts)
	case len(t.PortBindings) > maxPorts:
		return bad("PortBindings has %d entries, at most %d are allowed", len(t.PortBindings), maxPorts)
	}
	for k := range t.ExposedPorts {
		if err := checkPortProto(k); err != nil {
			return bad("ExposedPorts key %q is not port/proto: %v", k, err)
		}
	}
	for k, v := range t.PortBindings {
		if err := checkPortProto(k); err != nil {
			return bad("PortBindings key %q is not port/proto: %v", k, err)
		}
		if _, ok := t.ExposedPorts[k]; !ok {
			return bad("PortBindings key %q is not in ExposedPorts; expose the port too", k)
		}
		if err := checkHostPort(v); err != nil {
			return bad("PortBindings[%q] = %q: %v", k, v, err)
		}
	}
	if err := t.validateEscalation(); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		list []string
	}{{"Constraints", t.Constraints}, {"Prefer", t.Prefer}} {
		if _, err := ParseConstraints(f.name, f.list); err != nil {
			return bad("%v", err)
		}
	}
	if err := checkList("Env", t.Env); err != nil {
		return err
	}
	for _, e := range t.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return bad("Env entry %q is not KEY=VALUE", e)
		}
	}
	return checkList("Cmd", t.Cmd)
}

// ValidateSubmission is Validate plus bounds on the fields the cluster
// sets (Worker, LastWorker, ContainerID, Reason, History): a submission may carry
// them, as GET /tasks returns them, but they are reset when the task is
// stored, so an oversized one is refused rather than silently dropped.
// The worker's API does not apply it: a task the leader dispatches carries
// the cluster's own values.
func (t *Task) ValidateSubmission() error {
	if err := t.Validate(); err != nil {
		return err
	}
	bad := func(format string, args ...any) error {
		return &ValidationError{Msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case len(t.Worker) > maxNameLen:
		return bad("Worker is longer than %d characters (it is set by the cluster; leave it empty)", maxNameLen)
	case len(t.LastWorker) > maxNameLen:
		return bad("LastWorker is longer than %d characters (it is set by the cluster; leave it empty)", maxNameLen)
	case len(t.ContainerID) > maxContainerIDLen:
		return bad("ContainerID is longer than %d characters (it is set by the worker; leave it empty)", maxContainerIDLen)
	case len(t.Reason) > maxItemLen:
		return bad("Reason is longer than %d characters (it is set by the cluster; leave it empty)", maxItemLen)
	case len(t.History) > MaxTaskHistory:
		return bad("History has %d entries, at most %d (it is set by the cluster; leave it out)", len(t.History), MaxTaskHistory)
	}
	for _, h := range t.History {
		if len(h.Reason) > maxItemLen || len(h.Worker) > maxNameLen {
			return bad("a History entry's Reason or Worker is too long (History is set by the cluster; leave it out)")
		}
	}
	return nil
}

// ValidateReport checks the fields of a worker's report that the cluster
// stores (State, ContainerID, HostPorts, Reason and the worker's name), so
// that no report can bloat the replicated state; the rest of a report is
// not stored.
func (t *Task) ValidateReport() error {
	bad := func(format string, args ...any) error {
		return &ValidationError{Msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case !t.State.Valid():
		return bad("State %d is not a task state (0 Pending … 4 Failed)", t.State)
	case len(t.Worker) > maxNameLen:
		return bad("report Worker is longer than %d characters", maxNameLen)
	case len(t.ContainerID) > maxContainerIDLen:
		return bad("report ContainerID is longer than %d characters", maxContainerIDLen)
	case len(t.Reason) > maxItemLen:
		return bad("report Reason is longer than %d characters", maxItemLen)
	case len(t.HostPorts) > maxPorts:
		return bad("report HostPorts has %d entries, at most %d are allowed", len(t.HostPorts), maxPorts)
	case t.Generation > MaxGeneration:
		return bad("report Generation %d is above the bound of %d (MaxGeneration, 2^53)", t.Generation, uint64(MaxGeneration))
	}
	for k, bs := range t.HostPorts {
		if err := checkPortProto(k); err != nil {
			return bad("report HostPorts key %q is not port/proto: %v", k, err)
		}
		if len(bs) > maxBindings {
			return bad("report HostPorts[%q] has %d bindings, at most %d are allowed", k, len(bs), maxBindings)
		}
		for _, b := range bs {
			if len(b.HostIp) > maxHostFieldLen || len(b.HostPort) > maxHostFieldLen {
				return bad("report HostPorts[%q] has a HostIp or HostPort longer than %d characters", k, maxHostFieldLen)
			}
		}
	}
	return nil
}

func checkList(field string, l []string) error {
	if len(l) > maxListItems {
		return &ValidationError{Msg: fmt.Sprintf("%s has %d entries, at most %d are allowed", field, len(l), maxListItems)}
	}
	for _, s := range l {
		if len(s) > maxItemLen {
			return &ValidationError{Msg: fmt.Sprintf("%s entry is longer than %d characters", field, maxItemLen)}
		}
		if strings.IndexByte(s, 0) >= 0 {
			return &ValidationError{Msg: fmt.Sprintf("%s entry %q contains a NUL byte", field, s)}
		}
	}
	return nil
}

// checkPortProto checks a "port/proto" key such as "7777/tcp".
func checkPortProto(k string) error {
	port, proto, ok := strings.Cut(k, "/")
	if !ok {
		return errors.New("want a form like \"7777/tcp\"")
	}
	switch proto {
	case "tcp", "udp", "sctp":
	default:
		return fmt.Errorf("protocol %q is not tcp, udp or sctp", proto)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return nil
}

// checkHostPort checks a PortBindings value: "" (random), "8080" or "127.0.0.1:8080".
func checkHostPort(v string) error {
	if v == "" {
		return nil
	}
	port := v
	if strings.Contains(v, ":") {
		host, p, err := net.SplitHostPort(v)
		if err != nil {
			return fmt.Errorf("want \"PORT\" or \"IP:PORT\": %v", err)
		}
		if net.ParseIP(host) == nil {
			return fmt.Errorf("host %q is not an IP address", host)
		}
		port = p
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("host port %q is not a number from 0 to 65535", port)
	}
	return nil
}

// EncodeJSON marshals v for a response body; it never fails for the API's types.
func EncodeJSON(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	if err := enc.Encode(v); err != nil {
		return []byte(fmt.Sprintf("{\"HTTPStatusCode\":500,\"Message\":%q}\n", err.Error()))
	}
	return buf.Bytes()
}
