package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/docker/go-units"
)

// This file lets task files give sizes as Docker does: "Memory": "64m",
// "Disk": "1g" (binary units, as docker run -m takes them: k, m, g, t, p,
// with an optional b or ib, any case), as well as a number of bytes. Only
// the CLI's file reading takes them; the API keeps numbers.

// sizeFields are the fields of a Task holding a size in bytes.
var sizeFields = []string{"Memory", "Disk"}

// parseSize reads a size as Docker does ("64m", "1g", "512k", "1.5g",
// "1024"), or says what is wrong.
func parseSize(s string) (int64, error) {
	n, err := units.RAMInBytes(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a size: want a number of bytes, or a number with a unit as Docker takes them (512k, 64m, 1g, 1.5g; binary units)", s)
	}
	return n, nil
}

// sizesToBytes rewrites the size fields of the task object obj given as
// strings into numbers of bytes. It reports whether it changed anything;
// where names the object in errors ("Task").
func sizesToBytes(obj map[string]json.RawMessage, where string) (bool, error) {
	changed := false
	for k, v := range obj {
		field := ""
		for _, f := range sizeFields {
			if strings.EqualFold(k, f) { // encoding/json matches field names so
				field = f
			}
		}
		if field == "" || !bytes.HasPrefix(bytes.TrimSpace(v), []byte(`"`)) {
			continue
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return false, fmt.Errorf("%s.%s: %v", where, field, err)
		}
		n, err := parseSize(s)
		if err != nil {
			return false, fmt.Errorf("%s.%s: %w", where, field, err)
		}
		obj[k] = json.RawMessage(strconv.FormatInt(n, 10))
		changed = true
	}
	return changed, nil
}

// taskFileSizes rewrites the sizes given with units in a task file (a
// TaskEvent, whose task is under "Task", or a bare Task) into bytes. data
// is returned as it is when it has none.
func taskFileSizes(data []byte) ([]byte, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return data, nil // the decoder says what is wrong
	}
	raw, ok := top["Task"]
	if !ok {
		changed, err := sizesToBytes(top, "Task")
		if err != nil || !changed {
			return data, err
		}
		return json.Marshal(top)
	}
	var task map[string]json.RawMessage
	if json.Unmarshal(raw, &task) != nil {
		return data, nil
	}
	changed, err := sizesToBytes(task, "Task")
	if err != nil || !changed {
		return data, err
	}
	if top["Task"], err = json.Marshal(task); err != nil {
		return nil, err
	}
	return json.Marshal(top)
}

// manifestSizes rewrites the sizes given with units in the task template of
// a manifest item, v as yamlValue made it: the item itself or, for a service
// or a TaskEvent, its Task. On a bad size it returns the path of the field
// ("Task", "Memory") and the error.
func manifestSizes(v any) ([]string, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, nil
	}
	var path []string
	for k, sub := range obj {
		if m, ok := sub.(map[string]any); ok && strings.EqualFold(k, "Task") {
			obj, path = m, []string{"Task"}
			break
		}
	}
	for k, val := range obj {
		s, ok := val.(string)
		if !ok {
			continue
		}
		for _, f := range sizeFields {
			if !strings.EqualFold(k, f) {
				continue
			}
			n, err := parseSize(s)
			if err != nil {
				path = append(path, f)
				return path, fmt.Errorf("%s: %w", strings.Join(path, "."), err)
			}
			obj[k] = n
		}
	}
	return nil, nil
}
