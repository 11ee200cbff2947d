package api

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"unicode"
)

// Worker labels (cube worker --label key=value) travel in the worker's
// gossip metadata, which memberlist bounds to 512 bytes together with its
// address, capacity and allowances; these bounds keep them well inside.
const (
	// MaxLabels bounds the number of labels of one worker.
	MaxLabels = 16
	// MaxLabelValueLen bounds a label's value (its key is bounded to 63
	// characters as a constraint's is, see ParseConstraint).
	MaxLabelValueLen = 63
	// MaxLabelBytes bounds the labels' JSON encoding in the gossip metadata.
	MaxLabelBytes = 256
)

// MaxConstraints bounds Task.Constraints and Task.Prefer (each).
const MaxConstraints = 32

// ParseLabel parses one "key=value" label. The key is what a constraint
// names (1-63 letters, digits, '_', '.', '/' or '-', starting with a letter
// or digit); the value is 1-63 printable characters without white space,
// '=', '!' or ',' (so that every label can be matched by a constraint and
// listed with commas).
func ParseLabel(s string) (key, value string, err error) {
	key, value, ok := strings.Cut(s, "=")
	if !ok {
		return "", "", fmt.Errorf("label %q must be key=value", s)
	}
	if !validLabelKey.MatchString(key) {
		return "", "", fmt.Errorf("label %q: key %q must be 1-63 letters, digits, '_', '.', '/' or '-', starting with a letter or digit", s, key)
	}
	if err := checkLabelValue(value); err != nil {
		return "", "", fmt.Errorf("label %q: %w", s, err)
	}
	return key, value, nil
}

func checkLabelValue(v string) error {
	switch {
	case v == "":
		return fmt.Errorf("value is empty")
	case len(v) > MaxLabelValueLen:
		return fmt.Errorf("value is longer than %d characters", MaxLabelValueLen)
	case strings.ContainsAny(v, "=!,"):
		return fmt.Errorf("value %q must not contain '=', '!' or ','", v)
	case strings.IndexFunc(v, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0:
		return fmt.Errorf("value %q must not contain white space or control characters", v)
	}
	return nil
}

// ParseLabels parses "key=value" labels into a map, refusing a key given
// twice and more than MaxLabels labels. No labels give a nil map.
func ParseLabels(list []string) (map[string]string, error) {
	if len(list) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(list))
	for _, s := range list {
		k, v, err := ParseLabel(s)
		if err != nil {
			return nil, err
		}
		if old, dup := out[k]; dup {
			return nil, fmt.Errorf("label %q: key %q is given twice (%s=%s and %s)", s, k, k, old, s)
		}
		out[k] = v
	}
	return out, ValidateLabels(out)
}

// ValidateLabels checks a worker's labels: each key and value as
// ParseLabel does, at most MaxLabels of them, and MaxLabelBytes encoded.
func ValidateLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fmt.Errorf("%d labels, at most %d are allowed (they travel in the worker's gossip metadata, 512 bytes)", len(labels), MaxLabels)
	}
	for k, v := range labels {
		if !validLabelKey.MatchString(k) {
			return fmt.Errorf("label key %q must be 1-63 letters, digits, '_', '.', '/' or '-', starting with a letter or digit", k)
		}
		if err := checkLabelValue(v); err != nil {
			return fmt.Errorf("label %s=%s: %w", k, v, err)
		}
	}
	b, _ := json.Marshal(labels) // strings only: cannot fail
	if size := len(b); size > MaxLabelBytes {
		return fmt.Errorf("labels take %d bytes of the worker's gossip metadata, at most %d are allowed (memberlist's limit is 512 bytes for everything a worker gossips): use fewer or shorter labels", size, MaxLabelBytes)
	}
	return nil
}

// FormatLabels writes labels as "k1=v1,k2=v2", sorted by key; "" for none.
func FormatLabels(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + labels[k]
	}
	return strings.Join(keys, ",")
}

// ParseConstraints parses a list of constraints (Task.Constraints,
// Task.Prefer), naming field and the bad entry in its error.
func ParseConstraints(field string, list []string) ([]Constraint, error) {
	if len(list) > MaxConstraints {
		return nil, fmt.Errorf("%s has %d entries, at most %d are allowed", field, len(list), MaxConstraints)
	}
	out := make([]Constraint, 0, len(list))
	for i, s := range list {
		c, err := ParseConstraint(s)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", field, i, err)
		}
		out = append(out, c)
	}
	return out, nil
}
