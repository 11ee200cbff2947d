package testkit

import (
	"strings"
	"testing"
)

// WantErr fails t unless err is what a table case wants: nil when want is
// "", else an error whose message contains want. what names the call in the
// failure message ("Validate(…)").
func WantErr(t testing.TB, what string, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("%s = %v, want nil", what, err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Fatalf("%s = %v, want an error containing %q", what, err, want)
	}
}
