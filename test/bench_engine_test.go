//go:build bench

package test

// The engine alone: the ceiling any orchestrator's placement burst on this
// engine works under. The benchmark itself creates and starts the burst's
// 100 containers (same image, port 7777 published on a random host port, a
// label), all at once, with nothing between the calls: no scheduler, no
// record, no report. Cube and Swarm are then read against it, not only
// against each other: on this machine both are bound by the engine's starts
// (bench/RESULTS.md), so their difference is small beside the engine's own
// spread from one burst to the next.

import (
	"context"
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/go-connections/nat"
)

// sysEngine is the engine alone (placement only).
const sysEngine = "engine"

// enginePlacement measures b.placeN bursts of benchPlaceTasks containers
// created and started straight on the engine. BENCH_ENGINE=0 skips it.
func (b *bench) enginePlacement() {
	if !b.want("placement") || os.Getenv("BENCH_ENGINE") == "0" {
		return
	}
	cli := dockerClient(b.t)
	defer cli.Close()
	ev := b.watchEvents(benchLabel)
	s := b.series("placement", sysEngine)
	for i := 0; i < b.placeN; i++ {
		trial := fmt.Sprintf("engine-%d-%d", time.Now().UnixNano(), i)
		ids := make([]string, benchPlaceTasks)
		var failed atomic.Int32
		var firstErr atomic.Value
		var wg sync.WaitGroup
		machine0 := benchMachineCPU()
		t0 := time.Now()
		for j := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 3*benchWait)
				defer cancel()
				cfg := &container.Config{Image: "cube-echo:latest", ExposedPorts: nat.PortSet{"7777/tcp": {}},
					Labels: map[string]string{benchLabel: trial}}
				hc := &container.HostConfig{PortBindings: nat.PortMap{"7777/tcp": {{}}}}
				r, err := cli.ContainerCreate(ctx, cfg, hc, nil, nil, fmt.Sprintf("%s-%d", trial, j))
				if err == nil {
					ids[j] = r.ID
					err = cli.ContainerStart(ctx, r.ID, container.StartOptions{})
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}()
		}
		wg.Wait()
		last := time.Now()
		cpu := map[string]float64{"machine": benchRound2(benchMachineCPU() - machine0)}
		if n := failed.Load(); n > 0 {
			b.engineRemove(ids)
			b.t.Fatalf("engine burst %d: %d of %d containers not created and started: %v", i+1, n, len(ids), firstErr.Load())
		}
		p := map[string]float64{}
		b.burstPhases(ev, p, t0, func(e benchEvent) bool { return e.Attrs[benchLabel] == trial })
		b.add(s, b.placeN, t0, last, p, fmt.Sprintf("%.1f tasks/s", float64(len(ids))/last.Sub(t0).Seconds()))
		s.Trials[len(s.Trials)-1].CPU = cpu
		b.engineRemove(ids)
	}
	b.throughput(s)
}

// engineRemove force-removes a burst's containers, 16 at a time, and waits
// for the engine to finish (as the Cube and Swarm trials wait for theirs).
func (b *bench) engineRemove(ids []string) {
	cli := dockerClient(b.t)
	defer cli.Close()
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, id := range ids {
		if id == "" {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), benchWait)
			defer cancel()
			if err := cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true}); err != nil {
				fmt.Printf("bench: remove engine-burst container %s: %v\n", id[:12], err)
			}
		}()
	}
	wg.Wait()
}

// engineLine is the text under the table that reads the placement row
// against the engine alone; "" without an engine series.
func (b *bench) engineLine() string {
	e := b.find("placement", sysEngine)
	if e == nil || e.Stats.Median <= 0 {
		return ""
	}
	line := fmt.Sprintf("\nThe engine alone (the same %d containers created and started by the benchmark itself, all at once, no orchestrator; %d bursts): median %s (p95 %s, max %s), %.1f containers/s",
		benchPlaceTasks, e.Stats.N, benchFmtMs(e.Stats.Median), benchFmtMs(e.Stats.P95), benchFmtMs(e.Stats.Max), benchPlaceTasks/(e.Stats.Median/1000))
	for _, sys := range []string{sysCube, sysSwarmDefault} {
		if s := b.find("placement", sys); s != nil && s.Stats.Median > 0 {
			name := map[string]string{sysCube: "Cube", sysSwarmDefault: "Swarm"}[sys]
			line += fmt.Sprintf("; %s's median is %.0f %% of it", name, math.Round(s.Stats.Median/e.Stats.Median*100))
		}
	}
	return line + ".\n"
}
