package main

import (
	"strings"
	"testing"
	"time"
)

func TestReadTaskFile_SizesWithUnits(t *testing.T) {
	cases := []struct {
		file       string
		mem, disk  int64
		wantErrHas string
	}{
		{`{"Image":"cube-echo:latest","Memory":"64m","Disk":"1g"}`, 64 << 20, 1 << 30, ""},
		{`{"State":2,"Task":{"Image":"cube-echo:latest","Memory":"8192k","Disk":"1.5GiB"}}`, 8 << 20, 3 << 29, ""},
		{`{"Image":"cube-echo:latest","memory":"64MB","Disk":2048}`, 64 << 20, 2048, ""},
		{`{"Image":"cube-echo:latest","Memory":67108864}`, 64 << 20, 0, ""},
		{`{"Image":"cube-echo:latest","Memory":"16777216"}`, 16 << 20, 0, ""},
		{`{"Image":"cube-echo:latest","Memory":"64x"}`, 0, 0, `Task.Memory: "64x" is not a size: want a number of bytes, or a number with a unit as Docker takes them`},
		{`{"Task":{"Image":"cube-echo:latest","Disk":"lots"}}`, 0, 0, `Task.Disk: "lots" is not a size`},
		// Numbers go to the API's checks as before.
		{`{"Task":{"Image":"cube-echo:latest","Memory":-1}}`, 0, 0, "Memory must be"},
	}
	for _, c := range cases {
		path := svcFile(t, "task.json", c.file)
		ev, err := readTaskFile(path)
		if c.wantErrHas != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErrHas) || !strings.Contains(err.Error(), path) {
				t.Errorf("%s: %v, want an error with %q and the file's name", c.file, err, c.wantErrHas)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.file, err)
			continue
		}
		if ev.Task.Memory != c.mem || ev.Task.Disk != c.disk || ev.Task.Image != "cube-echo:latest" {
			t.Errorf("%s: Memory %d Disk %d Image %q, want %d %d", c.file, ev.Task.Memory, ev.Task.Disk, ev.Task.Image, c.mem, c.disk)
		}
	}
}

func TestAgo_HumanUnits(t *testing.T) {
	now := time.Now()
	for _, c := range []struct {
		t    time.Time
		want string
	}{
		{time.Time{}, "-"},
		{now.Add(-5 * time.Second), "5 seconds ago"},
		{now.Add(-50 * time.Minute), "50 minutes ago"},
		{now.Add(-3*time.Hour - 17*time.Minute), "3 hours ago"},
		{now.Add(-50 * time.Hour), "2 days ago"},
	} {
		if got := ago(c.t); got != c.want {
			t.Errorf("ago(now-%s) = %q, want %q", now.Sub(c.t).Round(time.Second), got, c.want)
		}
	}
	for _, c := range []struct {
		n    int64
		want string
	}{{0, "-"}, {512, "512B"}, {64 << 20, "64.0MiB"}, {3 << 29, "1.5GiB"}} {
		if got := sizeText(c.n); got != c.want {
			t.Errorf("sizeText(%d) = %q, want %q", c.n, got, c.want)
		}
	}
}
