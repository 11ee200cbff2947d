package api

import (
	"strings"
	"testing"
)

func TestParseLabels(t *testing.T) {
	got, err := ParseLabels([]string{"zone=a", "disk=ssd", "k8s.io/arch=amd64"})
	if err != nil {
		t.Fatal(err)
	}
	if FormatLabels(got) != "disk=ssd,k8s.io/arch=amd64,zone=a" {
		t.Fatalf("labels %v", got)
	}
	if m, err := ParseLabels(nil); err != nil || m != nil {
		t.Fatalf("no labels: %v, %v", m, err)
	}
	for in, want := range map[string]string{
		"zone":                            `label "zone" must be key=value`,
		"=a":                              `key ""`,
		"zo ne=a":                         `key "zo ne"`,
		"zone=":                           "value is empty",
		"zone=a=b":                        `must not contain '=', '!' or ','`,
		"zone=a!":                         `must not contain '=', '!' or ','`,
		"zone=a b":                        "white space",
		"zone=" + strings.Repeat("x", 64): "longer than 63",
	} {
		if _, err := ParseLabels([]string{in}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseLabels(%q): %v, want an error containing %q", in, err, want)
		}
	}
	if _, err := ParseLabels([]string{"zone=a", "zone=b"}); err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Errorf("a key twice: %v", err)
	}
	var many []string
	for i := 0; i <= MaxLabels; i++ {
		many = append(many, "k"+strings.Repeat("x", i)+"=v")
	}
	if _, err := ParseLabels(many); err == nil || !strings.Contains(err.Error(), "at most 16") {
		t.Errorf("%d labels: %v", len(many), err)
	}
	var long []string
	for i := 0; i < 5; i++ {
		long = append(long, strings.Repeat(string(rune('a'+i)), 40)+"="+strings.Repeat("v", 40))
	}
	if _, err := ParseLabels(long); err == nil || !strings.Contains(err.Error(), "bytes of the worker's gossip metadata") {
		t.Errorf("5 long labels: %v", err)
	}
}

// Every label a worker may carry can be matched by a constraint.
func TestLabels_MatchedByConstraints(t *testing.T) {
	labels, err := ParseLabels([]string{"zone=eu-1a", "k8s.io/arch=amd64", "rack=r_12.3:x"})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range labels {
		c, err := ParseConstraint(k + "==" + v)
		if err != nil || !c.Holds(labels) {
			t.Errorf("constraint %s==%s: %v, holds %v", k, v, err, err == nil && c.Holds(labels))
		}
	}
}
