package api

import (
	"fmt"
	"path"
	"slices"
	"strings"
)

// This file holds what a task may ask for beyond an ordinary container
// (privileged mode, the host network, host mounts, capabilities) and the
// rules that decide whether a worker allows it. Both sides use them: the
// worker refuses a task its configuration does not allow, and the leader
// places a task only on a worker whose gossiped allowances cover it, so the
// two can never disagree about what "allowed" means.

// NetworkHost is the one NetworkMode a task may ask for besides Docker's
// default bridge (""): the container shares the host's network stack.
const NetworkHost = "host"

// Limits on the escalation fields of a task.
const (
	// MaxMounts bounds Task.Mounts.
	MaxMounts = 32
	// MaxMountLen bounds one Task.Mounts entry, in bytes.
	MaxMountLen = 1024
	// MaxCapAdd bounds Task.CapAdd: there are only so many capabilities.
	MaxCapAdd = 64
)

// capabilities are the Linux capability names (without CAP_) Cube knows, as
// of Linux 6.x (capability.h, 0 to 40). A name outside this list is a typo
// or a kernel newer than Cube: either way Docker would refuse it later, with
// a worse message.
var capabilities = map[string]bool{
	"CHOWN": true, "DAC_OVERRIDE": true, "DAC_READ_SEARCH": true, "FOWNER": true,
	"FSETID": true, "KILL": true, "SETGID": true, "SETUID": true, "SETPCAP": true,
	"LINUX_IMMUTABLE": true, "NET_BIND_SERVICE": true, "NET_BROADCAST": true,
	"NET_ADMIN": true, "NET_RAW": true, "IPC_LOCK": true, "IPC_OWNER": true,
	"SYS_MODULE": true, "SYS_RAWIO": true, "SYS_CHROOT": true, "SYS_PTRACE": true,
	"SYS_PACCT": true, "SYS_ADMIN": true, "SYS_BOOT": true, "SYS_NICE": true,
	"SYS_RESOURCE": true, "SYS_TIME": true, "SYS_TTY_CONFIG": true, "MKNOD": true,
	"LEASE": true, "AUDIT_WRITE": true, "AUDIT_CONTROL": true, "SETFCAP": true,
	"MAC_OVERRIDE": true, "MAC_ADMIN": true, "SYSLOG": true, "WAKE_ALARM": true,
	"BLOCK_SUSPEND": true, "AUDIT_READ": true, "PERFMON": true, "BPF": true,
	"CHECKPOINT_RESTORE": true,
}

// dockerDefaultCaps are the capabilities Docker grants every container
// (moby's oci/caps.DefaultCapabilities). Naming one in CapAdd gives the task
// nothing it does not already have, so it needs no allowance; Nomad's
// allow_caps defaults to the same list for the same reason.
var dockerDefaultCaps = map[string]bool{
	"CHOWN": true, "DAC_OVERRIDE": true, "FSETID": true, "FOWNER": true,
	"MKNOD": true, "NET_RAW": true, "SETGID": true, "SETUID": true,
	"SETFCAP": true, "SETPCAP": true, "NET_BIND_SERVICE": true,
	"SYS_CHROOT": true, "KILL": true, "AUDIT_WRITE": true,
}

// ReasonNotAllowed begins the Reason of a task a worker refused because it
// asks for something (privileged mode, the host network, a host mount, a
// capability) the worker's configuration does not allow. The rest names
// what was asked and the cube worker flag that would allow it.
const ReasonNotAllowed = "not allowed: "

// AllCaps is the allowance value that lets tasks add any capability.
const AllCaps = "ALL"

// KnownCapability reports whether name is a Linux capability name as CapAdd
// takes it: upper-case, without the CAP_ prefix ("NET_ADMIN").
func KnownCapability(name string) bool { return capabilities[name] }

// DefaultCapability reports whether Docker grants capability name to every
// container anyway, so that adding it escalates nothing.
func DefaultCapability(name string) bool { return dockerDefaultCaps[name] }

// checkCapability explains why name is not a capability CapAdd takes.
func checkCapability(name string) error {
	switch {
	case KnownCapability(name):
		return nil
	case name == AllCaps:
		return fmt.Errorf("%q is not a capability; name each one the task needs, or ask for Privileged", name)
	}
	if norm := strings.TrimPrefix(strings.ToUpper(name), "CAP_"); KnownCapability(norm) {
		return fmt.Errorf("%q: write it %s (upper-case, without CAP_)", name, norm)
	}
	return fmt.Errorf("%q is not a Linux capability name (such as NET_ADMIN or SYS_PTRACE)", name)
}

// Mount is one parsed entry of Task.Mounts: a host path bound into the
// container, as Docker's "-v /host/path:/container/path[:ro]" binds it.
type Mount struct {
	// Host and Container are absolute, cleaned paths.
	Host      string
	Container string
	// ReadOnly is set by the ":ro" suffix.
	ReadOnly bool
}

// ParseMount parses a Task.Mounts entry, "/host/path:/container/path" with
// an optional ":ro" or ":rw". Both paths must be absolute and free of ".."
// elements (a path that climbs out is how a bind escapes an allowed
// directory); they are returned cleaned.
func ParseMount(s string) (Mount, error) {
	if len(s) > MaxMountLen {
		return Mount{}, fmt.Errorf("is longer than %d characters", MaxMountLen)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return Mount{}, fmt.Errorf("contains a NUL byte")
	}
	parts := strings.Split(s, ":")
	var m Mount
	switch {
	case len(parts) == 3 && parts[2] == "ro":
		m.ReadOnly = true
	case len(parts) == 3 && parts[2] == "rw":
	case len(parts) == 2:
	default:
		return Mount{}, fmt.Errorf("want /host/path:/container/path, optionally with :ro or :rw")
	}
	for i, p := range parts[:2] {
		which := [...]string{"host", "container"}[i]
		if !strings.HasPrefix(p, "/") {
			return Mount{}, fmt.Errorf("%s path %q is not absolute", which, p)
		}
		if slices.Contains(strings.Split(p, "/"), "..") {
			return Mount{}, fmt.Errorf("%s path %q contains \"..\"", which, p)
		}
	}
	m.Host, m.Container = path.Clean(parts[0]), path.Clean(parts[1])
	if m.Container == "/" {
		return Mount{}, fmt.Errorf("container path must not be / (the container's root)")
	}
	return m, nil
}

// Bind returns m in Docker's bind syntax, with cleaned paths.
func (m Mount) Bind() string {
	if m.ReadOnly {
		return m.Host + ":" + m.Container + ":ro"
	}
	return m.Host + ":" + m.Container
}

// PathUnder reports whether the clean absolute path p is prefix or lies
// beneath it, element by element: "/srv/data/x" is under "/srv/data",
// "/srv/data2" is not. Every path is under "/".
func PathUnder(p, prefix string) bool {
	prefix = path.Clean(prefix)
	if prefix == "/" {
		return strings.HasPrefix(p, "/")
	}
	return p == prefix || strings.HasPrefix(p, prefix+"/")
}

// Ask kinds: what a task may ask for beyond an ordinary container. Each is
// also the prefix of the gossip token of the matching allowance.
const (
	AskPrivileged  = "privileged"
	AskHostNetwork = "host-network"
	AskMount       = "mount"
	AskCap         = "cap"
)

// Ask is one thing a task asks for beyond an ordinary container.
type Ask struct {
	// Kind is one of AskPrivileged, AskHostNetwork, AskMount, AskCap.
	Kind string
	// Value is the cleaned host path of a mount (the entry as written if it
	// does not parse) or the name of a capability.
	Value string
}

// String names the ask for a person: "privileged tasks", "capability
// NET_ADMIN", to follow "does not allow".
func (k Ask) String() string {
	switch k.Kind {
	case AskPrivileged:
		return "privileged tasks"
	case AskHostNetwork:
		return "host-network tasks"
	case AskMount:
		return "binding host path " + k.Value
	case AskCap:
		return "capability " + k.Value
	}
	return k.Kind + " " + k.Value
}

// Field is the Task field the ask comes from.
func (k Ask) Field() string {
	switch k.Kind {
	case AskPrivileged:
		return "Privileged"
	case AskHostNetwork:
		return "NetworkMode"
	case AskMount:
		return "Mounts"
	}
	return "CapAdd"
}

// Flag is the cube worker flag that allows the ask.
func (k Ask) Flag() string {
	switch k.Kind {
	case AskPrivileged:
		return "--allow-privileged"
	case AskHostNetwork:
		return "--allow-host-network"
	case AskMount:
		return "--allow-mount " + k.Value
	}
	return "--allow-cap " + k.Value
}

// Asks returns what t asks for beyond an ordinary container, in a fixed
// order: privileged mode, the host network, each mount's host path, then
// each capability Docker does not grant by default. A task that asks for
// nothing gets nil.
func (t Task) Asks() []Ask {
	if !t.Privileged && t.NetworkMode == "" && len(t.Mounts) == 0 && len(t.CapAdd) == 0 {
		return nil
	}
	var out []Ask
	if t.Privileged {
		out = append(out, Ask{Kind: AskPrivileged})
	}
	if t.NetworkMode != "" {
		// Anything but "" is refused by Validate; an unvalidated one still
		// counts as asking for the host network, so it fails closed.
		out = append(out, Ask{Kind: AskHostNetwork})
	}
	for _, s := range t.Mounts {
		host := s
		if m, err := ParseMount(s); err == nil {
			host = m.Host
		}
		out = append(out, Ask{Kind: AskMount, Value: host})
	}
	for _, c := range t.CapAdd {
		if !DefaultCapability(c) {
			out = append(out, Ask{Kind: AskCap, Value: c})
		}
	}
	return out
}

// Allowances are what a worker lets its tasks ask for. The zero value
// allows nothing.
type Allowances struct {
	// Privileged allows Task.Privileged.
	Privileged bool
	// HostNetwork allows NetworkMode "host".
	HostNetwork bool
	// Mounts are the host path prefixes a task may bind: a mount's cleaned
	// host path must equal one or lie beneath it.
	Mounts []string
	// Caps are the capabilities a task may add; AllCaps ("ALL") allows any.
	Caps []string
}

// Allows reports whether a allows the ask k.
func (a Allowances) Allows(k Ask) bool {
	switch k.Kind {
	case AskPrivileged:
		return a.Privileged
	case AskHostNetwork:
		return a.HostNetwork
	case AskMount:
		// A value that is not an absolute clean path is an entry that did
		// not parse: nothing allows it.
		if !strings.HasPrefix(k.Value, "/") || path.Clean(k.Value) != k.Value {
			return false
		}
		for _, p := range a.Mounts {
			if strings.HasPrefix(p, "/") && PathUnder(k.Value, p) {
				return true
			}
		}
		return false
	case AskCap:
		return DefaultCapability(k.Value) || slices.Contains(a.Caps, AllCaps) ||
			(KnownCapability(k.Value) && slices.Contains(a.Caps, k.Value))
	}
	return false
}

// Missing returns the first thing t asks for that a does not allow.
func (a Allowances) Missing(t Task) (Ask, bool) {
	for _, k := range t.Asks() {
		if !a.Allows(k) {
			return k, true
		}
	}
	return Ask{}, false
}

// Tokens returns a in the compact form workers gossip and api.Node carries:
// "privileged", "host-network", "mount:/srv/data", "cap:NET_ADMIN" (or
// "cap:ALL"). Capabilities Docker grants anyway are left out.
func (a Allowances) Tokens() []string {
	var out []string
	if a.Privileged {
		out = append(out, AskPrivileged)
	}
	if a.HostNetwork {
		out = append(out, AskHostNetwork)
	}
	for _, p := range a.Mounts {
		out = append(out, AskMount+":"+path.Clean(p))
	}
	for _, c := range a.Caps {
		if !DefaultCapability(c) {
			out = append(out, AskCap+":"+c)
		}
	}
	return out
}

// ParseAllowances reads the tokens of Allowances.Tokens. A token it does
// not know (from a newer worker) allows nothing.
func ParseAllowances(tokens []string) Allowances {
	var a Allowances
	for _, tok := range tokens {
		kind, value, _ := strings.Cut(tok, ":")
		switch {
		case tok == AskPrivileged:
			a.Privileged = true
		case tok == AskHostNetwork:
			a.HostNetwork = true
		case kind == AskMount && strings.HasPrefix(value, "/"):
			a.Mounts = append(a.Mounts, path.Clean(value))
		case kind == AskCap && value != "":
			a.Caps = append(a.Caps, value)
		}
	}
	return a
}

// CheckAllowances checks a worker's allowances as an operator wrote them,
// naming the setting at fault (worker.Config's field and cube worker's
// flag): mount prefixes absolute and free of "..", capabilities known names
// or "ALL".
func CheckAllowances(a Allowances) error {
	for _, p := range a.Mounts {
		bad := func(why string) error {
			return fmt.Errorf("AllowMounts entry %q (--allow-mount): %s", p, why)
		}
		switch {
		case !strings.HasPrefix(p, "/"):
			return bad("want an absolute host path prefix such as /srv/data")
		case slices.Contains(strings.Split(p, "/"), ".."):
			return bad("the prefix must not contain \"..\"")
		case strings.ContainsAny(p, ":,\x00"):
			return bad("the prefix must not contain ':', ',' or NUL")
		}
	}
	for _, c := range a.Caps {
		if c == AllCaps {
			continue
		}
		if err := checkCapability(c); err != nil {
			return fmt.Errorf("AllowCaps entry (--allow-cap) %w", err)
		}
	}
	return nil
}

// validateEscalation checks the escalation fields of t: NetworkMode,
// Mounts and CapAdd. Privileged needs no check.
func (t *Task) validateEscalation() error {
	bad := func(format string, args ...any) error {
		return &ValidationError{Msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case t.NetworkMode != "" && t.NetworkMode != NetworkHost:
		return bad("NetworkMode %q is not \"\" (Docker's default bridge) or \"host\"", t.NetworkMode)
	case t.NetworkMode == NetworkHost && len(t.PortBindings) > 0:
		return bad("PortBindings do not apply with NetworkMode \"host\": the container binds the host's ports itself")
	case len(t.Mounts) > MaxMounts:
		return bad("Mounts has %d entries, at most %d are allowed", len(t.Mounts), MaxMounts)
	case len(t.CapAdd) > MaxCapAdd:
		return bad("CapAdd has %d entries, at most %d are allowed", len(t.CapAdd), MaxCapAdd)
	}
	dest := make(map[string]bool, len(t.Mounts))
	for _, s := range t.Mounts {
		m, err := ParseMount(s)
		if err != nil {
			return bad("Mounts entry %q: %v", s, err)
		}
		if dest[m.Container] {
			return bad("Mounts: container path %s is bound more than once", m.Container)
		}
		dest[m.Container] = true
	}
	for _, c := range t.CapAdd {
		if err := checkCapability(c); err != nil {
			return bad("CapAdd entry %v", err)
		}
	}
	return nil
}
