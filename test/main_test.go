package test

import (
	"os"
	"testing"
)

// TestMain removes the cube binary CubeBinary built (a temporary directory
// per test process; without this every run left ~40 MB in /tmp).
func TestMain(m *testing.M) {
	code := m.Run()
	if buildOnce.dir != "" {
		_ = os.RemoveAll(buildOnce.dir)
	}
	os.Exit(code)
}
