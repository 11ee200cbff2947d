package worker

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cube-orch/cube/api"
)

// Stats reports the machine's memory, disk (of the data dir's file system),
// CPU and load, the resources the worker's live tasks asked for, and whether
// the container runtime answers.
func (w *Worker) Stats(ctx context.Context) api.Stats {
	s := api.Stats{Worker: w.name, Cpus: runtime.NumCPU(), CpuUsage: w.cpu.usage()}
	if mem, err := readMeminfo("/proc/meminfo"); err == nil {
		s.MemTotal, s.MemAvailable = mem["MemTotal"], mem["MemAvailable"]
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(w.cfg.DataDir, &fs); err == nil {
		s.DiskTotal = int64(fs.Blocks) * int64(fs.Bsize)
		s.DiskFree = int64(fs.Bavail) * int64(fs.Bsize)
	}
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(data))
		if len(f) >= 3 {
			s.LoadAvg1, _ = strconv.ParseFloat(f[0], 64)
			s.LoadAvg5, _ = strconv.ParseFloat(f[1], 64)
			s.LoadAvg15, _ = strconv.ParseFloat(f[2], 64)
		}
	}
	for _, t := range w.Tasks() {
		if t.State.Terminal() {
			continue
		}
		s.TaskCount++
		s.AllocatedCpu += t.Cpu
		s.AllocatedMemory += t.Memory
		s.AllocatedDisk += t.Disk
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := w.rt.Ping(pctx); err != nil {
		s.RuntimeError = err.Error()
	} else {
		s.RuntimeAvailable = true
	}
	return s
}

// readMeminfo parses /proc/meminfo into bytes per key.
func readMeminfo(path string) (map[string]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := make(map[string]int64)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			continue
		}
		if len(fields) > 1 && fields[1] == "kB" {
			n *= 1024
		}
		out[key] = n
	}
	return out, sc.Err()
}

// cpuSampler measures the busy fraction of all CPUs from /proc/stat over a
// fixed period in the background, so that GET /stats never blocks sampling
// (the seed's scheduler blocked seconds per node for it).
type cpuSampler struct {
	mu   sync.Mutex
	last float64
}

func newCPUSampler() *cpuSampler { return &cpuSampler{} }

func (c *cpuSampler) usage() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

func (c *cpuSampler) run(ctx context.Context, every time.Duration) {
	prevIdle, prevTotal, err := readCPU("/proc/stat")
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		idle, total, err2 := readCPU("/proc/stat")
		if err == nil && err2 == nil && total > prevTotal {
			busy := 1 - float64(idle-prevIdle)/float64(total-prevTotal)
			c.mu.Lock()
			c.last = busy
			c.mu.Unlock()
		}
		prevIdle, prevTotal, err = idle, total, err2
	}
}

// readCPU returns the idle (idle + iowait) and total jiffies of the "cpu" line.
func readCPU(path string) (idle, total uint64, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("%s: unexpected first line %q", path, line)
	}
	for i, v := range f[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: field %d: %w", path, i+1, err)
		}
		total += n
		if i == 3 || i == 4 {
			idle += n
		}
	}
	return idle, total, nil
}

// Capacity returns what this machine offers to tasks: its CPU cores, its
// memory and the size of the file system holding dir. Workers advertise it
// through gossip; the scheduler places against it.
func Capacity(dir string) (cpu float64, memory, disk int64) {
	cpu = float64(runtime.NumCPU())
	if mem, err := readMeminfo("/proc/meminfo"); err == nil {
		memory = mem["MemTotal"]
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err == nil {
		disk = int64(fs.Blocks) * int64(fs.Bsize)
	}
	return cpu, memory, disk
}
