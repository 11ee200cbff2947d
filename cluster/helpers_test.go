package cluster

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// durationStats returns the median and maximum of ds.
func durationStats(ds []time.Duration) (median, maximum time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)-1]
}

// checkValidate checks a Validate error against want: "" for a valid
// config, else a substring of the message, wrapping ErrInvalidConfig.
func checkValidate(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("Validate() = %v, want nil", err)
	case want != "" && err == nil:
		t.Errorf("Validate() = nil, want error containing %q", want)
	case want != "" && (!errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), want)):
		t.Errorf("Validate() = %v, want ErrInvalidConfig containing %q", err, want)
	}
}
