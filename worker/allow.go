package worker

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/cube-orch/cube/api"
)

// maxAllowBytes bounds the JSON of the allowance tokens a worker gossips:
// memberlist carries at most 512 bytes of metadata per node, and the
// worker's address and capacity need the rest.
const maxAllowBytes = 256

// allowances returns what c lets tasks ask for.
func (c Config) allowances() api.Allowances {
	return api.Allowances{
		Privileged:  c.AllowPrivileged,
		HostNetwork: c.AllowHostNetwork,
		Mounts:      c.AllowMounts,
		Caps:        c.AllowCaps,
	}
}

// AllowTokens returns the allowances the worker gossips (see
// api.Allowances.Tokens); nil when it allows nothing.
func (c Config) AllowTokens() []string { return c.allowances().Tokens() }

// validateAllows checks the Allow* fields, and that they fit in the gossip
// metadata.
func (c Config) validateAllows() error {
	if err := api.CheckAllowances(c.allowances()); err != nil {
		return err
	}
	b, _ := json.Marshal(c.AllowTokens())
	if len(b) > maxAllowBytes {
		return fmt.Errorf("AllowMounts and AllowCaps take %d bytes of gossip metadata, at most %d fit (memberlist's limit is 512 bytes per node): allow fewer, broader mount prefixes, or ALL capabilities", len(b), maxAllowBytes)
	}
	return nil
}

// refusal returns the Reason a task is refused with, or "" when this worker
// allows everything it asks for. A mount is checked twice: its cleaned path
// against the allowed prefixes (as the leader checks it), then its path
// with symbolic links resolved against the resolved prefixes, so that a
// link under an allowed directory cannot bind what lies outside it.
// (Docker resolves the path again when it mounts; whoever may create links
// under an allowed directory between the two is trusted with it anyway.)
func (w *Worker) refusal(t api.Task) string {
	if t.Asks() == nil {
		return ""
	}
	if k, missing := w.cfg.allowances().Missing(t); missing {
		return fmt.Sprintf("%sworker %s does not allow %s, which the task asks for in %s (start the worker with %s)",
			api.ReasonNotAllowed, w.name, k, k.Field(), k.Flag())
	}
	for _, s := range t.Mounts {
		m, err := api.ParseMount(s)
		if err != nil {
			return fmt.Sprintf("%sMounts entry %q: %v", api.ReasonNotAllowed, s, err)
		}
		real := resolveExisting(m.Host)
		if !underAny(real, w.cfg.AllowMounts) {
			return fmt.Sprintf("%shost path %s resolves to %s through a symbolic link, outside what worker %s allows (--allow-mount %s)",
				api.ReasonNotAllowed, m.Host, real, w.name, strings.Join(w.cfg.AllowMounts, ", "))
		}
	}
	return ""
}

// underAny reports whether the resolved path p lies under one of the
// prefixes, each resolved too (an allowed prefix may itself be a link).
func underAny(p string, prefixes []string) bool {
	for _, pre := range prefixes {
		if api.PathUnder(p, resolveExisting(filepath.Clean(pre))) {
			return true
		}
	}
	return false
}

// resolveExisting returns the absolute clean path p with every symbolic
// link resolved, as far as p exists: the longest existing ancestor is
// resolved and the rest joined to it, because Docker creates a missing bind
// source beneath whatever its existing part points to.
func resolveExisting(p string) string {
	rest := ""
	for cur := p; ; cur = filepath.Dir(cur) {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(r, rest)
		}
		if cur == "/" || cur == "." {
			return p
		}
		rest = filepath.Join(filepath.Base(cur), rest)
	}
}

// binds returns a task's Mounts in Docker's bind syntax, cleaned; entries
// that do not parse (which validation refuses) are left out.
func binds(mounts []string) []string {
	var out []string
	for _, s := range mounts {
		if m, err := api.ParseMount(s); err == nil {
			out = append(out, m.Bind())
		}
	}
	return out
}
