package cluster

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/cube-orch/cube/test/testkit"
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
	testkit.WantErr(t, "Validate()", err, want)
	if want != "" && !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Validate() = %v, want it to wrap ErrInvalidConfig", err)
	}
}
