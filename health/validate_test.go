package health

import (
	"errors"
	"strings"
	"testing"

	"github.com/cube-orch/cube/api"
)

func TestValidateTask(t *testing.T) {
	base := func(mod func(*api.Task)) api.Task {
		tk := api.Task{Image: "cube-echo:latest", HealthCheck: "/health", ExposedPorts: ports("7777/tcp")}
		if mod != nil {
			mod(&tk)
		}
		return tk
	}
	tests := []struct {
		name    string
		task    api.Task
		wantErr string // substring; "" = valid
	}{
		{name: "no health check", task: api.Task{Image: "x"}},
		{name: "no health check, no ports", task: api.Task{Image: "x", HealthCheckInterval: "1s"}},
		{name: "http path", task: base(nil)},
		{name: "tcp", task: base(func(t *api.Task) { t.HealthCheck = "tcp" })},
		{name: "all fields", task: base(func(t *api.Task) {
			t.HealthCheckPort = "7777/tcp"
			t.HealthCheckInterval, t.HealthCheckTimeout, t.HealthCheckGrace, t.HealthCheckThreshold = "1s", "1s", "30s", 5
		})},
		{name: "short interval, default timeout", task: base(func(t *api.Task) { t.HealthCheckInterval = "100ms" })},
		{name: "zero grace", task: base(func(t *api.Task) { t.HealthCheckGrace = "0s" })},
		{name: "threshold zero means default", task: base(func(t *api.Task) { t.HealthCheckThreshold = 0 })},

		{name: "not a path", task: base(func(t *api.Task) { t.HealthCheck = "health" }),
			wantErr: `HealthCheck "health" is neither "tcp" nor an HTTP path starting with /`},
		{name: "TCP upper case", task: base(func(t *api.Task) { t.HealthCheck = "TCP" }),
			wantErr: `HealthCheck "TCP" is neither`},
		{name: "path with space", task: base(func(t *api.Task) { t.HealthCheck = "/a b" }),
			wantErr: `HealthCheck "/a b": path contains white space`},
		{name: "path with control char", task: base(func(t *api.Task) { t.HealthCheck = "/a\x7f" }),
			wantErr: "HealthCheck"},
		{name: "no tcp port", task: base(func(t *api.Task) { t.ExposedPorts = ports("53/udp") }),
			wantErr: `HealthCheck "/health" needs a TCP port to probe`},
		{name: "no port at all", task: base(func(t *api.Task) { t.ExposedPorts = nil }),
			wantErr: "needs a TCP port to probe"},
		{name: "port without proto", task: base(func(t *api.Task) { t.HealthCheckPort = "7777" }),
			wantErr: `HealthCheckPort "7777": want port/proto`},
		{name: "port udp", task: base(func(t *api.Task) { t.HealthCheckPort = "53/udp"; t.ExposedPorts = ports("53/udp") }),
			wantErr: `HealthCheckPort "53/udp": protocol "udp" cannot be checked`},
		{name: "port out of range", task: base(func(t *api.Task) { t.HealthCheckPort = "70000/tcp" }),
			wantErr: `HealthCheckPort "70000/tcp": port "70000" is not a number from 1 to 65535`},
		{name: "port not exposed", task: base(func(t *api.Task) { t.HealthCheckPort = "8080/tcp" }),
			wantErr: `HealthCheckPort "8080/tcp" is not in ExposedPorts`},
		{name: "interval not a duration", task: base(func(t *api.Task) { t.HealthCheckInterval = "5" }),
			wantErr: `HealthCheckInterval "5" is not a Go duration`},
		{name: "interval too short", task: base(func(t *api.Task) { t.HealthCheckInterval = "10ms" }),
			wantErr: "HealthCheckInterval 10ms must be from 100ms to 1h0m0s"},
		{name: "interval negative", task: base(func(t *api.Task) { t.HealthCheckInterval = "-5s" }),
			wantErr: "HealthCheckInterval -5s must be from 100ms"},
		{name: "interval too long", task: base(func(t *api.Task) { t.HealthCheckInterval = "2h" }),
			wantErr: "HealthCheckInterval 2h0m0s must be from 100ms to 1h0m0s"},
		{name: "timeout zero", task: base(func(t *api.Task) { t.HealthCheckTimeout = "0s" }),
			wantErr: "HealthCheckTimeout 0s must be greater than 0"},
		{name: "timeout not a duration", task: base(func(t *api.Task) { t.HealthCheckTimeout = "2 s" }),
			wantErr: `HealthCheckTimeout "2 s" is not a Go duration`},
		{name: "timeout above default interval", task: base(func(t *api.Task) { t.HealthCheckTimeout = "6s" }),
			wantErr: "HealthCheckTimeout (6s) cannot be larger than HealthCheckInterval (5s)"},
		{name: "grace negative", task: base(func(t *api.Task) { t.HealthCheckGrace = "-1s" }),
			wantErr: "HealthCheckGrace -1s must be from 0s to 1h0m0s"},
		{name: "grace too long", task: base(func(t *api.Task) { t.HealthCheckGrace = "3h" }),
			wantErr: "HealthCheckGrace 3h0m0s must be from 0s to 1h0m0s"},
		{name: "grace not a duration", task: base(func(t *api.Task) { t.HealthCheckGrace = "later" }),
			wantErr: `HealthCheckGrace "later" is not a Go duration`},
		{name: "threshold negative", task: base(func(t *api.Task) { t.HealthCheckThreshold = -1 }),
			wantErr: "HealthCheckThreshold -1 must be from 0 (the default, 3) to 100"},
		{name: "threshold too large", task: base(func(t *api.Task) { t.HealthCheckThreshold = 1000 }),
			wantErr: "HealthCheckThreshold 1000 must be from 0"},
		{name: "bad timing without health check", task: api.Task{Image: "x", HealthCheckGrace: "x"},
			wantErr: `HealthCheckGrace "x"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateTask(tc.task)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidateTask(%+v) = %v; want nil", tc.task, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ValidateTask(%+v) = %v; want an error containing %q", tc.task, err, tc.wantErr)
			}
			var verr *api.ValidationError
			if !errors.As(err, &verr) {
				t.Errorf("error %v is not a *api.ValidationError (the API answers those with 400)", err)
			}
		})
	}
}
