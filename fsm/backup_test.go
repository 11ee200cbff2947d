package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/testkit"
)

// scriptedState is the persisted state of an FSM that ran script: two
// tasks, two workers, two tokens.
func scriptedState(t *testing.T) []byte {
	t.Helper()
	f := New()
	for i, cmd := range script(newTask()) {
		if gc, ok := cmd.(CollectGarbage); ok {
			cmd = CollectGarbage{Workers: gc.Workers} // keep the ended tasks: a file with tasks in it
		}
		applyLog(t, f, uint64(i+1), cmd)
	}
	return state(t, f)
}

func TestSnapshotFile_RoundTrip(t *testing.T) {
	st := scriptedState(t)
	file, info, err := EncodeSnapshotFile(st, 42, 7, t0)
	if err != nil {
		t.Fatal(err)
	}
	want := api.SnapshotInfo{Kind: api.SnapshotKind, Format: api.SnapshotFormat, Version: snapshotVersion, Index: 42, Term: 7,
		Size: int64(len(st)), SHA256: info.SHA256, Tasks: 2, Workers: 2, Tokens: 2, Services: 1, Created: t0}
	if info != want || len(info.SHA256) != 64 {
		t.Errorf("info = %+v, want %+v", info, want)
	}
	got, gotState, err := DecodeSnapshotFile(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if got != info || !bytes.Equal(gotState, st) {
		t.Errorf("decoded %+v (%d bytes), want %+v (%d bytes)", got, len(gotState), info, len(st))
	}
	// The state restores into an FSM as the original.
	f := New()
	if err := f.Restore(io.NopCloser(bytes.NewReader(gotState))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(state(t, f), st) {
		t.Error("restored state differs")
	}
}

// Every damaged or too new file is refused with ErrBadSnapshot and a
// message that says what is wrong.
func TestSnapshotFile_Refusals(t *testing.T) {
	st := scriptedState(t)
	file, info, err := EncodeSnapshotFile(st, 42, 7, t0)
	if err != nil {
		t.Fatal(err)
	}
	header := func(mod func(*api.SnapshotInfo)) []byte {
		i := info
		mod(&i)
		b, _ := json.Marshal(i)
		return append(b, '\n')
	}
	withHeader := func(h []byte, body []byte) []byte { return append(append([]byte{}, h...), body...) }
	flipped := bytes.Clone(file)
	flipped[len(flipped)-10] ^= 0x01

	newer := []byte(strings.Replace(string(st), fmt.Sprintf(`"Version":%d`, snapshotVersion), fmt.Sprintf(`"Version":%d`, snapshotVersion+1), 1))
	// Written as a newer Cube would: header and state say version+1.
	newerFile := withHeader(header(func(i *api.SnapshotInfo) {
		i.Version, i.Size, i.SHA256 = snapshotVersion+1, int64(len(newer)), sha(newer)
	}), newer)

	for _, tc := range []struct {
		name string
		file []byte
		want string
	}{
		{"empty", nil, "no snapshot header"},
		{"not a snapshot", []byte("hello world\n"), "not a Cube snapshot header"},
		// The state's one line is longer than a header may be, or not one.
		{"raw state without header", st, "is this a file `cube operator snapshot save` wrote?"},
		{"checksum", flipped, "checksum mismatch"},
		{"truncated", file[:len(file)-5], "truncated"},
		{"trailing bytes", append(bytes.Clone(file), 'x'), "more bytes follow"},
		{"newer format", withHeader(header(func(i *api.SnapshotInfo) { i.Format = api.SnapshotFormat + 1 }), st), "file format 2; this Cube reads formats 1 to 1"},
		{"newer state version", newerFile, fmt.Sprintf("state version %d; this Cube reads versions 1 to %d", snapshotVersion+1, snapshotVersion)},
		{"counts lie", withHeader(header(func(i *api.SnapshotInfo) { i.Tasks = 3 }), st), "does not match its header"},
		{"huge size", withHeader(header(func(i *api.SnapshotInfo) { i.Size = 1 << 40 }), st), "the limit is"},
		{"unknown header field", withHeader([]byte(`{"Kind":"cube-snapshot","Format":1,"Extra":1}`+"\n"), st), "not a Cube snapshot header"},
		{"state not JSON", withHeader(header(func(i *api.SnapshotInfo) { i.Size = 3; i.SHA256 = sha([]byte("abc")) }), []byte("abc")), "restore snapshot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := DecodeSnapshotFile(bytes.NewReader(tc.file))
			testkit.WantErr(t, "DecodeSnapshotFile", err, tc.want)
			if !errors.Is(err, ErrBadSnapshot) {
				t.Errorf("err = %v, want it to wrap ErrBadSnapshot", err)
			}
		})
	}
	if _, _, err := EncodeSnapshotFile([]byte("nope"), 1, 1, t0); err == nil {
		t.Error("EncodeSnapshotFile accepted a state that does not decode")
	}
}

// FuzzDecodeSnapshotFile: no input panics the decoder, and whatever it
// accepts restores into an FSM.
func FuzzDecodeSnapshotFile(f *testing.F) {
	st := []byte(`{"Version":2,"Tasks":[],"Workers":[]}` + "\n")
	file, _, err := EncodeSnapshotFile(st, 1, 1, t0)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(file)
	f.Add([]byte("{}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, s, err := DecodeSnapshotFile(bytes.NewReader(b))
		if err != nil {
			return
		}
		if err := New().Restore(io.NopCloser(bytes.NewReader(s))); err != nil {
			t.Fatalf("accepted a file whose state does not restore: %v", err)
		}
	})
}

// sha is the hex SHA-256 of b.
func sha(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
