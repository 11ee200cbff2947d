package health

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

func ports(keys ...string) api.PortSet {
	s := api.PortSet{}
	for _, k := range keys {
		s[k] = struct{}{}
	}
	return s
}

func bind(pairs ...string) []api.PortBinding {
	var out []api.PortBinding
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, api.PortBinding{HostIp: pairs[i], HostPort: pairs[i+1]})
	}
	return out
}

func TestSpecFor(t *testing.T) {
	id := uuid.MustParse("266592cd-960d-4091-981c-8c25c44b1018")
	started := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	base := func(mod func(*api.Task)) api.Task {
		tk := api.Task{
			ID:           id,
			Generation:   7,
			State:        api.Running,
			HealthCheck:  "/health",
			StartTime:    started,
			ExposedPorts: ports("7777/tcp"),
			HostPorts:    api.PortMap{"7777/tcp": bind("0.0.0.0", "32768")},
		}
		if mod != nil {
			mod(&tk)
		}
		return tk
	}
	defaults := Spec{
		TaskID: id, Generation: 7, Kind: KindHTTP, Addr: "10.0.0.5:32768", Path: "/health",
		Interval: DefaultInterval, Timeout: DefaultTimeout, Grace: DefaultGrace,
		Threshold: DefaultThreshold, StartedAt: started,
	}
	with := func(mod func(*Spec)) Spec {
		s := defaults
		mod(&s)
		return s
	}

	tests := []struct {
		name    string
		task    api.Task
		worker  string
		want    Spec
		wantOK  bool
		wantErr string // substring; "" = no error
		noPort  bool   // error must wrap ErrNoHostPort
	}{
		{name: "no health check", task: base(func(t *api.Task) { t.HealthCheck = "" }), worker: "10.0.0.5:5555"},
		{name: "defaults", task: base(nil), worker: "10.0.0.5:5555", want: defaults, wantOK: true},
		{name: "tcp kind", task: base(func(t *api.Task) { t.HealthCheck = "tcp" }), worker: "10.0.0.5:5555",
			want: with(func(s *Spec) { s.Kind, s.Path = KindTCP, "" }), wantOK: true},
		{name: "path with query", task: base(func(t *api.Task) { t.HealthCheck = "/health?deep=1" }), worker: "10.0.0.5:5555",
			want: with(func(s *Spec) { s.Path = "/health?deep=1" }), wantOK: true},
		{name: "custom timing", task: base(func(t *api.Task) {
			t.HealthCheckInterval, t.HealthCheckTimeout, t.HealthCheckGrace, t.HealthCheckThreshold = "1s", "300ms", "10s", 5
		}), worker: "10.0.0.5:5555",
			want: with(func(s *Spec) {
				s.Interval, s.Timeout, s.Grace, s.Threshold = time.Second, 300*time.Millisecond, 10*time.Second, 5
			}), wantOK: true},
		{name: "zero grace", task: base(func(t *api.Task) { t.HealthCheckGrace = "0s" }), worker: "10.0.0.5:5555",
			want: with(func(s *Spec) { s.Grace = 0 }), wantOK: true},
		{name: "default timeout clamped to a short interval", task: base(func(t *api.Task) { t.HealthCheckInterval = "500ms" }), worker: "10.0.0.5:5555",
			want: with(func(s *Spec) { s.Interval, s.Timeout = 500*time.Millisecond, 500*time.Millisecond }), wantOK: true},
		{name: "named port", task: base(func(t *api.Task) {
			t.HealthCheckPort = "9090/tcp"
			t.ExposedPorts = ports("80/tcp", "9090/tcp")
			t.HostPorts = api.PortMap{"80/tcp": bind("0.0.0.0", "30001"), "9090/tcp": bind("0.0.0.0", "30002")}
		}), worker: "10.0.0.5:5555", want: with(func(s *Spec) { s.Addr = "10.0.0.5:30002" }), wantOK: true},
		{name: "lowest exposed port numerically", task: base(func(t *api.Task) {
			t.ExposedPorts = ports("9000/tcp", "80/tcp", "10000/tcp", "53/udp")
			t.HostPorts = api.PortMap{
				"9000/tcp":  bind("0.0.0.0", "30001"),
				"80/tcp":    bind("0.0.0.0", "30002"),
				"10000/tcp": bind("0.0.0.0", "30003"),
				"53/udp":    bind("0.0.0.0", "30004"),
			}
		}), worker: "10.0.0.5:5555", want: with(func(s *Spec) { s.Addr = "10.0.0.5:30002" }), wantOK: true},
		{name: "lowest exposed port that has a binding", task: base(func(t *api.Task) {
			t.ExposedPorts = ports("80/tcp", "7777/tcp")
			t.HostPorts = api.PortMap{"80/tcp": {}, "7777/tcp": bind("0.0.0.0", "30005")}
		}), worker: "10.0.0.5:5555", want: with(func(s *Spec) { s.Addr = "10.0.0.5:30005" }), wantOK: true},
		{name: "IPv4 before IPv6", task: base(func(t *api.Task) {
			t.HostPorts = api.PortMap{"7777/tcp": bind("::", "30001", "0.0.0.0", "30009")}
		}), worker: "10.0.0.5:5555", want: with(func(s *Spec) { s.Addr = "10.0.0.5:30009" }), wantOK: true},
		{name: "empty HostIp counts as IPv4", task: base(func(t *api.Task) {
			t.HostPorts = api.PortMap{"7777/tcp": bind("::", "30001", "", "30009")}
		}), worker: "10.0.0.5:5555", want: with(func(s *Spec) { s.Addr = "10.0.0.5:30009" }), wantOK: true},
		{name: "lowest host port numerically", task: base(func(t *api.Task) {
			t.HostPorts = api.PortMap{"7777/tcp": bind("0.0.0.0", "9000", "0.0.0.0", "10000", "0.0.0.0", "30000")}
		}), worker: "10.0.0.5:5555", want: with(func(s *Spec) { s.Addr = "10.0.0.5:9000" }), wantOK: true},
		{name: "IPv6 only", task: base(func(t *api.Task) {
			t.HostPorts = api.PortMap{"7777/tcp": bind("::", "30001")}
		}), worker: "10.0.0.5:5555", want: with(func(s *Spec) { s.Addr = "10.0.0.5:30001" }), wantOK: true},
		{name: "specific IPv4 binding", task: base(func(t *api.Task) {
			t.HostPorts = api.PortMap{"7777/tcp": bind("192.168.1.9", "30001")}
		}), worker: "10.0.0.5:5555", want: with(func(s *Spec) { s.Addr = "192.168.1.9:30001" }), wantOK: true},
		{name: "specific IPv6 binding", task: base(func(t *api.Task) {
			t.HostPorts = api.PortMap{"7777/tcp": bind("fd00::9", "30001")}
		}), worker: "10.0.0.5:5555", want: with(func(s *Spec) { s.Addr = "[fd00::9]:30001" }), wantOK: true},
		{name: "unusable bindings skipped", task: base(func(t *api.Task) {
			t.HostPorts = api.PortMap{"7777/tcp": bind("0.0.0.0", "", "0.0.0.0", "x", "not-an-ip", "1", "0.0.0.0", "30007")}
		}), worker: "10.0.0.5:5555", want: with(func(s *Spec) { s.Addr = "10.0.0.5:30007" }), wantOK: true},
		{name: "worker host name", task: base(nil), worker: "w1.example:5555",
			want: with(func(s *Spec) { s.Addr = "w1.example:32768" }), wantOK: true},
		{name: "worker IPv6 host", task: base(nil), worker: "[fd00::5]:5555",
			want: with(func(s *Spec) { s.Addr = "[fd00::5]:32768" }), wantOK: true},
		{name: "worker URL", task: base(nil), worker: "http://10.0.0.5:5555/",
			want: defaults, wantOK: true},
		{name: "worker without port", task: base(nil), worker: "10.0.0.5",
			want: defaults, wantOK: true},
		{name: "worker on all addresses", task: base(nil), worker: "0.0.0.0:5555",
			want: with(func(s *Spec) { s.Addr = "127.0.0.1:32768" }), wantOK: true},
		{name: "worker address empty", task: base(nil), worker: "", wantErr: "worker API address"},
		{name: "bad health check", task: base(func(t *api.Task) { t.HealthCheck = "health" }), worker: "10.0.0.5:5555",
			wantErr: `HealthCheck "health" is neither "tcp" nor an HTTP path`},
		{name: "bad interval", task: base(func(t *api.Task) { t.HealthCheckInterval = "5x" }), worker: "10.0.0.5:5555",
			wantErr: `HealthCheckInterval "5x" is not a Go duration`},
		{name: "bad timeout", task: base(func(t *api.Task) { t.HealthCheckTimeout = "soon" }), worker: "10.0.0.5:5555",
			wantErr: `HealthCheckTimeout "soon" is not a Go duration`},
		{name: "bad grace", task: base(func(t *api.Task) { t.HealthCheckGrace = "-1s" }), worker: "10.0.0.5:5555",
			wantErr: "HealthCheckGrace -1s must be from 0s"},
		{name: "timeout above interval cut to the interval", task: base(func(t *api.Task) { t.HealthCheckInterval, t.HealthCheckTimeout = "1s", "2s" }), worker: "10.0.0.5:5555",
			want: with(func(s *Spec) { s.Interval, s.Timeout = time.Second, time.Second }), wantOK: true},
		{name: "zero timeout", task: base(func(t *api.Task) { t.HealthCheckTimeout = "0s" }), worker: "10.0.0.5:5555",
			wantErr: "HealthCheckTimeout 0s must be greater than 0"},
		{name: "interval too short", task: base(func(t *api.Task) { t.HealthCheckInterval = "1ms" }), worker: "10.0.0.5:5555",
			wantErr: "HealthCheckInterval 1ms must be from 100ms"},
		{name: "threshold out of range", task: base(func(t *api.Task) { t.HealthCheckThreshold = -2 }), worker: "10.0.0.5:5555",
			wantErr: "HealthCheckThreshold -2 must be from 0"},
		{name: "named port without binding", task: base(func(t *api.Task) {
			t.HealthCheckPort = "9090/tcp"
			t.ExposedPorts = ports("7777/tcp", "9090/tcp")
		}), worker: "10.0.0.5:5555", wantErr: "HealthCheckPort 9090/tcp", noPort: true},
		{name: "no host ports yet", task: base(func(t *api.Task) { t.HostPorts = nil }), worker: "10.0.0.5:5555",
			wantErr: "no published host port", noPort: true},
		{name: "empty binding list", task: base(func(t *api.Task) { t.HostPorts = api.PortMap{"7777/tcp": {}} }), worker: "10.0.0.5:5555",
			wantErr: "no published host port", noPort: true},
		{name: "no tcp port exposed", task: base(func(t *api.Task) {
			t.ExposedPorts = ports("53/udp")
			t.HostPorts = api.PortMap{"53/udp": bind("0.0.0.0", "30001")}
		}), worker: "10.0.0.5:5555", wantErr: "needs a TCP port to probe"},
		{name: "udp health check port", task: base(func(t *api.Task) { t.HealthCheckPort = "53/udp" }), worker: "10.0.0.5:5555",
			wantErr: `HealthCheckPort "53/udp": protocol "udp" cannot be checked`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := SpecFor(tc.task, tc.worker)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("SpecFor(worker %q) error = %v; want one containing %q", tc.worker, err, tc.wantErr)
				}
				if got := errors.Is(err, ErrNoHostPort); got != tc.noPort {
					t.Errorf("errors.Is(%v, ErrNoHostPort) = %v; want %v", err, got, tc.noPort)
				}
				var verr *api.ValidationError
				if !tc.noPort && !errors.As(err, &verr) {
					t.Errorf("error %v is not a *api.ValidationError", err)
				}
				if ok {
					t.Errorf("ok = true with an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("SpecFor(worker %q): unexpected error %v", tc.worker, err)
			}
			if ok != tc.wantOK {
				t.Fatalf("ok = %v; want %v", ok, tc.wantOK)
			}
			if got != tc.want {
				t.Errorf("SpecFor(worker %q)\n got  %+v\n want %+v", tc.worker, got, tc.want)
			}
		})
	}
}

// TestSpecFor_Deterministic checks that map iteration order never changes the
// chosen address, so that Sync does not replace a check on every pass.
func TestSpecFor_Deterministic(t *testing.T) {
	tk := api.Task{
		HealthCheck:  "/health",
		ExposedPorts: ports("8080/tcp", "8081/tcp", "443/tcp", "9000/tcp"),
		HostPorts: api.PortMap{
			"8080/tcp": bind("::", "1", "0.0.0.0", "40002", "0.0.0.0", "40001"),
			"8081/tcp": bind("0.0.0.0", "2"),
			"443/tcp":  bind("::", "40010", "127.0.0.1", "40011", "0.0.0.0", "40012"),
			"9000/tcp": bind("0.0.0.0", "3"),
		},
	}
	for i := 0; i < 50; i++ {
		s, ok, err := SpecFor(tk, "10.0.0.5:5555")
		if err != nil || !ok {
			t.Fatalf("SpecFor: ok=%v err=%v", ok, err)
		}
		if s.Addr != "127.0.0.1:40011" {
			t.Fatalf("run %d: Addr = %q; want 127.0.0.1:40011 (port 443, lowest IPv4 host port)", i, s.Addr)
		}
	}
}

func TestSpec_Same(t *testing.T) {
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	a := Spec{TaskID: uuid.New(), Generation: 1, Kind: KindHTTP, Addr: "h:1", Path: "/", StartedAt: at}
	b := a
	b.StartedAt = at.In(time.FixedZone("X", 3600))
	if !a.same(b) {
		t.Errorf("same StartedAt in another zone: same = false; want true")
	}
	b.Generation = 2
	if a.same(b) {
		t.Errorf("different Generation: same = true; want false")
	}
}
