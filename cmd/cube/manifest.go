package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/cube-orch/cube/api"
	"go.yaml.in/yaml/v3"
)

// This file reads the files of cube apply and cube service create|update:
// one or more services and/or tasks, in JSON or YAML, with the API's field
// names (any case, as encoding/json matches them). A file holds any of:
//
//   - one object: a service ({"Name","Count","Task",...}), a task (the
//     seed's TaskEvent {"ID","State","Task"} or a bare Task {"Image",...});
//   - a list of such objects (a JSON array, a YAML sequence);
//   - several YAML documents (---) or JSON values one after the other;
//   - {"Services":[...],"Tasks":[...]}.
//
// An object may say what it is with "Kind": "Service" or "Task"; without it
// an object with a Name and a Task (or a Count) is a service, one with an
// Image or an ID/State beside its Task is a task. A problem is reported
// with the file, the line and the field.

// manifestItem is one service or one task of a file.
type manifestItem struct {
	Service *api.Service
	Task    *api.TaskEvent
	// Line is where the object starts in the file (1-based; 0 unknown).
	Line int
}

// what names the item in messages: service web, task t1 (or its ID).
func (it manifestItem) what() string {
	if it.Service != nil {
		return "service " + it.Service.Name
	}
	return "task " + taskLabel(*it.Task)
}

// taskLabel is how a task of a file is named: its Name, else its ID, else
// its image.
func taskLabel(ev api.TaskEvent) string {
	switch {
	case ev.Task.Name != "":
		return ev.Task.Name
	case ev.ID != [16]byte{}:
		return ev.ID.String()
	}
	return "(" + ev.Task.Image + ")"
}

// maxManifestBytes bounds a file (the API bounds each body at 1 MiB; a file
// may hold several).
const maxManifestBytes = 8 << 20

// readManifest reads path ("-": stdin) and parses it.
func readManifest(path string, stdin io.Reader) ([]manifestItem, error) {
	var data []byte
	var err error
	name := path
	if path == "-" {
		name = "stdin"
		data, err = io.ReadAll(io.LimitReader(stdin, maxManifestBytes+1))
	} else {
		var f *os.File
		if f, err = os.Open(path); err == nil {
			data, err = io.ReadAll(io.LimitReader(f, maxManifestBytes+1))
			f.Close()
		}
	}
	if err != nil {
		return nil, err
	}
	if len(data) > maxManifestBytes {
		return nil, fmt.Errorf("%s: larger than %d MiB", name, maxManifestBytes>>20)
	}
	return parseManifest(name, data)
}

// manifestError is a problem at a place of a file.
type manifestError struct {
	File string
	Line int
	Msg  string
}

func (e *manifestError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return e.File + ": " + e.Msg
}

// parseManifest parses a file's content; name is the file's, for messages.
func parseManifest(name string, data []byte) ([]manifestItem, error) {
	fail := func(line int, format string, args ...any) error {
		return &manifestError{File: name, Line: line, Msg: fmt.Sprintf(format, args...)}
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, fail(0, "empty: want one or more services or tasks, in JSON or YAML")
	}
	// JSON is YAML, but a JSON file's syntax errors read better in JSON's
	// terms, with the line and column; and JSON values one after the other
	// (JSON Lines) are not one YAML document: each is read on its own.
	var docs []manifestDoc
	if trimmed[0] == '{' || trimmed[0] == '[' {
		dec := json.NewDecoder(bytes.NewReader(data))
		for {
			var v json.RawMessage
			err := dec.Decode(&v)
			if err == io.EOF {
				break
			}
			if err != nil {
				var syn *json.SyntaxError
				if errors.As(err, &syn) {
					line, col := lineCol(data, syn.Offset)
					return nil, fail(line, "malformed JSON at column %d: %v", col, syn)
				}
				if errors.Is(err, io.ErrUnexpectedEOF) {
					return nil, fail(0, "the JSON ends in the middle of a value")
				}
				return nil, fail(0, "%v", err)
			}
			start, _ := lineCol(data, dec.InputOffset()-int64(len(v)))
			docs = append(docs, manifestDoc{data: v, line: start})
		}
	} else {
		docs = []manifestDoc{{data: data, line: 1}}
	}
	var items []manifestItem
	for _, d := range docs {
		dec := yaml.NewDecoder(bytes.NewReader(d.data))
		for {
			var n yaml.Node
			err := dec.Decode(&n)
			if err == io.EOF {
				break
			}
			if err != nil {
				// "yaml: line 3: mapping values are not allowed in this context"
				msg := strings.TrimPrefix(err.Error(), "yaml: ")
				line := 0
				if m := yamlLine.FindStringSubmatch(msg); m != nil {
					line, _ = strconv.Atoi(m[1])
					line += d.line - 1
					msg = msg[len(m[0]):]
				}
				return nil, fail(line, "malformed YAML: %s", msg)
			}
			if len(n.Content) == 0 || n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null" {
				continue // an empty document
			}
			shiftLines(&n, d.line-1, map[*yaml.Node]bool{})
			got, err := manifestItems(n.Content[0], "", 0)
			if err != nil {
				var me *manifestError
				if errors.As(err, &me) {
					me.File = name
				}
				return nil, err
			}
			items = append(items, got...)
		}
	}
	if len(items) == 0 {
		return nil, fail(0, "holds no service and no task")
	}
	// A name twice would be applied twice, the second undoing the first.
	seen := map[string]int{}
	for _, it := range items {
		var key string
		switch {
		case it.Service != nil:
			key = "service " + it.Service.Name
		case it.Task.ID != [16]byte{}:
			key = "task " + it.Task.ID.String()
		default:
			continue
		}
		if first, ok := seen[key]; ok {
			return nil, fail(it.Line, "%s is in the file twice (first at line %d)", key, first)
		}
		seen[key] = it.Line
	}
	return items, nil
}

var yamlLine = regexp.MustCompile(`^line (\d+): `)

// manifestDoc is a part of a file read as one YAML stream, and the line
// of the file it starts on.
type manifestDoc struct {
	data []byte
	line int
}

// shiftLines adds delta to the line of every node under n.
func shiftLines(n *yaml.Node, delta int, seen map[*yaml.Node]bool) {
	if delta == 0 || n == nil || seen[n] {
		return
	}
	seen[n] = true
	n.Line += delta
	for _, c := range n.Content {
		shiftLines(c, delta, seen)
	}
}

// lineCol turns a byte offset of data into a line and a column (1-based).
func lineCol(data []byte, off int64) (int, int) {
	off = min(max(off, 0), int64(len(data)))
	before := data[:off]
	line := bytes.Count(before, []byte("\n")) + 1
	return line, int(off) - bytes.LastIndexByte(before, '\n')
}

// The kinds of objects a file holds.
const (
	kindService = "service"
	kindTask    = "task"
)

// manifestItems turns one YAML node (a document's root, or an element of a
// list) into items; kind is what the enclosing list says its elements are
// ("" when nothing does).
func manifestItems(n *yaml.Node, kind string, depth int) ([]manifestItem, error) {
	fail := func(line int, format string, args ...any) error {
		return &manifestError{Line: line, Msg: fmt.Sprintf(format, args...)}
	}
	if depth > 3 {
		return nil, fail(n.Line, "lists nested too deep")
	}
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.SequenceNode:
		var out []manifestItem
		for _, el := range n.Content {
			got, err := manifestItems(el, kind, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, got...)
		}
		return out, nil
	case yaml.MappingNode:
	default:
		return nil, fail(n.Line, "want a service or a task (an object), or a list of them; got %s", describeNode(n))
	}
	keys := mappingKeys(n)
	if k, ok := keys["kind"]; ok {
		v := mappingValue(n, k)
		switch strings.ToLower(v.Value) {
		case kindService, kindTask:
			kind = strings.ToLower(v.Value)
		default:
			return nil, fail(v.Line, "Kind %q: want Service or Task", v.Value)
		}
		n = withoutKey(n, k)
		delete(keys, "kind")
	}
	// {"Services":[...],"Tasks":[...]}
	if kind == "" && len(keys) > 0 && !slices.ContainsFunc(mapsKeys(keys), func(k string) bool { return k != "services" && k != "tasks" }) {
		var out []manifestItem
		for _, k := range []string{"services", "tasks"} {
			key, ok := keys[k]
			if !ok {
				continue
			}
			v := mappingValue(n, key)
			if v.Kind != yaml.SequenceNode && !(v.Kind == yaml.ScalarNode && v.Tag == "!!null") {
				return nil, fail(v.Line, "%s: want a list, got %s", key, describeNode(v))
			}
			got, err := manifestItems(v, strings.TrimSuffix(k, "s"), depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, got...)
		}
		return out, nil
	}
	if kind == "" {
		_, hasName := keys["name"]
		_, hasTask := keys["task"]
		_, hasCount := keys["count"]
		_, hasImage := keys["image"]
		_, hasID := keys["id"]
		_, hasState := keys["state"]
		switch {
		case hasImage || (hasTask && (hasID || hasState) && !hasName && !hasCount):
			kind = kindTask
		case hasName && (hasTask || hasCount):
			kind = kindService
		default:
			return nil, fail(n.Line, "cannot tell a service from a task: a service has a Name, a Count and a Task; "+
				"a task has an Image (or is a TaskEvent, {\"ID\",\"State\",\"Task\"}); or say which with Kind: Service or Kind: Task")
		}
	}
	v, err := yamlValue(n, new(int))
	if err != nil {
		return nil, err
	}
	if path, err := manifestSizes(v); err != nil {
		what := "task"
		if kind == kindService {
			what = "service"
			if k, ok := keys["name"]; ok && mappingValue(n, k).Kind == yaml.ScalarNode {
				what += " " + mappingValue(n, k).Value
			}
		}
		return nil, fail(lineOfPath(n, path), "%s: field %v", what, err)
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fail(n.Line, "%v", err)
	}
	it := manifestItem{Line: n.Line}
	if kind == kindService {
		var s api.Service
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			line, msg := describeDecodeError(n, err)
			what := "service"
			if k, ok := keys["name"]; ok && mappingValue(n, k).Kind == yaml.ScalarNode {
				what += " " + mappingValue(n, k).Value
			}
			return nil, fail(line, "%s: %s", what, msg)
		}
		if err := api.ValidateService(s); err != nil {
			// "service web: Update.MaxParallel -1 must ...": the line of the field.
			_, rest, _ := strings.Cut(err.Error(), ": ")
			return nil, fail(lineOfPath(n, strings.Split(firstWord(rest), ".")), "%v", err)
		}
		if err := s.Task.Validate(); err != nil {
			// "Memory 1 is below ...": the line of Task.Memory.
			return nil, fail(lineOfPath(n, []string{"Task", firstWord(err.Error())}), "service %s: Task.%v", s.Name, err)
		}
		for _, f := range []struct {
			name string
			set  bool
		}{{"Version", s.Version != 0}, {"History", len(s.History) > 0}, {"Rollout", s.Rollout != nil}} {
			if f.set {
				return nil, fail(lineOfPath(n, []string{f.name}), "service %s: %s is set by the cluster, not by a file; remove it", s.Name, f.name)
			}
		}
		it.Service = &s
		return []manifestItem{it}, nil
	}
	// A task: a TaskEvent, or a bare Task wrapped into one (as cube run).
	taskNode := n
	if _, ok := keys["task"]; !ok {
		raw = append(append([]byte(`{"State":2,"Task":`), raw...), '}')
	} else {
		taskNode = nil // paths are the event's
	}
	ev, err := api.DecodeTaskEvent(bytes.NewReader(raw))
	if err != nil {
		line := n.Line
		if l := lineOfMessage(n, taskNode, err.Error()); l > 0 {
			line = l
		}
		return nil, fail(line, "task: %v", err)
	}
	if err := ev.Validate(); err != nil {
		line := n.Line
		if taskNode != nil {
			line = lineOfPath(taskNode, []string{firstWord(err.Error())})
		} else {
			line = lineOfPath(n, []string{"Task", firstWord(err.Error())})
		}
		return nil, fail(line, "task %s: %v", taskLabel(ev), err)
	}
	it.Task = &ev
	return []manifestItem{it}, nil
}

// firstWord is a message's first word, without a trailing ':' (the field a
// validation message starts with).
func firstWord(msg string) string {
	f := strings.Fields(msg)
	if len(f) == 0 {
		return ""
	}
	return strings.TrimSuffix(f[0], ":")
}

// describeNode names what a node is, for messages.
func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "an object"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing (null)"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

// mappingKeys returns a mapping's keys, lower-cased, to the key as written.
func mappingKeys(n *yaml.Node) map[string]string {
	out := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		out[strings.ToLower(n.Content[i].Value)] = n.Content[i].Value
	}
	return out
}

func mapsKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// mappingValue returns the value of key (as written) in mapping n.
func mappingValue(n *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// withoutKey returns a copy of mapping n without key.
func withoutKey(n *yaml.Node, key string) *yaml.Node {
	c := *n
	c.Content = nil
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value != key {
			c.Content = append(c.Content, n.Content[i], n.Content[i+1])
		}
	}
	return &c
}

// maxYAMLNodes bounds the values a file expands to (aliases can multiply
// them).
const maxYAMLNodes = 1_000_000

// yamlValue turns a YAML node into the value encoding/json writes: objects
// with string keys, lists, strings, numbers, booleans, null. budget counts
// the nodes visited.
func yamlValue(n *yaml.Node, budget *int) (any, error) {
	if *budget++; *budget > maxYAMLNodes {
		return nil, &manifestError{Line: n.Line, Msg: fmt.Sprintf("expands to more than %d values (aliases?)", maxYAMLNodes)}
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return yamlValue(n.Content[0], budget)
	case yaml.AliasNode:
		return yamlValue(n.Alias, budget)
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, el := range n.Content {
			v, err := yamlValue(el, budget)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.MappingNode:
		out := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			v, err := yamlValue(val, budget)
			if err != nil {
				return nil, err
			}
			if k.Tag == "!!merge" { // <<: *defaults
				merged, ok := v.(map[string]any)
				if !ok {
					return nil, &manifestError{Line: k.Line, Msg: "<< merges an object, got " + describeNode(val)}
				}
				for mk, mv := range merged {
					if _, set := out[mk]; !set {
						out[mk] = mv
					}
				}
				continue
			}
			if _, dup := out[k.Value]; dup {
				return nil, &manifestError{Line: k.Line, Msg: fmt.Sprintf("key %q is given twice", k.Value)}
			}
			out[k.Value] = v
		}
		return out, nil
	case yaml.ScalarNode:
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, &manifestError{Line: n.Line, Msg: err.Error()}
		}
		return v, nil
	}
	return nil, &manifestError{Line: n.Line, Msg: "unexpected YAML node"}
}

// describeDecodeError words encoding/json's error on an object read from
// node n and finds the line of the field it names.
func describeDecodeError(n *yaml.Node, err error) (int, string) {
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) && typ.Field != "" {
		return lineOfPath(n, strings.Split(typ.Field, ".")), fmt.Sprintf("field %s: want %s, got %s", typ.Field, jsonTypeName(typ.Type.String()), typ.Value)
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	return lineOfMessage(n, nil, msg), msg
}

// jsonTypeName says a Go type as a person writing a file knows it.
func jsonTypeName(t string) string {
	switch {
	case strings.HasPrefix(t, "int") || strings.HasPrefix(t, "uint") || t == "api.State":
		return "a whole number"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "string":
		return "a string"
	case t == "bool":
		return "true or false"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map[") || strings.HasPrefix(t, "api."):
		return "an object"
	}
	return t
}

// lineOfPath returns the line of the deepest key of path (Go field names,
// matched regardless of case as encoding/json does) found under mapping n.
func lineOfPath(n *yaml.Node, path []string) int {
	line := n.Line
	for _, p := range path {
		for n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		if n.Kind != yaml.MappingNode {
			break
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if strings.EqualFold(n.Content[i].Value, p) {
				line, next = n.Content[i].Line, n.Content[i+1]
				break
			}
		}
		if next == nil {
			break
		}
		n = next
	}
	return line
}

// lineOfMessage finds the line of the field an error message names: a
// "field A.B" path (under under, if not nil, else n), or the first key
// named in an "unknown field" message. 0 if none.
func lineOfMessage(n, under *yaml.Node, msg string) int {
	if _, rest, ok := strings.Cut(msg, "field "); ok {
		field, _, _ := strings.Cut(rest, ":")
		field = strings.Trim(strings.Fields(field + " ")[0], `"`)
		if strings.HasPrefix(rest, `"`) { // unknown field "X"
			if l := findKey(n, field); l > 0 {
				return l
			}
			return 0
		}
		root := n
		if under != nil {
			root = under
		}
		path := strings.Split(field, ".")
		if under != nil && len(path) > 0 && path[0] == "Task" {
			path = path[1:]
		}
		return lineOfPath(root, path)
	}
	return 0
}

// findKey returns the line of the first key named key (as written) under n.
func findKey(n *yaml.Node, key string) int {
	if n == nil {
		return 0
	}
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				return n.Content[i].Line
			}
		}
	}
	if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
		for _, c := range n.Content {
			if l := findKey(c, key); l > 0 {
				return l
			}
		}
	}
	return 0
}
