package api

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// Each escalation field of a task, good and bad values, through the decoder
// and Validate as the APIs run them.
func TestValidate_EscalationFields(t *testing.T) {
	manyMounts := make([]string, MaxMounts+1)
	for i := range manyMounts {
		manyMounts[i] = fmt.Sprintf(`"/srv/%d:/m/%d"`, i, i)
	}
	manyCaps := strings.TrimSuffix(strings.Repeat(`"NET_ADMIN",`, MaxCapAdd+1), ",")
	cases := []struct {
		name, fields string
		want         string // "" for accepted
	}{
		{"privileged", `"Privileged":true`, ""},
		{"privileged false", `"Privileged":false`, ""},
		{"privileged wrong type", `"Privileged":"yes"`, "field Task.Privileged: expected bool"},

		{"network default", `"NetworkMode":""`, ""},
		{"network host", `"NetworkMode":"host"`, ""},
		{"network host with exposed port", `"NetworkMode":"host","ExposedPorts":{"7777/tcp":{}}`, ""},
		{"network bridge by name", `"NetworkMode":"bridge"`, `NetworkMode "bridge" is not`},
		{"network container", `"NetworkMode":"container:abc"`, `NetworkMode "container:abc"`},
		{"network upper-case", `"NetworkMode":"HOST"`, `NetworkMode "HOST"`},
		{"network host with port binding", `"NetworkMode":"host","ExposedPorts":{"7777/tcp":{}},"PortBindings":{"7777/tcp":"7777"}`, "PortBindings do not apply"},

		{"mount", `"Mounts":["/srv/data:/data"]`, ""},
		{"mount read-only", `"Mounts":["/srv/data:/data:ro"]`, ""},
		{"mount read-write", `"Mounts":["/srv/data:/data:rw"]`, ""},
		{"mount unclean but inside", `"Mounts":["//srv/./data/:/data/"]`, ""},
		{"mount two", `"Mounts":["/a:/a","/b:/b:ro"]`, ""},
		{"mount relative host", `"Mounts":["srv/data:/data"]`, `host path "srv/data" is not absolute`},
		{"mount named volume", `"Mounts":["myvol:/data"]`, "is not absolute"},
		{"mount relative container", `"Mounts":["/srv:data"]`, `container path "data" is not absolute`},
		{"mount dot-dot host", `"Mounts":["/srv/data/../../etc:/data"]`, `contains ".."`},
		{"mount dot-dot container", `"Mounts":["/srv:/data/.."]`, `contains ".."`},
		{"mount container root", `"Mounts":["/srv:/"]`, "must not be /"},
		{"mount no container path", `"Mounts":["/srv"]`, "want /host/path:/container/path"},
		{"mount bad option", `"Mounts":["/srv:/data:z"]`, "want /host/path:/container/path"},
		{"mount too many parts", `"Mounts":["/srv:/data:ro:x"]`, "want /host/path:/container/path"},
		{"mount empty", `"Mounts":[""]`, "want /host/path:/container/path"},
		{"mount twice to one path", `"Mounts":["/a:/data","/b:/data/"]`, "/data is bound more than once"},
		{"mount NUL", `"Mounts":["/a\u0000:/data"]`, "NUL"},
		{"mount too long", `"Mounts":["/` + strings.Repeat("a", MaxMountLen) + `:/data"]`, "longer than"},
		{"mounts too many", `"Mounts":[` + strings.Join(manyMounts, ",") + `]`, "Mounts has 33 entries"},

		{"cap", `"CapAdd":["NET_ADMIN"]`, ""},
		{"cap several", `"CapAdd":["NET_ADMIN","SYS_PTRACE","CHECKPOINT_RESTORE"]`, ""},
		{"cap docker default", `"CapAdd":["CHOWN"]`, ""},
		{"cap lower-case", `"CapAdd":["net_admin"]`, `"net_admin": write it NET_ADMIN`},
		{"cap with prefix", `"CapAdd":["CAP_NET_ADMIN"]`, `write it NET_ADMIN`},
		{"cap unknown", `"CapAdd":["NET_WIZARD"]`, `"NET_WIZARD" is not a Linux capability name`},
		{"cap ALL", `"CapAdd":["ALL"]`, `"ALL" is not a capability`},
		{"cap empty", `"CapAdd":[""]`, "is not a Linux capability name"},
		{"caps too many", `"CapAdd":[` + manyCaps + `]`, "CapAdd has 65 entries"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"Task":{"Image":"cube-echo:latest",` + tc.fields + `}}`
			ev, err := DecodeTaskEvent(strings.NewReader(body))
			if err == nil {
				err = ev.Validate()
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("body %s: %v, want it accepted", body, err)
			case tc.want == "":
				return
			case err == nil:
				t.Fatalf("body %s: accepted, want an error containing %q", body, tc.want)
			case !strings.Contains(err.Error(), tc.want):
				t.Fatalf("body %s: error %q, want it to contain %q", body, err, tc.want)
			}
			var verr *ValidationError
			if !errors.As(err, &verr) || StatusOf(err) != http.StatusBadRequest {
				t.Fatalf("body %s: error %v (status %d), want a 400 ValidationError", body, err, StatusOf(err))
			}
		})
	}
}

// A task that asks for nothing marshals exactly as before the fields were
// added: they are omitted when empty.
func TestTask_EscalationFieldsOmittedWhenEmpty(t *testing.T) {
	b := EncodeJSON(Task{Image: "x"})
	for _, f := range []string{"Privileged", "NetworkMode", "Mounts", "CapAdd"} {
		if strings.Contains(string(b), `"`+f+`"`) {
			t.Errorf("%s in %s", f, b)
		}
	}
}

func TestParseMount(t *testing.T) {
	cases := []struct {
		in   string
		want Mount
	}{
		{"/srv/data:/data", Mount{Host: "/srv/data", Container: "/data"}},
		{"/srv/data/:/data/:ro", Mount{Host: "/srv/data", Container: "/data", ReadOnly: true}},
		{"//srv//./data:/x/./y:rw", Mount{Host: "/srv/data", Container: "/x/y"}},
		{"/:/host", Mount{Host: "/", Container: "/host"}},
	}
	for _, tc := range cases {
		got, err := ParseMount(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseMount(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	if got := (Mount{Host: "/a", Container: "/b", ReadOnly: true}).Bind(); got != "/a:/b:ro" {
		t.Errorf("Bind = %q", got)
	}
}

func TestPathUnder(t *testing.T) {
	cases := []struct {
		p, prefix string
		want      bool
	}{
		{"/srv/data", "/srv/data", true},
		{"/srv/data/x", "/srv/data", true},
		{"/srv/data/x/y", "/srv/data/", true},
		{"/srv/data2", "/srv/data", false},
		{"/srv/data2/x", "/srv/data", false},
		{"/srv", "/srv/data", false},
		{"/", "/srv/data", false},
		{"/srv/dat", "/srv/data", false},
		{"/anything", "/", true},
		{"/", "/", true},
		{"/srv/data/x", "//srv/./data", true},
	}
	for _, tc := range cases {
		if got := PathUnder(tc.p, tc.prefix); got != tc.want {
			t.Errorf("PathUnder(%q, %q) = %v, want %v", tc.p, tc.prefix, got, tc.want)
		}
	}
}

// What a task asks for, and whether a set of allowances covers it.
func TestAllowances_Missing(t *testing.T) {
	none := Allowances{}
	all := Allowances{Privileged: true, HostNetwork: true, Mounts: []string{"/"}, Caps: []string{AllCaps}}
	data := Allowances{Mounts: []string{"/srv/data/"}}
	netAdmin := Allowances{Caps: []string{"NET_ADMIN"}}
	task := func(edit func(*Task)) Task { t := Task{Image: "x"}; edit(&t); return t }
	cases := []struct {
		name  string
		task  Task
		a     Allowances
		first string // the first ask refused, "" for allowed
	}{
		{"nothing asked, nothing allowed", task(func(*Task) {}), none, ""},
		{"privileged refused", task(func(t *Task) { t.Privileged = true }), none, "privileged tasks"},
		{"privileged allowed", task(func(t *Task) { t.Privileged = true }), Allowances{Privileged: true}, ""},
		{"host network refused", task(func(t *Task) { t.NetworkMode = "host" }), none, "host-network tasks"},
		{"host network refused by privileged", task(func(t *Task) { t.NetworkMode = "host" }), Allowances{Privileged: true}, "host-network tasks"},
		{"host network allowed", task(func(t *Task) { t.NetworkMode = "host" }), Allowances{HostNetwork: true}, ""},
		{"mount refused", task(func(t *Task) { t.Mounts = []string{"/srv/data:/d"} }), none, "binding host path /srv/data"},
		{"mount the prefix itself", task(func(t *Task) { t.Mounts = []string{"/srv/data:/d"} }), data, ""},
		{"mount beneath the prefix", task(func(t *Task) { t.Mounts = []string{"/srv/data/a/b:/d:ro"} }), data, ""},
		{"mount sibling with the prefix's name as its start", task(func(t *Task) { t.Mounts = []string{"/srv/data2:/d"} }), data, "binding host path /srv/data2"},
		{"mount the prefix's parent", task(func(t *Task) { t.Mounts = []string{"/srv:/d"} }), data, "binding host path /srv"},
		{"mount climbing out", task(func(t *Task) { t.Mounts = []string{"/srv/data/../etc:/d"} }), data, "binding host path /srv/data/../etc:/d"},
		{"mount climbing out, root allowed", task(func(t *Task) { t.Mounts = []string{"/srv/data/../etc:/d"} }), all, "binding host path /srv/data/../etc:/d"},
		{"mount one of two refused", task(func(t *Task) { t.Mounts = []string{"/srv/data/a:/a", "/etc:/b"} }), data, "binding host path /etc"},
		{"mount under root", task(func(t *Task) { t.Mounts = []string{"/etc:/e"} }), all, ""},
		{"cap refused", task(func(t *Task) { t.CapAdd = []string{"NET_ADMIN"} }), none, "capability NET_ADMIN"},
		{"cap allowed", task(func(t *Task) { t.CapAdd = []string{"NET_ADMIN"} }), netAdmin, ""},
		{"cap other refused", task(func(t *Task) { t.CapAdd = []string{"NET_ADMIN", "SYS_ADMIN"} }), netAdmin, "capability SYS_ADMIN"},
		{"cap ALL allows any", task(func(t *Task) { t.CapAdd = []string{"SYS_ADMIN", "BPF"} }), Allowances{Caps: []string{AllCaps}}, ""},
		{"cap docker default needs nothing", task(func(t *Task) { t.CapAdd = []string{"CHOWN", "NET_BIND_SERVICE"} }), none, ""},
		{"cap unknown refused", task(func(t *Task) { t.CapAdd = []string{"NET_WIZARD"} }), netAdmin, "capability NET_WIZARD"},
		{"everything, all allowed", task(func(t *Task) {
			t.Privileged, t.NetworkMode, t.Mounts, t.CapAdd = true, "host", []string{"/x:/x"}, []string{"SYS_TIME"}
		}), all, ""},
		{"everything, first refused is privileged", task(func(t *Task) {
			t.Privileged, t.NetworkMode, t.Mounts, t.CapAdd = true, "host", []string{"/x:/x"}, []string{"SYS_TIME"}
		}), netAdmin, "privileged tasks"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k, missing := tc.a.Missing(tc.task)
			got := ""
			if missing {
				got = k.String()
			}
			if got != tc.first {
				t.Fatalf("task %+v on %+v: refused %q, want %q", tc.task, tc.a, got, tc.first)
			}
			// The leader decides on the gossiped tokens: the same answer.
			k2, missing2 := ParseAllowances(tc.a.Tokens()).Missing(tc.task)
			if missing2 != missing || k2 != k {
				t.Fatalf("through tokens %q: refused %v %+v, want %v %+v", tc.a.Tokens(), missing2, k2, missing, k)
			}
		})
	}
}

func TestAllowances_TokensRoundTrip(t *testing.T) {
	a := Allowances{Privileged: true, HostNetwork: true, Mounts: []string{"/srv/data/", "/var/log"}, Caps: []string{"NET_ADMIN", "CHOWN", "ALL"}}
	want := []string{"privileged", "host-network", "mount:/srv/data", "mount:/var/log", "cap:NET_ADMIN", "cap:ALL"}
	if got := a.Tokens(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Tokens = %q, want %q", got, want)
	}
	back := ParseAllowances(append(want, "gpu:nvidia", "mount:relative", "cap:"))
	if !back.Privileged || !back.HostNetwork || !reflect.DeepEqual(back.Mounts, []string{"/srv/data", "/var/log"}) ||
		!reflect.DeepEqual(back.Caps, []string{"NET_ADMIN", "ALL"}) {
		t.Fatalf("ParseAllowances = %+v", back)
	}
	if got := (Allowances{}).Tokens(); got != nil {
		t.Fatalf("nothing allowed: tokens %q, want none", got)
	}
}

func TestAsk_FlagAndField(t *testing.T) {
	cases := []struct {
		k           Ask
		flag, field string
	}{
		{Ask{Kind: AskPrivileged}, "--allow-privileged", "Privileged"},
		{Ask{Kind: AskHostNetwork}, "--allow-host-network", "NetworkMode"},
		{Ask{Kind: AskMount, Value: "/srv/x"}, "--allow-mount /srv/x", "Mounts"},
		{Ask{Kind: AskCap, Value: "NET_ADMIN"}, "--allow-cap NET_ADMIN", "CapAdd"},
	}
	for _, tc := range cases {
		if tc.k.Flag() != tc.flag || tc.k.Field() != tc.field {
			t.Errorf("%+v: flag %q field %q, want %q %q", tc.k, tc.k.Flag(), tc.k.Field(), tc.flag, tc.field)
		}
	}
}

func TestCheckAllowances(t *testing.T) {
	cases := []struct {
		a    Allowances
		want string
	}{
		{Allowances{Mounts: []string{"/srv/data", "/"}, Caps: []string{"NET_ADMIN", "ALL"}}, ""},
		{Allowances{Mounts: []string{"srv"}}, `AllowMounts entry "srv" (--allow-mount): want an absolute`},
		{Allowances{Mounts: []string{"/srv/../etc"}}, `must not contain ".."`},
		{Allowances{Mounts: []string{"/srv:/x"}}, "must not contain ':'"},
		{Allowances{Caps: []string{"net_admin"}}, `AllowCaps entry (--allow-cap) "net_admin": write it NET_ADMIN`},
		{Allowances{Caps: []string{"WIZARD"}}, `(--allow-cap) "WIZARD" is not a Linux capability`},
	}
	for _, tc := range cases {
		err := CheckAllowances(tc.a)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("CheckAllowances(%+v) = %v, want %q", tc.a, err, tc.want)
		}
	}
}
