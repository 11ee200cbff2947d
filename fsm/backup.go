package fsm

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cube-orch/cube/api"
)

// A snapshot file (cube operator snapshot save) is one line of JSON, the
// api.SnapshotInfo header, followed by the state exactly as Persist writes
// it. The header names the file format, the state's version, the raft
// index and term it reflects, its size and SHA-256, and what it holds, so
// that `snapshot inspect` needs no manager and a restore refuses a damaged
// or too new file before anything is touched.

// ErrBadSnapshot is wrapped by DecodeSnapshotFile for a file that is not a
// usable Cube snapshot: not one at all, damaged (size or checksum), or
// written by a newer Cube than this one reads.
var ErrBadSnapshot = errors.New("unusable snapshot file")

// maxHeaderBytes bounds the header line.
const maxHeaderBytes = 4096

// EncodeSnapshotFile returns the snapshot file of state (as Persist wrote
// it) taken at index and term, and its header. It decodes state to count
// what it holds, which also proves it readable.
func EncodeSnapshotFile(state []byte, index, term uint64, created time.Time) ([]byte, api.SnapshotInfo, error) {
	d, err := decodeState(bytes.NewReader(state))
	if err != nil {
		return nil, api.SnapshotInfo{}, err
	}
	sum := sha256.Sum256(state)
	info := api.SnapshotInfo{
		Kind: api.SnapshotKind, Format: api.SnapshotFormat, Version: d.Version,
		Index: index, Term: term, Size: int64(len(state)), SHA256: hex.EncodeToString(sum[:]),
		Tasks: len(d.Tasks), Workers: len(d.Workers), Tokens: len(d.Tokens), Services: len(d.Services),
		Created: created.UTC(),
	}
	head, err := json.Marshal(info)
	if err != nil {
		return nil, api.SnapshotInfo{}, err
	}
	if n := len(head) + 1 + len(state); n > api.MaxSnapshotBytes {
		return nil, api.SnapshotInfo{}, fmt.Errorf("the snapshot file would be %d bytes, above the limit of %d that a restore reads", n, api.MaxSnapshotBytes)
	}
	file := make([]byte, 0, len(head)+1+len(state))
	file = append(append(append(file, head...), '\n'), state...)
	return file, info, nil
}

// DecodeSnapshotFile reads a snapshot file and checks it whole: the header,
// the format and state versions against what this build reads, the size
// and SHA-256 of the state, and that the state decodes and holds what the
// header says. It returns the header and the state; every refusal wraps
// ErrBadSnapshot and says what is wrong.
func DecodeSnapshotFile(r io.Reader) (api.SnapshotInfo, []byte, error) {
	br := bufio.NewReader(r)
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) || len(line) > maxHeaderBytes {
			return api.SnapshotInfo{}, nil, fmt.Errorf("%w: no snapshot header (the first line is not one); is this a file `cube operator snapshot save` wrote?", ErrBadSnapshot)
		}
		return api.SnapshotInfo{}, nil, fmt.Errorf("%w: no snapshot header: %v", ErrBadSnapshot, err)
	}
	var info api.SnapshotInfo
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&info); err != nil || info.Kind != api.SnapshotKind {
		return api.SnapshotInfo{}, nil, fmt.Errorf("%w: the first line is not a Cube snapshot header; is this a file `cube operator snapshot save` wrote?", ErrBadSnapshot)
	}
	switch {
	case info.Format < 1 || info.Format > api.SnapshotFormat:
		return info, nil, fmt.Errorf("%w: file format %d; this Cube reads formats 1 to %d (a newer Cube wrote it: restore with that version)", ErrBadSnapshot, info.Format, api.SnapshotFormat)
	case info.Version < oldestSnapshotVersion || info.Version > snapshotVersion:
		return info, nil, fmt.Errorf("%w: state version %d; this Cube reads versions %d to %d (a newer Cube wrote it: restore with that version)", ErrBadSnapshot, info.Version, oldestSnapshotVersion, snapshotVersion)
	case info.Size < 0 || info.Size > api.MaxSnapshotBytes-int64(len(line)):
		return info, nil, fmt.Errorf("%w: header says %d bytes of state; the limit is %d", ErrBadSnapshot, info.Size, api.MaxSnapshotBytes)
	}
	state := make([]byte, info.Size)
	if _, err := io.ReadFull(br, state); err != nil {
		return info, nil, fmt.Errorf("%w: truncated: the header says %d bytes of state: %v", ErrBadSnapshot, info.Size, err)
	}
	if n, _ := io.Copy(io.Discard, io.LimitReader(br, 1)); n > 0 {
		return info, nil, fmt.Errorf("%w: more bytes follow the %d bytes of state the header names", ErrBadSnapshot, info.Size)
	}
	sum := sha256.Sum256(state)
	if got := hex.EncodeToString(sum[:]); got != info.SHA256 {
		return info, nil, fmt.Errorf("%w: checksum mismatch: the state's SHA-256 is %s, the header says %s (the file is damaged)", ErrBadSnapshot, got, info.SHA256)
	}
	d, err := decodeState(bytes.NewReader(state))
	if err != nil {
		return info, nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	if d.Version != info.Version || len(d.Tasks) != info.Tasks || len(d.Workers) != info.Workers || len(d.Tokens) != info.Tokens || len(d.Services) != info.Services {
		return info, nil, fmt.Errorf("%w: the state (version %d, %d tasks, %d workers, %d tokens, %d services) does not match its header (version %d, %d tasks, %d workers, %d tokens, %d services)",
			ErrBadSnapshot, d.Version, len(d.Tasks), len(d.Workers), len(d.Tokens), len(d.Services), info.Version, info.Tasks, info.Workers, info.Tokens, info.Services)
	}
	return info, state, nil
}

// decodeState decodes the state as Persist writes it and checks its version;
// Restore reads it the same way.
func decodeState(r io.Reader) (snapshotData, error) {
	var d snapshotData
	if err := json.NewDecoder(r).Decode(&d); err != nil {
		return snapshotData{}, fmt.Errorf("restore snapshot: %w", err)
	}
	if d.Version < oldestSnapshotVersion || d.Version > snapshotVersion {
		return snapshotData{}, fmt.Errorf("restore snapshot: version %d, this manager reads versions %d to %d", d.Version, oldestSnapshotVersion, snapshotVersion)
	}
	return d, nil
}
