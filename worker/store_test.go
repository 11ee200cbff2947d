package worker

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/google/uuid"
)

// A damaged worker.db stops the worker's start with an error naming the
// file, the fault and the recovery step, never a panic inside bbolt; after
// the step (the file moved aside) the worker starts on a new store.
func TestOpenStore_Damaged(t *testing.T) {
	page := int64(os.Getpagesize()) // bbolt's page size on this machine
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string, size int64)
		want   string
	}{
		{"pages overwritten", func(t *testing.T, path string, size int64) {
			overwrite(t, path, bytes.Repeat([]byte{0xFF}, int(size-2*page)), 2*page)
		}, "invalid freelist page"},
		{"meta pages destroyed", func(t *testing.T, path string, _ int64) {
			overwrite(t, path, bytes.Repeat([]byte{0xAB}, int(2*page)), 0)
		}, "invalid database"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "worker.db")
			s, err := OpenStore(path, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			for range 50 {
				id := uuid.New()
				if err := s.Put(api.Task{ID: id, Name: strings.Repeat("x", 200), Generation: 1}); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			info, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			tc.damage(t, path, info.Size())

			_, err = OpenStore(path, time.Second)
			if !errors.Is(err, cluster.ErrStoreDamaged) {
				t.Fatalf("OpenStore on a damaged file: %v, want ErrStoreDamaged", err)
			}
			for _, want := range []string{path, tc.want, "move " + path + " aside", "start the worker again"} {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("OpenStore: %v\nwant it to say %q", err, want)
				}
			}
			if err := os.Rename(path, path+".damaged"); err != nil {
				t.Fatal(err)
			}
			s, err = OpenStore(path, time.Second)
			if err != nil {
				t.Fatalf("OpenStore after moving the damaged file aside: %v", err)
			}
			s.Close()
		})
	}
}

func overwrite(t *testing.T, path string, b []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
