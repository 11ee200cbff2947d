// Package drill runs Cube (and Docker Swarm beside it) on machines and takes
// machines away: the machine-failure drills of `make drill` (issue 11).
//
// A machine here is what the Vagrantfile's docker provider makes: a container
// running systemd and its own Docker Engine, from the image
// scripts/machine-image.sh builds from Debian's packages, with its own address
// on a Docker network (deploy/machine/machines.json names them all). Killing
// the container powers the machine off: its processes, its engine, its task
// containers and its network interface go at once. Cube is installed from
// the checkout mounted at /vagrant and run by systemd (deploy/machine/boot.sh).
//
// This file brings the machines up and acts on them; cube.go talks to Cube on
// them, swarm.go to Swarm, drills.go holds the drills and report.go writes the
// results.
package drill

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Spec is deploy/machine/machines.json.
type Spec struct {
	Network    string        `json:"network"`
	Subnet     string        `json:"subnet"` // the first three octets of a /24
	Image      string        `json:"image"`
	Machines   []MachineSpec `json:"machines"`
	DockerArgs []string      `json:"docker_args"`
}

// MachineSpec is one machine of the spec.
type MachineSpec struct {
	Name string `json:"name"`
	Role string `json:"role"` // manager or worker
	Host int    `json:"host"` // last octet of its address
}

// LoadSpec reads and checks a machines.json.
func LoadSpec(path string) (Spec, error) {
	var s Spec
	b, err := os.ReadFile(path)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	if s.Network == "" || s.Subnet == "" || s.Image == "" || len(s.Machines) == 0 {
		return s, fmt.Errorf("%s: network, subnet, image and machines are required", path)
	}
	seen := map[string]bool{}
	for _, m := range s.Machines {
		if m.Role != "manager" && m.Role != "worker" {
			return s, fmt.Errorf("%s: machine %q: role %q is neither manager nor worker", path, m.Name, m.Role)
		}
		if m.Host < 2 || m.Host > 254 || seen[m.Name] {
			return s, fmt.Errorf("%s: machine %q: bad host %d or name given twice", path, m.Name, m.Host)
		}
		seen[m.Name] = true
	}
	return s, nil
}

// Addr is the machine's address on the machines' network.
func (s Spec) Addr(name string) string {
	for _, m := range s.Machines {
		if m.Name == name {
			return fmt.Sprintf("%s.%d", s.Subnet, m.Host)
		}
	}
	return ""
}

// Names returns the machines of a role ("" for all), in the spec's order.
func (s Spec) Names(role string) []string {
	var out []string
	for _, m := range s.Machines {
		if role == "" || m.Role == role {
			out = append(out, m.Name)
		}
	}
	return out
}

// managersEnv is CUBE_MACHINE_MANAGERS: every manager as NAME=ADDR.
func (s Spec) managersEnv() string {
	var parts []string
	for _, n := range s.Names("manager") {
		parts = append(parts, n+"="+s.Addr(n))
	}
	return strings.Join(parts, " ")
}

// dockerTimeout bounds one docker CLI call (a machine's own engine answering
// through `docker exec` included).
const dockerTimeout = 90 * time.Second

// Machines are the running machine containers of one spec.
type Machines struct {
	Spec Spec
	// Root is the checkout mounted at /vagrant in every machine.
	Root string
	// Fast is the timing profile Cube runs with on the machines.
	Fast bool
	// Prefix is put before each machine's name to name its container (""
	// for the Vagrantfile's names); the host name stays the machine's name.
	Prefix string
	// Logf reports progress.
	Logf func(format string, args ...any)
}

// Container is the name of a machine's container.
func (ms *Machines) Container(name string) string { return ms.Prefix + name }

// Docker runs the docker CLI on the host's engine with a timeout.
func Docker(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// Exec runs a command on a machine (docker exec).
func (ms *Machines) Exec(ctx context.Context, name string, args ...string) (string, error) {
	return Docker(ctx, append([]string{"exec", ms.Container(name)}, args...)...)
}

// Up brings every machine up: machines already running from the same image
// with the same timing profile (brought up by an earlier drill or by
// `vagrant up`) are reused, others are created afresh. It returns when every
// machine's cube unit is active.
func (ms *Machines) Up(ctx context.Context) error {
	if _, err := Docker(ctx, "image", "inspect", "--format", "{{.Id}}", ms.Spec.Image); err != nil {
		return fmt.Errorf("machine image %s is missing; `make machine-image` builds it: %w", ms.Spec.Image, err)
	}
	for _, f := range []string{"bin/machine/cube", "bin/machine/operator.token", "bin/machine/tls/cube-ca.pem", "deploy/machine/boot.sh"} {
		if _, err := os.Stat(filepath.Join(ms.Root, f)); err != nil {
			return fmt.Errorf("%s is missing; `make machine-files` builds it: %w", f, err)
		}
	}
	if _, err := Docker(ctx, "network", "inspect", ms.Spec.Network); err != nil {
		if _, err := Docker(ctx, "network", "create", "--subnet", ms.Spec.Subnet+".0/24",
			"--label", "cube.machines="+ms.Spec.Network, ms.Spec.Network); err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(ms.Spec.Machines))
	for i, m := range ms.Spec.Machines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = ms.upOne(ctx, m)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (ms *Machines) fastEnv() string {
	if ms.Fast {
		return "1"
	}
	return "0"
}

func (ms *Machines) upOne(ctx context.Context, m MachineSpec) error {
	out, err := Docker(ctx, "inspect", "--format",
		`{{.State.Running}} {{.Config.Image}} {{range .Config.Env}}{{println .}}{{end}}`, ms.Container(m.Name))
	if err == nil {
		running := strings.HasPrefix(out, "true ")
		same := strings.Contains(out, " "+ms.Spec.Image+" ") &&
			strings.Contains(out, "CUBE_MACHINE_FAST="+ms.fastEnv()+"\n")
		switch {
		case running && same:
			if err := ms.WaitBooted(ctx, m.Name); err != nil {
				return err
			}
			// Install what the checkout has now (boot.sh restarts cube
			// only when its binary, config or unit changed).
			if _, err := ms.Exec(ctx, m.Name, "systemctl", "restart", "cube-machine.service"); err != nil {
				return err
			}
			return ms.WaitBooted(ctx, m.Name)
		case same:
			return ms.Start(ctx, m.Name)
		}
		ms.Logf("machine %s: recreating it (other image or timing profile)", m.Name)
		if _, err := Docker(ctx, "rm", "-f", "-v", ms.Container(m.Name)); err != nil {
			return err
		}
	}
	args := []string{"run", "-d", "--name", ms.Container(m.Name), "--hostname", m.Name,
		"--network", ms.Spec.Network, "--ip", ms.Spec.Addr(m.Name),
		"--label", "cube.machine=" + m.Name, "--label", "cube.machines=" + ms.Spec.Network,
		"-v", ms.Root + ":/vagrant",
		"-e", "CUBE_MACHINE_ROLE=" + m.Role,
		"-e", "CUBE_MACHINE_NAME=" + m.Name,
		"-e", "CUBE_MACHINE_ADDR=" + ms.Spec.Addr(m.Name),
		"-e", "CUBE_MACHINE_MANAGERS=" + ms.Spec.managersEnv(),
		"-e", "CUBE_MACHINE_FAST=" + ms.fastEnv(),
	}
	args = append(args, ms.Spec.DockerArgs...)
	args = append(args, ms.Spec.Image)
	if _, err := Docker(ctx, args...); err != nil {
		return err
	}
	return ms.WaitBooted(ctx, m.Name)
}

// unit is the systemd unit of the machine's role.
func (ms *Machines) unit(name string) string {
	for _, m := range ms.Spec.Machines {
		if m.Name == name {
			return "cube-" + m.Role + ".service"
		}
	}
	return ""
}

// WaitBooted waits until the machine's cube unit is active (systemd booted,
// dockerd answering, boot.sh done).
func (ms *Machines) WaitBooted(ctx context.Context, name string) error {
	deadline := time.Now().Add(3 * time.Minute)
	var last string
	for time.Now().Before(deadline) {
		out, err := ms.Exec(ctx, name, "systemctl", "is-active", "cube-machine.service", ms.unit(name))
		if err == nil {
			return nil
		}
		last = strings.ReplaceAll(out, "\n", " ")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("machine %s: cube-machine and %s not active after 3 min (%s)", name, ms.unit(name), last)
}

// Kill powers a machine off: the container and everything in it die at once.
func (ms *Machines) Kill(ctx context.Context, name string) error {
	_, err := Docker(ctx, "kill", ms.Container(name))
	return err
}

// Start powers a machine on (disk kept) and waits for its boot.
func (ms *Machines) Start(ctx context.Context, name string) error {
	if _, err := Docker(ctx, "start", ms.Container(name)); err != nil {
		return err
	}
	return ms.WaitBooted(ctx, name)
}

// Reboot shuts a machine down cleanly (systemd stops its units and engine)
// and boots it again, disk kept.
func (ms *Machines) Reboot(ctx context.Context, name string) error {
	if _, err := Docker(ctx, "restart", "-t", "30", ms.Container(name)); err != nil {
		return err
	}
	return ms.WaitBooted(ctx, name)
}

// Running reports whether a machine's container runs.
func (ms *Machines) Running(ctx context.Context, name string) bool {
	out, err := Docker(ctx, "inspect", "--format", "{{.State.Running}}", ms.Container(name))
	return err == nil && out == "true"
}

// Disconnect cuts a machine off the network (its interface goes away).
func (ms *Machines) Disconnect(ctx context.Context, name string) error {
	_, err := Docker(ctx, "network", "disconnect", "-f", ms.Spec.Network, ms.Container(name))
	return err
}

// Connect puts a machine back on the network at its address.
func (ms *Machines) Connect(ctx context.Context, name string) error {
	_, err := Docker(ctx, "network", "connect", "--ip", ms.Spec.Addr(name), ms.Spec.Network, ms.Container(name))
	return err
}

// Netem shapes (spec non-empty, e.g. "delay 100ms 50ms loss 5%") or clears
// (spec empty) a machine's link.
func (ms *Machines) Netem(ctx context.Context, name, spec string) error {
	if spec == "" {
		_, err := ms.Exec(ctx, name, "tc", "qdisc", "del", "dev", "eth0", "root")
		return err
	}
	_, err := ms.Exec(ctx, name, append([]string{"tc", "qdisc", "replace", "dev", "eth0", "root", "netem"},
		strings.Fields(spec)...)...)
	return err
}

// Journal returns the journal of the machine's cube unit since a time.
func (ms *Machines) Journal(ctx context.Context, name string, since time.Time) (string, error) {
	return ms.Exec(ctx, name, "journalctl", "-q", "--no-pager", "-o", "short-iso-precise",
		"-u", ms.unit(name), "--since", since.UTC().Format("2006-01-02 15:04:05")+" UTC")
}

// Down removes every machine on the spec's network and the network.
func Down(ctx context.Context, spec Spec) error {
	var errs []error
	if ids, _ := Docker(ctx, "ps", "-aq", "--filter", "label=cube.machines="+spec.Network); ids != "" {
		if _, err := Docker(ctx, append([]string{"rm", "-f", "-v"}, strings.Fields(ids)...)...); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := Docker(ctx, "network", "inspect", spec.Network); err == nil {
		if _, err := Docker(ctx, "network", "rm", spec.Network); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
