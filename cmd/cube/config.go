package main

import (
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/spf13/pflag"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// This file reads the agent config file of cube manager and cube worker:
// one HCL file per node, laid out as Nomad's and Consul's agent files are
// (bind_addr, ports { }, advertise { }, data_dir, ...). It is wiring only:
// every key of the file sets one of the command's flags, through the flag's
// own parser, so the file, the environment and the command line fill the
// same configs and are checked the same way. Precedence, lowest first:
// the flags' defaults, the file, CUBE_* environment variables, flags given
// on the command line.

// fileSchema is the config file of one kind of node.
type fileSchema struct {
	// keys are the top-level attributes, each setting one flag.
	keys []fileKey
	// listens are the addresses built from bind_addr and ports { NAME = N }:
	// each sets the flag of the same NAME to bind_addr:port.
	listens []string
	// advertise are the keys of advertise { NAME = "HOST:PORT" }; each sets
	// the flag advertise-NAME.
	advertise []string
	// env are the flags a CUBE_<FLAG> environment variable sets.
	env []string
}

// fileKey is a top-level attribute of the file and the flag it sets.
type fileKey struct {
	key  string
	flag string
	typ  cty.Type
}

var (
	strList = cty.List(cty.String)

	// managerFile is the file of cube manager (examples/manager.hcl).
	managerFile = fileSchema{
		keys: []fileKey{
			{"id", "id", cty.String},
			{"data_dir", "data", cty.String},
			{"advertise_addr", "advertise", cty.String},
			{"peers", "peers", strList},
			{"join", "join", strList},
			{"fast", "fast", cty.Bool},
			{"scheduler", "scheduler", cty.String},
			{"gc_interval", "gc-interval", cty.String},
			{"task_gc_threshold", "task-gc-threshold", cty.String},
			{"worker_gc_threshold", "worker-gc-threshold", cty.String},
			{"max_tasks", "max-tasks", cty.Number},
			{"max_event_streams", "max-event-streams", cty.Number},
			{"scheduled_timeout", "scheduled-timeout", cty.String},
			{"source_ip", "source-ip", cty.String},
			{"log_level", "log-level", cty.String},
			{"log_format", "log-format", cty.String},
			{"pprof_addr", "pprof", cty.String},
			{"encrypt", "encrypt", cty.String},
			{"insecure", "insecure", cty.Bool},
			{"bootstrap_token_file", "bootstrap-token-file", cty.String},
		},
		listens:   []string{"http", "raft", "gossip"},
		advertise: []string{"http", "raft", "gossip"},
		env: []string{"id", "data", "http", "raft", "gossip", "advertise", "advertise-http",
			"advertise-raft", "advertise-gossip", "peers", "join", "log-level", "log-format",
			"ca-file", "cert-file", "key-file", "encrypt", "bootstrap-token-file"},
	}

	// workerFile is the file of cube worker (examples/worker.hcl).
	workerFile = fileSchema{
		keys: []fileKey{
			{"name", "name", cty.String},
			{"data_dir", "data", cty.String},
			{"advertise_addr", "advertise", cty.String},
			{"join", "join", strList},
			{"managers", "managers", strList},
			{"fast", "fast", cty.Bool},
			{"cpu", "cpu", cty.Number},
			{"memory", "memory", cty.Number},
			{"disk", "disk", cty.Number},
			{"stop_grace", "stop-grace", cty.String},
			{"poll_interval", "poll-interval", cty.String},
			{"keep_ended", "keep-ended", cty.String},
			{"start_timeout", "start-timeout", cty.String},
			{"allow_privileged", "allow-privileged", cty.Bool},
			{"allow_host_network", "allow-host-network", cty.Bool},
			{"allow_mounts", "allow-mount", strList},
			{"allow_caps", "allow-cap", strList},
			{"labels", "label", strList},
			{"source_ip", "source-ip", cty.String},
			{"log_level", "log-level", cty.String},
			{"log_format", "log-format", cty.String},
			{"pprof_addr", "pprof", cty.String},
			{"encrypt", "encrypt", cty.String},
			{"insecure", "insecure", cty.Bool},
		},
		listens:   []string{"http", "gossip"},
		advertise: []string{"http", "gossip"},
		env: []string{"name", "data", "http", "gossip", "advertise", "advertise-http",
			"advertise-gossip", "join", "log-level", "log-format", "ca-file", "cert-file", "key-file", "encrypt"},
	}
)

// tlsKeys are the keys of the tls { } block, as Nomad's: each sets the flag
// of the same name with '-' for '_' (ca_file sets --ca-file).
var tlsKeys = []string{"ca_file", "cert_file", "key_file"}

// envName is the environment variable that sets flag: CUBE_LOG_LEVEL for
// log-level.
func envName(flag string) string {
	return "CUBE_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// envHelp lists the environment variables of s and the flags they set,
// for --help.
func envHelp(s fileSchema) string {
	var b strings.Builder
	for _, f := range s.env {
		fmt.Fprintf(&b, "\n  %-24s --%s", envName(f), f)
	}
	return b.String()
}

// setting is one flag value read from the file, with where it was read.
type setting struct {
	flag, value string
	key         string
	rng         hcl.Range
}

// applyConfig fills the flags of fs not given on the command line: from the
// file at path (if any), then from the environment (lookupEnv), which
// overrides the file. An empty variable counts as unset.
func applyConfig(fs *pflag.FlagSet, path string, s fileSchema, lookupEnv func(string) (string, bool)) error {
	given := map[string]bool{}
	fs.Visit(func(f *pflag.Flag) { given[f.Name] = true })
	if path != "" {
		settings, err := loadFile(path, s, fs)
		if err != nil {
			return err
		}
		for _, st := range settings {
			if given[st.flag] {
				continue
			}
			if err := fs.Set(st.flag, st.value); err != nil {
				return fmt.Errorf("%s: %s: %v", st.rng, st.key, err)
			}
		}
	}
	for _, flag := range s.env {
		name := envName(flag)
		if v, ok := lookupEnv(name); ok && v != "" && !given[flag] {
			if err := fs.Set(flag, v); err != nil {
				return fmt.Errorf("%s: %v", name, err)
			}
		}
	}
	return nil
}

// loadFile parses the file at path against s. Unknown keys, repeated
// blocks and values of the wrong type are errors naming the file, the line
// and the key.
func loadFile(path string, s fileSchema, fs *pflag.FlagSet) ([]setting, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	file, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diags
	}
	schema := &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "bind_addr"}},
		Blocks:     []hcl.BlockHeaderSchema{{Type: "ports"}, {Type: "advertise"}, {Type: "tls"}},
	}
	for _, k := range s.keys {
		schema.Attributes = append(schema.Attributes, hcl.AttributeSchema{Name: k.key})
	}
	content, diags := file.Body.Content(schema)
	if diags.HasErrors() {
		return nil, diags
	}
	var out []setting
	for _, k := range s.keys {
		a, ok := content.Attributes[k.key]
		if !ok {
			continue
		}
		v, diags := attrString(a, k.typ)
		if diags.HasErrors() {
			return nil, diags
		}
		out = append(out, setting{flag: k.flag, value: v, key: k.key, rng: a.Range})
	}
	blocks := map[string]hcl.Attributes{}
	for _, b := range content.Blocks {
		if _, dup := blocks[b.Type]; dup {
			return nil, fmt.Errorf("%s: %s: only one %s block is allowed", b.DefRange, b.Type, b.Type)
		}
		names := s.listens
		switch b.Type {
		case "advertise":
			names = s.advertise
		case "tls":
			names = tlsKeys
		}
		var bs hcl.BodySchema
		for _, n := range names {
			bs.Attributes = append(bs.Attributes, hcl.AttributeSchema{Name: n})
		}
		c, diags := b.Body.Content(&bs)
		if diags.HasErrors() {
			return nil, diags
		}
		blocks[b.Type] = c.Attributes
	}
	for _, n := range s.advertise {
		if a, ok := blocks["advertise"][n]; ok {
			v, diags := attrString(a, cty.String)
			if diags.HasErrors() {
				return nil, diags
			}
			out = append(out, setting{flag: "advertise-" + n, value: v, key: "advertise." + n, rng: a.Range})
		}
	}
	for _, n := range tlsKeys {
		if a, ok := blocks["tls"][n]; ok {
			v, diags := attrString(a, cty.String)
			if diags.HasErrors() {
				return nil, diags
			}
			out = append(out, setting{flag: strings.ReplaceAll(n, "_", "-"), value: v, key: "tls." + n, rng: a.Range})
		}
	}
	bind, hasBind := content.Attributes["bind_addr"]
	var bindHost string
	if hasBind {
		if bindHost, diags = attrString(bind, cty.String); diags.HasErrors() {
			return nil, diags
		}
	}
	for _, n := range s.listens {
		st, err := listenSetting(n, fs.Lookup(n).DefValue, bind, bindHost, blocks["ports"][n])
		if err != nil {
			return nil, err
		}
		if st != nil {
			out = append(out, *st)
		}
	}
	return out, nil
}

// listenSetting builds the flag name's HOST:PORT from bind_addr and
// ports.name, taking what the file leaves out from the flag's default
// (127.0.0.1 when that is empty). A listener whose flag has no default port
// (the worker's gossip) is set only with a port.
func listenSetting(name, def string, bind *hcl.Attribute, bindHost string, port *hcl.Attribute) (*setting, error) {
	if bind == nil && port == nil {
		return nil, nil
	}
	host, defPort, _ := net.SplitHostPort(def)
	if bind != nil {
		host = bindHost
	}
	if host == "" && bind == nil {
		host = "127.0.0.1"
	}
	p, key, rng := defPort, "bind_addr", hcl.Range{}
	if bind != nil {
		rng = bind.Range
	}
	if port != nil {
		v, diags := attrString(port, cty.Number)
		if diags.HasErrors() {
			return nil, diags
		}
		p, key, rng = v, "ports."+name, port.Range
	}
	if p == "" {
		return nil, nil
	}
	return &setting{flag: name, value: net.JoinHostPort(host, p), key: key, rng: rng}, nil
}

// attrString evaluates a (no variables or functions) as typ and formats it
// as the flag parsers take it: lists joined by commas.
func attrString(a *hcl.Attribute, typ cty.Type) (string, hcl.Diagnostics) {
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		return "", diags
	}
	bad := func(detail string) hcl.Diagnostics {
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Invalid value for " + a.Name,
			Detail:   detail,
			Subject:  a.Expr.Range().Ptr(),
		}}
	}
	if v.IsNull() {
		return "", bad("The value must not be null.")
	}
	v, err := convert.Convert(v, typ)
	if err != nil {
		msg := err.Error() // e.g. "a number is required"
		return "", bad(strings.ToUpper(msg[:1]) + msg[1:] + ".")
	}
	switch {
	case typ == cty.String:
		return v.AsString(), nil
	case typ == cty.Bool:
		return fmt.Sprint(v.True()), nil
	case typ == cty.Number:
		return v.AsBigFloat().Text('f', -1), nil
	default: // a list of strings
		var items []string
		for _, e := range v.AsValueSlice() {
			if e.IsNull() {
				return "", bad("The list must not hold null.")
			}
			items = append(items, e.AsString())
		}
		return strings.Join(items, ","), nil
	}
}
