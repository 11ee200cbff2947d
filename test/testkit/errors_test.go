package testkit

import (
	"errors"
	"testing"
)

func TestWantErr(t *testing.T) {
	for _, c := range []struct {
		name     string
		err      error
		want     string
		wantFail bool
	}{
		{"nil wanted, nil got", nil, "", false},
		{"nil wanted, error got", errors.New("boom"), "", true},
		{"error wanted, nil got", nil, "boom", true},
		{"error wanted, other error got", errors.New("bang"), "boom", true},
		{"error wanted and got", errors.New("a boom here"), "boom", false},
	} {
		f := newFakeTB(t)
		returned := f.run(func() { WantErr(f, "call()", c.err, c.want) })
		if _, _, _, failed := f.report(); failed != c.wantFail || returned == c.wantFail {
			t.Errorf("%s: failed %v, returned %v; want failed %v", c.name, failed, returned, c.wantFail)
		}
	}
}
