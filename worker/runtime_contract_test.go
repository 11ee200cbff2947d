package worker_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/cube-orch/cube/worker"
	"github.com/cube-orch/cube/worker/runtimetest"
)

// TestDocker_Contract runs the Runtime contract against the real engine and
// the echo image: the cases the simulated runtime (worker/simrt) passes too.
func TestDocker_Contract(t *testing.T) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatalf("docker client: %v", err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cli.ImageInspect(ctx, "cube-echo:latest"); err != nil {
		t.Fatalf("image cube-echo:latest: %v (run make images)", err)
	}
	runtimetest.Run(t, runtimetest.Fixture{
		New: func(t *testing.T) worker.Runtime {
			d, err := worker.NewDocker(worker.DefaultDockerConfig())
			if err != nil {
				t.Fatalf("NewDocker: %v", err)
			}
			t.Cleanup(func() { d.Close() })
			return d
		},
		Image:        "cube-echo:latest",
		MissingImage: "cube-no-such-image:v0",
		Labels: func(t *testing.T) map[string]string {
			b := make([]byte, 8)
			_, _ = rand.Read(b)
			v := hex.EncodeToString(b)
			t.Cleanup(func() { removeLabelled(t, cli, "cube.test="+v) })
			return map[string]string{"cube.test": v}
		},
		Crash: func(t *testing.T, _ worker.Runtime, id string) int {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := cli.ContainerKill(ctx, id, "KILL"); err != nil {
				t.Fatalf("docker kill %s: %v", id, err)
			}
			return 137
		},
		Within: time.Minute,
	})
}

// removeLabelled force-removes every container carrying label (k=v).
func removeLabelled(t *testing.T, cli *client.Client, label string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", label))})
	if err != nil {
		t.Errorf("cleanup: list containers: %v", err)
		return
	}
	for _, c := range list {
		if err := cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil && !client.IsErrNotFound(err) {
			t.Errorf("cleanup: remove %s: %v", c.ID, err)
		}
	}
}
