package drill

import (
	"context"
	"os"
	"testing"
)

func TestUpOnly(t *testing.T) {
	if os.Getenv("UPONLY") == "" {
		t.Skip()
	}
	spec, err := LoadSpec("../deploy/machine/machines.json")
	if err != nil {
		t.Fatal(err)
	}
	root, _ := os.Getwd()
	ms := &Machines{Spec: spec, Root: root + "/..", Fast: true, Logf: t.Logf}
	if err := ms.Up(context.Background()); err != nil {
		t.Fatal(err)
	}
}
