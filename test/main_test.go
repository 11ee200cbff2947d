package test

import (
	"os"
	"testing"
)

// TestMain removes the cube binaries CubeBinary, ClockJumpBinary and
// NoRaceBinary built (a temporary directory per test process; without this
// every run left ~40 MB in /tmp).
func TestMain(m *testing.M) {
	code := m.Run()
	for _, dir := range []string{buildOnce.dir, clockBuild.dir, noRaceBuild.dir} {
		if dir != "" {
			_ = os.RemoveAll(dir)
		}
	}
	os.Exit(code)
}
