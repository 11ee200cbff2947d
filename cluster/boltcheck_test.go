package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/test/testkit"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// newBoltFile writes a bolt file of a few hundred keys in two buckets, one
// nested, large enough to span many pages, and returns its path.
func newBoltFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "store.db")
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		logs, err := tx.CreateBucket([]byte("logs"))
		if err != nil {
			return err
		}
		nested, err := logs.CreateBucket([]byte("nested"))
		if err != nil {
			return err
		}
		for i := range 500 {
			if err := logs.Put([]byte(fmt.Sprintf("key-%05d", i)), bytes.Repeat([]byte{byte(i)}, 100)); err != nil {
				return err
			}
			if err := nested.Put([]byte(fmt.Sprintf("n-%05d", i)), []byte("v")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A second transaction frees pages, so the freelist is not empty.
	if err := db.Update(func(tx *bbolt.Tx) error { return tx.Bucket([]byte("logs")).Delete([]byte("key-00001")) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// freelistOf returns the freelist page and page size named by the newest
// valid meta page of the file at path.
func freelistOf(t *testing.T, path string) (page uint64, pageSize int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m0, ok0 := readMeta(f, 0, boltMetaChecksum+8)
	if !ok0 {
		t.Fatal("meta page 0 of a fresh file is not valid")
	}
	best := m0
	if m1, ok := readMeta(f, int64(m0.pageSize), boltMetaChecksum+8); ok && m1.txid > m0.txid {
		best = m1
	}
	if best.freelist == noFreelist {
		t.Fatal("the file has no freelist page")
	}
	return best.freelist, int64(best.pageSize)
}

// writeAt overwrites the file at path with b at off.
func writeAt(t *testing.T, path string, b []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// A damaged bolt file is an error naming the file and the fault, never a
// panic: the freelist page overwritten (bbolt's Open panics "invalid
// freelist page"), the data pages overwritten, both meta pages destroyed,
// the file cut short. A sound, missing or empty file passes.
func TestCheckBolt(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
		want   string // in the error; "" for none
	}{
		{"sound", func(*testing.T, string) {}, ""},
		{"missing", func(t *testing.T, path string) { os.Remove(path) }, ""},
		{"empty", func(t *testing.T, path string) { os.Truncate(path, 0) }, ""},
		{"freelist page is a leaf", func(t *testing.T, path string) {
			page, size := freelistOf(t, path)
			writeAt(t, path, []byte{0x02, 0x00}, int64(page)*size+boltPageFlags)
		}, "invalid freelist page"},
		{"data pages overwritten", func(t *testing.T, path string) {
			page, size := freelistOf(t, path)
			info, _ := os.Stat(path)
			for p := int64(2); p*size < info.Size(); p++ {
				if uint64(p) != page {
					writeAt(t, path, bytes.Repeat([]byte{0xFF}, int(size)), p*size)
				}
			}
		}, ""},
		{"both meta pages destroyed", func(t *testing.T, path string) {
			_, size := freelistOf(t, path)
			writeAt(t, path, bytes.Repeat([]byte{0xAB}, int(2*size)), 0)
		}, ""},
		{"cut short", func(t *testing.T, path string) {
			info, _ := os.Stat(path)
			os.Truncate(path, info.Size()/3)
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := newBoltFile(t)
			tc.damage(t, path)
			err := CheckBolt(path, time.Second)
			if tc.name == "sound" || tc.name == "missing" || tc.name == "empty" {
				if err != nil {
					t.Fatalf("CheckBolt: %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrStoreDamaged) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckBolt: %v, want ErrStoreDamaged naming %s and %q", err, path, tc.want)
			}
			t.Logf("%s: %v", tc.name, err)
		})
	}
}

// The case of the issue: bbolt's Open panics on a freelist page that is
// not one. The test first shows the panic (so it would notice a bbolt that
// stopped panicking and made the net below untested), then that OpenBolt
// turns it into an error.
func TestOpenBolt_PanicBecomesError(t *testing.T) {
	path := newBoltFile(t)
	page, size := freelistOf(t, path)
	writeAt(t, path, []byte{0x02, 0x00}, int64(page)*size+boltPageFlags)

	// Each open leaves a descriptor holding the lock behind when it panics,
	// so each gets its own copy of the file.
	cp := func() string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "copy.db")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	panicked := func() (p any) {
		defer func() { p = recover() }()
		db, err := bbolt.Open(cp(), 0o600, &bbolt.Options{Timeout: time.Second})
		if err == nil {
			db.Close()
		}
		return nil
	}()
	if panicked == nil || !strings.Contains(fmt.Sprint(panicked), "invalid freelist page") {
		t.Fatalf("bbolt.Open on the damaged file: panic %v, want \"invalid freelist page\"", panicked)
	}

	p := cp()
	err := OpenBolt(p, func() error {
		db, err := bbolt.Open(p, 0o600, &bbolt.Options{Timeout: time.Second})
		if err == nil {
			db.Close()
		}
		return err
	})
	if !errors.Is(err, ErrStoreDamaged) || !strings.Contains(err.Error(), "invalid freelist page") || !strings.Contains(err.Error(), p) {
		t.Fatalf("OpenBolt: %v, want ErrStoreDamaged naming the file and the fault", err)
	}
	// An ordinary error passes through unchanged.
	if err := OpenBolt(p, func() error { return os.ErrPermission }); !errors.Is(err, os.ErrPermission) || errors.Is(err, ErrStoreDamaged) {
		t.Fatalf("OpenBolt with an ordinary error: %v", err)
	}
}

// A file another process holds for writing is reported as locked, not as
// damaged.
func TestCheckBolt_Locked(t *testing.T) {
	path := newBoltFile(t)
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = CheckBolt(path, 100*time.Millisecond)
	if !errors.Is(err, bolterrors.ErrTimeout) || errors.Is(err, ErrStoreDamaged) {
		t.Fatalf("CheckBolt on a held file: %v, want bolterrors.ErrTimeout", err)
	}
}

// A manager whose raft.db is damaged does not start, and says which file,
// what is wrong and how to recover, instead of panicking inside bbolt.
func TestRaft_DamagedStore(t *testing.T) {
	cfg := FastRaftConfig()
	cfg.ID = "solo"
	cfg.BindAddr = testkit.FreeAddr(t)
	cfg.Peers = []Peer{{ID: "solo", Addr: cfg.BindAddr}}
	cfg.DataDir = t.TempDir()
	cfg.Logger = testkit.Logger(t, "test")
	r, err := NewRaft(cfg, &listFSM{})
	if err != nil {
		t.Fatalf("NewRaft: %v", err)
	}
	testkit.WaitFor(t, 5*time.Second, "the single server to lead", r.IsLeader)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 200 {
		if _, err := r.Apply(ctx, bytes.Repeat([]byte{byte(i)}, 512)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Shutdown(); err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(cfg.DataDir, raftDBFile)
	page, size := freelistOf(t, path)
	writeAt(t, path, []byte{0x02, 0x00}, int64(page)*size+boltPageFlags)
	r, err = NewRaft(cfg, &listFSM{})
	if err == nil {
		r.Shutdown()
		t.Fatal("NewRaft on a damaged raft.db succeeded")
	}
	for _, want := range []string{path, "invalid freelist page", "cube operator raft remove-peer solo", "snapshot restore"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("NewRaft: %v\nwant it to say %q", err, want)
		}
	}
	if !errors.Is(err, ErrStoreDamaged) {
		t.Fatalf("NewRaft: %v, want ErrStoreDamaged", err)
	}
	t.Log(err)
}
