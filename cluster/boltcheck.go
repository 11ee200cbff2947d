package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// ErrStoreDamaged is wrapped by CheckBolt and OpenBolt when a bolt file
// (raft.db, worker.db) cannot be read as a whole: a damaged page, a file cut
// short, meta pages that fail their checksum. The message names the file
// and what is wrong; the caller adds the recovery step.
var ErrStoreDamaged = errors.New("bolt file is damaged")

// CheckBolt reads the bolt file at path before it is opened for writing, so
// that damage is an error naming the file and the fault instead of a panic
// deep inside bbolt (whose Open panics on "invalid freelist page" while
// loading the freelist, and whose reads panic or fault on garbage pages,
// later, in raft's own goroutines where nothing can recover them).
//
// It opens the file read-only (a shared lock, waited for at most timeout:
// bolterrors.ErrTimeout when another process holds it), checks that the
// freelist the newest valid meta page names is a freelist page, and reads
// every bucket, key and value, with bbolt's panics and memory faults on the
// mapping turned into errors. A missing or empty file passes: bbolt creates
// it. The cost is one read of the file at start-up.
func CheckBolt(path string, timeout time.Duration) error {
	info, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) || (err == nil && info.Size() == 0) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := checkBoltFreelist(path); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrStoreDamaged, path, err)
	}
	var db *bbolt.DB
	err = recoverBolt(func() error {
		var oerr error
		db, oerr = bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: timeout})
		return oerr
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return err
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrStoreDamaged, path, err)
	}
	defer db.Close()
	err = recoverBolt(func() error {
		return db.View(func(tx *bbolt.Tx) error {
			return tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
				return walkBucket(b, string(name))
			})
		})
	})
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrStoreDamaged, path, err)
	}
	return nil
}

// OpenBolt runs open, which opens a bolt file for writing (bbolt.Open or a
// library's constructor around it), turning a panic into an error wrapping
// ErrStoreDamaged. CheckBolt first catches what it can cleanly; this is the
// net under it. After a panic bbolt may keep the file descriptor (and its
// lock) it opened: the caller must not retry in this process, it reports
// the error and exits.
func OpenBolt(path string, open func() error) error {
	err := recoverBolt(open)
	var p panicError
	if errors.As(err, &p) {
		return fmt.Errorf("%w: %s: %w", ErrStoreDamaged, path, err)
	}
	return err
}

// panicError is a panic of bbolt turned into an error.
type panicError struct{ v any }

func (p panicError) Error() string { return fmt.Sprintf("%v", p.v) }

// recoverBolt runs fn with its panics, and memory faults on bbolt's mapping
// (which SetPanicOnFault turns into panics), returned as a panicError.
func recoverBolt(fn func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if v := recover(); v != nil {
			err = panicError{v}
		}
	}()
	return fn()
}

// walkBucket reads every key and value of b and of its nested buckets, so
// that every branch, leaf and overflow page is touched once.
func walkBucket(b *bbolt.Bucket, path string) error {
	return b.ForEach(func(k, v []byte) error {
		if v != nil {
			return nil
		}
		child := b.Bucket(k)
		if child == nil {
			return fmt.Errorf("bucket %s: key %x has no value and is not a bucket", path, k)
		}
		return walkBucket(child, path+"/"+string(k))
	})
}

// bbolt's on-disk format (version 2, little-endian on every platform Cube
// runs on): a page starts with a 16-byte header (page ID, flags, count,
// overflow); a meta page then holds magic, version, page size, flags (4
// bytes each), the root bucket (root page, sequence), the freelist page, the
// high-water page, the transaction ID and a checksum (8 bytes each), the
// checksum being FNV-64a of the meta's bytes before it.
const (
	boltMagic        = 0xED0CDAED
	boltPageHeader   = 16
	boltPageFlags    = 8
	boltMetaPageSize = boltPageHeader + 8
	boltMetaFreelist = boltPageHeader + 32
	boltMetaTxid     = boltPageHeader + 48
	boltMetaChecksum = boltPageHeader + 56
	boltFreelistFlag = 0x10
	noFreelist       = ^uint64(0)
)

// boltPageTypes names a page's type flag as bbolt does.
var boltPageTypes = map[uint16]string{0x01: "branch", 0x02: "leaf", 0x04: "meta", 0x10: "freelist"}

// checkBoltFreelist checks that the page the newest valid meta page names
// as the freelist is one: the check bbolt makes by panicking when it loads
// the freelist in Open. A file whose meta pages this cannot read passes
// here; bbolt's read-only Open judges it (with an error, not a panic).
func checkBoltFreelist(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	size := boltMetaChecksum + 8
	m0, ok0 := readMeta(f, 0, size)
	// Meta page 1 is one page in: page 0 says the size; when page 0 is
	// damaged, bbolt tries the OS page size, as here.
	off1 := int64(os.Getpagesize())
	if ok0 {
		off1 = int64(m0.pageSize)
	}
	m1, ok1 := readMeta(f, off1, size)
	best, found := m0, ok0
	if ok1 && (!ok0 || m1.txid > m0.txid) {
		best, found = m1, true
	}
	if !found || best.freelist == noFreelist || best.pageSize == 0 {
		return nil
	}
	hdr := make([]byte, boltPageHeader)
	if _, err := f.ReadAt(hdr, int64(best.freelist)*int64(best.pageSize)); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("freelist page %d is beyond the end of the file (cut short?)", best.freelist)
		}
		return fmt.Errorf("read freelist page %d: %w", best.freelist, err)
	}
	if id := binary.LittleEndian.Uint64(hdr); id != best.freelist {
		return fmt.Errorf("invalid freelist page %d: the page says it is page %d", best.freelist, id)
	}
	if flags := binary.LittleEndian.Uint16(hdr[boltPageFlags:]); flags != boltFreelistFlag {
		typ, ok := boltPageTypes[flags]
		if !ok {
			typ = fmt.Sprintf("unknown (flags %#x)", flags)
		}
		return fmt.Errorf("invalid freelist page %d: its page type is %s", best.freelist, typ)
	}
	return nil
}

// meta is what checkBoltFreelist needs of a meta page.
type meta struct {
	pageSize uint32
	freelist uint64
	txid     uint64
}

// readMeta reads the meta page at off; ok is false unless its magic and
// checksum hold.
func readMeta(f *os.File, off int64, size int) (meta, bool) {
	m := make([]byte, size)
	if _, err := f.ReadAt(m, off); err != nil {
		return meta{}, false
	}
	if binary.LittleEndian.Uint32(m[boltPageHeader:]) != boltMagic {
		return meta{}, false
	}
	h := fnv.New64a()
	_, _ = h.Write(m[boltPageHeader:boltMetaChecksum])
	if h.Sum64() != binary.LittleEndian.Uint64(m[boltMetaChecksum:]) {
		return meta{}, false
	}
	return meta{
		pageSize: binary.LittleEndian.Uint32(m[boltMetaPageSize:]),
		freelist: binary.LittleEndian.Uint64(m[boltMetaFreelist:]),
		txid:     binary.LittleEndian.Uint64(m[boltMetaTxid:]),
	}, true
}
