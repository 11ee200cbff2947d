package api

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDecodeTaskEvent_Seed(t *testing.T) {
	// The chapter's task1.json, image changed to the locally built one.
	body := `{
	   "ID": "a7aa1d44-08f6-443e-9378-f5884311019e",
	   "State": 2,
	   "Task": {
	       "State": 1,
	       "ID": "bb1d59ef-9fc1-4e4b-a44d-db571eeed203",
	       "Name": "test-chapter-9.1",
	       "Image": "cube-echo:latest",
	       "ExposedPorts": {"7777/tcp": {}},
	       "PortBindings": {"7777/tcp": "7777"},
	       "HealthCheck": "/health"
	   }
	}`
	ev, err := DecodeTaskEvent(strings.NewReader(body))
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if err := ev.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	if ev.State != Running || ev.Task.State != Scheduled || ev.Task.Image != "cube-echo:latest" ||
		ev.Task.PortBindings["7777/tcp"] != "7777" || ev.Task.HealthCheck != "/health" {
		t.Fatalf("decoded %+v", ev)
	}
}

func TestDecodeAndValidate_BadInput(t *testing.T) {
	const id = `"bb1d59ef-9fc1-4e4b-a44d-db571eeed203"`
	task := func(fields string) string {
		return `{"Task":{"ID":` + id + `,"Image":"cube-echo:latest"` + fields + `}}`
	}
	cases := []struct {
		name, body, want string
	}{
		{"empty", ``, "request body is empty"},
		{"malformed", `{"Task":`, "ends in the middle"},
		{"syntax", `{"Task" x}`, "malformed JSON"},
		{"unknown field", `{"Tsk":{}}`, `unknown field "Tsk"`},
		{"unknown task field", task(`,"Imgae":"x"`), `unknown field "Imgae"`},
		{"bad UUID", `{"Task":{"ID":"not-a-uuid","Image":"x"}}`, "invalid ID"},
		{"wrong type", task(`,"Cpu":"lots"`), "field Task.Cpu: expected float64"},
		{"two values", task(``) + `{}`, "more than one JSON value"},
		{"missing image", `{"Task":{"ID":` + id + `}}`, "Image is required"},
		{"space in image", `{"Task":{"Image":"a b"}}`, "white space"},
		{"negative cpu", task(`,"Cpu":-1`), "Cpu must be"},
		{"negative memory", task(`,"Memory":-5`), "Memory must be ≥ 0"},
		{"tiny memory", task(`,"Memory":1024`), "Docker's minimum"},
		{"negative disk", task(`,"Disk":-1`), "Disk must be ≥ 0"},
		{"bad state", `{"State":9,"Task":{"Image":"x"}}`, "State 9 is not a task state"},
		{"bad task state", task(`,"State":-1`), "Task.State -1"},
		{"bad port proto", task(`,"ExposedPorts":{"80/xyz":{}}`), `ExposedPorts key "80/xyz" is not port/proto`},
		{"bad port number", task(`,"ExposedPorts":{"99999/tcp":{}}`), "is not port/proto"},
		{"binding not exposed", task(`,"PortBindings":{"80/tcp":"8080"}`), "not in ExposedPorts"},
		{"bad host port", task(`,"ExposedPorts":{"80/tcp":{}},"PortBindings":{"80/tcp":"http"}`), "host port"},
		{"bad restart policy", task(`,"RestartPolicy":"sometimes"`), "RestartPolicy"},
		{"bad health check", task(`,"HealthCheck":"health"`), "must be an HTTP path"},
		{"bad max restarts", task(`,"MaxRestarts":-2`), "MaxRestarts -2"},
		{"bad env", task(`,"Env":["NOEQUALS"]`), "not KEY=VALUE"},
		{"negative restarts", task(`,"RestartCount":-2`), "RestartCount"},
		{"bad constraint", task(`,"Constraints":["zone==a","zone=b"]`), `Constraints[1]: constraint "zone=b" must be key==value or key!=value`},
		{"bad constraint key", task(`,"Constraints":["zo ne==a"]`), `Constraints[0]: constraint "zo ne==a": key "zo ne"`},
		{"bad prefer", task(`,"Prefer":["disk"]`), `Prefer[0]: constraint "disk" must be`},
		{"bad prefer value", task(`,"Prefer":["disk==a=b"]`), `Prefer[0]: constraint "disk==a=b": value "a=b"`},
		{"long service", task(`,"Service":"` + strings.Repeat("s", 257) + `"`), "Service is longer than 256"},
		{"too many constraints", task(`,"Constraints":[` + strings.Repeat(`"a==b",`, MaxConstraints) + `"a==b"]`), "Constraints has 33 entries"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := DecodeTaskEvent(strings.NewReader(tc.body))
			if err == nil {
				err = ev.Validate()
			}
			if err == nil {
				t.Fatalf("body %s: no error, want one containing %q", tc.body, tc.want)
			}
			var verr *ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("body %s: error %v (%T) is not a ValidationError", tc.body, err, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("body %s: error %q, want it to contain %q", tc.body, err, tc.want)
			}
			if StatusOf(err) != http.StatusBadRequest {
				t.Fatalf("status %d, want 400", StatusOf(err))
			}
		})
	}
}

func TestDecodeTaskEvent_OversizedBody(t *testing.T) {
	big := `{"Task":{"Image":"x","Name":"` + strings.Repeat("a", 2*MaxBodyBytes) + `"}}`
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/tasks", strings.NewReader(big))
	_, err := DecodeTaskEvent(http.MaxBytesReader(rec, req.Body, MaxBodyBytes))
	if err == nil || StatusOf(err) != http.StatusRequestEntityTooLarge {
		t.Fatalf("got %v (status %d), want a 413 error", err, StatusOf(err))
	}
}

func TestValidStateTransition(t *testing.T) {
	cases := []struct {
		from, to State
		want     bool
	}{
		{Pending, Scheduled, true},
		{Scheduled, Running, true},
		{Scheduled, Failed, true},
		{Running, Completed, true},
		{Running, Failed, true},
		{Running, Scheduled, true},
		{Failed, Scheduled, true},
		{Scheduled, Completed, true}, // stop before it ran
		{Completed, Running, false},
		{Completed, Scheduled, false},
		{Failed, Running, false},
		{Pending, Running, false},
	}
	for _, tc := range cases {
		if got := ValidStateTransition(tc.from, tc.to); got != tc.want {
			t.Errorf("ValidStateTransition(%s, %s) = %v, want %v", tc.from, tc.to, got, tc.want)
		}
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Pending: "Pending", Running: "Running", Failed: "Failed", 7: "State(7)"} {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", int(s), got, want)
		}
	}
}

// FuzzDecodeTaskEvent feeds arbitrary bytes to the decoder and validator: they
// must never panic, and an accepted event must survive an encode/decode round
// trip and still validate.
func FuzzDecodeTaskEvent(f *testing.F) {
	f.Add([]byte(`{"ID":"a7aa1d44-08f6-443e-9378-f5884311019e","State":2,"Task":{"State":1,"ID":"bb1d59ef-9fc1-4e4b-a44d-db571eeed203","Name":"t","Image":"cube-echo:latest","ExposedPorts":{"7777/tcp":{}},"PortBindings":{"7777/tcp":"7777"},"HealthCheck":"/health"}}`))
	f.Add([]byte(`{"Task":{"Image":"x","Cpu":0.5,"Memory":67108864,"Env":["A=B"],"Cmd":["-v"]}}`))
	f.Add([]byte(`{"Task":{"Image":"x","ExposedPorts":{"80/xyz":{}}}}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := DecodeTaskEvent(bytes.NewReader(data))
		if err != nil {
			return
		}
		if err := ev.Validate(); err != nil {
			return
		}
		again, err := DecodeTaskEvent(bytes.NewReader(EncodeJSON(ev)))
		if err != nil {
			t.Fatalf("re-decode of an accepted event failed: %v", err)
		}
		if err := again.Validate(); err != nil {
			t.Fatalf("re-validate of an accepted event failed: %v", err)
		}
	})
}
