package worker

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

var (
	bucketTasks = []byte("tasks")
	bucketMeta  = []byte("meta")
	// bucketForgotten keeps, for each task whose ended record was removed,
	// the generation it had: the fence against an old placement coming back.
	bucketForgotten = []byte("forgotten")
	keyName         = []byte("name")
	keyProbe        = []byte("probe") // written by Probe only
)

// Store keeps the worker's task records in a bbolt file, so that a restarted
// worker knows which containers are its own and at which generation.
type Store struct {
	db *bolt.DB
	// failPut, set only by this package's tests, is called before every
	// Put (and Probe, with a zero Task); an error it returns fails the
	// write as a failed disk write would.
	failPut atomic.Pointer[func(api.Task) error]
}

// OpenStore opens (creating if needed) the bolt file at path. bbolt takes an
// exclusive file lock; timeout bounds the wait for it, so a second worker on
// the same data dir fails with a clear error instead of hanging forever.
//
// The file is checked first (cluster.CheckBolt): a damaged one is an error
// wrapping cluster.ErrStoreDamaged that says what is wrong and what to do,
// where bbolt would panic.
func OpenStore(path string, timeout time.Duration) (*Store, error) {
	var db *bolt.DB
	err := cluster.CheckBolt(path, timeout)
	if err == nil {
		err = cluster.OpenBolt(path, func() (oerr error) {
			db, oerr = bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
			return oerr
		})
	}
	if err != nil {
		switch {
		case errors.Is(err, bolt.ErrTimeout):
			return nil, fmt.Errorf("open %s: still locked after %s; is another worker using this data dir?", path, timeout)
		case errors.Is(err, cluster.ErrStoreDamaged):
			return nil, fmt.Errorf("worker store: %w; this worker cannot start on it. To recover: stop the worker, move %s aside (or remove it) "+
				"and start the worker again: it registers under its name again, and the leader places once more the tasks it no longer holds a record of", err, path)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketTasks, bucketMeta, bucketForgotten} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Name returns the worker name recorded in the store, "" if none yet.
func (s *Store) Name() (string, error) {
	var name string
	err := s.db.View(func(tx *bolt.Tx) error {
		name = string(tx.Bucket(bucketMeta).Get(keyName))
		return nil
	})
	return name, err
}

// SetName records the worker name.
func (s *Store) SetName(name string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyName, []byte(name))
	})
}

// Put writes one task record (fsync'd before it returns).
func (s *Store) Put(t api.Task) error {
	if fail := s.failPut.Load(); fail != nil {
		if err := (*fail)(t); err != nil {
			return err
		}
	}
	data, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("encode task %s: %w", t.ID, err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTasks).Put([]byte(t.ID.String()), data)
	})
}

// Probe writes (and fsyncs) a small marker, to tell whether the store can
// be written to at all.
func (s *Store) Probe() error {
	if fail := s.failPut.Load(); fail != nil {
		if err := (*fail)(api.Task{}); err != nil {
			return err
		}
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyProbe, []byte(time.Now().UTC().Format(time.RFC3339Nano)))
	})
}

// All returns every task record.
func (s *Store) All() ([]api.Task, error) {
	var out []api.Task
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTasks).ForEach(func(k, v []byte) error {
			var t api.Task
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("decode task %s: %w", k, err)
			}
			out = append(out, t)
			return nil
		})
	})
	return out, err
}

// Forget removes a task's record and remembers its generation, in one
// transaction: a worker never holds neither.
func (s *Store) Forget(id uuid.UUID, gen uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketTasks).Delete([]byte(id.String())); err != nil {
			return err
		}
		return tx.Bucket(bucketForgotten).Put(id[:], binary.BigEndian.AppendUint64(nil, gen))
	})
}

// Forgotten returns the generation of every task whose record was removed.
func (s *Store) Forgotten() (map[uuid.UUID]uint64, error) {
	out := make(map[uuid.UUID]uint64)
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketForgotten).ForEach(func(k, v []byte) error {
			id, err := uuid.FromBytes(k)
			if err != nil || len(v) != 8 {
				return fmt.Errorf("forgotten task %x: malformed entry", k)
			}
			out[id] = binary.BigEndian.Uint64(v)
			return nil
		})
	})
	return out, err
}

// Close closes the bolt file and releases its lock.
func (s *Store) Close() error { return s.db.Close() }
