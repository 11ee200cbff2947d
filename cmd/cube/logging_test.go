package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestLogging_Formats: --log-format text writes hclog's lines, json one
// JSON object a line with the message, level and key/value pairs as
// fields; unknown formats and levels are refused, naming the flag.
func TestLogging_Formats(t *testing.T) {
	var text bytes.Buffer
	l, err := newLogger("info", "text", &text)
	if err != nil {
		t.Fatal(err)
	}
	l.Named("manager").Info("task submitted", "task_id", "t1")
	l.Debug("not at info")
	if got := text.String(); !strings.Contains(got, "[INFO]  cube.manager: task submitted: task_id=t1") || strings.Contains(got, "not at info") {
		t.Fatalf("text log %q", got)
	}

	var js bytes.Buffer
	if l, err = newLogger("debug", "json", &js); err != nil {
		t.Fatal(err)
	}
	l.Named("worker").Warn("container engine does not answer", "error", "dial unix: no such file")
	l.Debug("second line")
	lines := strings.Split(strings.TrimSpace(js.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("json log %q: want 2 lines", js.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatalf("json log line %q: %v", lines[0], err)
	}
	for k, want := range map[string]string{"@message": "container engine does not answer", "@level": "warn",
		"@module": "cube.worker", "error": "dial unix: no such file"} {
		if rec[k] != want {
			t.Errorf("json log %s = %v, want %q (line %s)", k, rec[k], want, lines[0])
		}
	}
	if _, ok := rec["@timestamp"]; !ok {
		t.Errorf("json log line without @timestamp: %s", lines[0])
	}

	for _, tc := range []struct{ level, format, want string }{
		{"info", "xml", `--log-format "xml": want text or json`},
		{"loud", "text", `--log-level "loud": want trace, debug, info, warn or error`},
	} {
		if _, err := newLogger(tc.level, tc.format, &js); err == nil || err.Error() != tc.want {
			t.Errorf("newLogger(%q, %q): %v, want %q", tc.level, tc.format, err, tc.want)
		}
	}
}

// TestLogging_FormatFromFileEnvAndFlag: log_format in the agent file,
// CUBE_LOG_FORMAT and --log-format set the format of both agents, and a bad
// value fails the start with the flag's name.
func TestLogging_FormatFromFileEnvAndFlag(t *testing.T) {
	clearEnv(t)
	path := writeFile(t, "data_dir = \"/tmp/w1\"\nlog_format = \"json\"\n")
	cmd, w := newWorkerCmdFlags()
	if err := parseOnly(cmd, []string{"--config", path}); err != nil {
		t.Fatal(err)
	}
	if w.log.format != "json" {
		t.Errorf("worker log_format from the file: %q, want json", w.log.format)
	}
	if _, err := w.config(); err != nil {
		t.Errorf("worker config with log_format json: %v", err)
	}

	t.Setenv("CUBE_LOG_FORMAT", "json")
	cmd, m := newManagerCmdFlags()
	if err := parseOnly(cmd, []string{"--id", "m1", "--data", "/tmp/m1"}); err != nil {
		t.Fatal(err)
	}
	if m.log.format != "json" {
		t.Errorf("manager CUBE_LOG_FORMAT: %q, want json", m.log.format)
	}
	if _, err := managerConfig(t, "--id", "m1", "--data", "/tmp/m1", "--log-format", "yaml"); err == nil || !strings.Contains(err.Error(), "--log-format") {
		t.Errorf("manager --log-format yaml: %v, want an error naming --log-format", err)
	}
	if _, err := workerConfig(t, "--data", "/tmp/w1", "--log-format", "yaml"); err == nil || !strings.Contains(err.Error(), "--log-format") {
		t.Errorf("worker --log-format yaml: %v, want an error naming --log-format", err)
	}
}
