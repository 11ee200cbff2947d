package worker

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cube-orch/cube/api"
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
)

// Store keeps the worker's task records in a bbolt file, so that a restarted
// worker knows which containers are its own and at which generation.
type Store struct {
	db *bolt.DB
}

// OpenStore opens (creating if needed) the bolt file at path. bbolt takes an
// exclusive file lock; timeout bounds the wait for it, so a second worker on
// the same data dir fails with a clear error instead of hanging forever.
func OpenStore(path string, timeout time.Duration) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open %s: still locked after %s; is another worker using this data dir?", path, timeout)
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
	data, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("encode task %s: %w", t.ID, err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTasks).Put([]byte(t.ID.String()), data)
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
