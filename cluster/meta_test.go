package cluster

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/test/testkit"
)

// A worker's allowances travel in its gossip metadata to every node, and
// count against memberlist's 512 bytes.
func TestMeta_AllowsTravelAndCount(t *testing.T) {
	tp := newTestPools(t)
	p1 := tp.start("n1", 0)
	p2 := tp.start("n2", 0, p1.LocalAddr())
	allows := []string{"privileged", "mount:/srv/data", "cap:NET_ADMIN"}
	meta := p2.cfg.Meta
	meta.Allows = allows
	if err := p2.UpdateMeta(meta); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "n1 to see n2's allowances", func() bool {
		m, ok := memberOf(p1, "n2")
		return ok && reflect.DeepEqual(m.Meta.Allows, allows)
	})

	meta.Allows = []string{"mount:/" + strings.Repeat("x", 512)}
	if err := p2.UpdateMeta(meta); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("UpdateMeta with %d bytes of allowances: %v, want ErrMetaTooLarge", len(meta.Allows[0]), err)
	}
}

// A worker's labels travel in its gossip metadata to every node.
func TestMeta_LabelsTravel(t *testing.T) {
	tp := newTestPools(t)
	p1 := tp.start("n1", 0)
	p2 := tp.start("n2", 0, p1.LocalAddr())
	labels := map[string]string{"zone": "a", "disk": "ssd"}
	meta := p2.cfg.Meta
	meta.Labels = labels
	if err := p2.UpdateMeta(meta); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "n1 to see n2's labels", func() bool {
		m, ok := memberOf(p1, "n2")
		return ok && reflect.DeepEqual(m.Meta.Labels, labels)
	})
}

// A node's version travels in its gossip metadata, bounded to
// MaxVersionBytes.
func TestMeta_VersionTravelsBounded(t *testing.T) {
	tp := newTestPools(t)
	p1 := tp.start("n1", 0)
	p2 := tp.start("n2", 0, p1.LocalAddr())
	meta := p2.cfg.Meta
	meta.Version = "v1.2.0 0123456789ab"
	if err := p2.UpdateMeta(meta); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "n1 to see n2's version", func() bool {
		m, ok := memberOf(p1, "n2")
		return ok && m.Meta.Version == meta.Version
	})
	meta.Version = strings.Repeat("v", MaxVersionBytes+1)
	if err := meta.validate(); err == nil {
		t.Errorf("a %d-byte Version validated; want at most %d", len(meta.Version), MaxVersionBytes)
	}
}
