package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/pflag"
)

// logFlags are --log-level and --log-format, which every agent command
// takes (cube manager, cube worker, cube dev).
type logFlags struct {
	level, format string
}

// register adds the flags.
func (l *logFlags) register(f *pflag.FlagSet) {
	f.StringVar(&l.level, "log-level", "info", "log level: trace, debug, info, warn or error")
	f.StringVar(&l.format, "log-format", "text", "log format: text (a line a person reads) or json (one JSON object a line, for a log collector)")
}

// logger returns the root logger the flags ask for, writing to stderr.
func (l logFlags) logger() (hclog.Logger, error) {
	return newLogger(l.level, l.format, os.Stderr)
}

// newLogger returns Cube's root logger at level, in format text or json,
// writing to out. Unknown values are refused, naming the flag.
func newLogger(level, format string, out io.Writer) (hclog.Logger, error) {
	lvl := hclog.LevelFromString(level)
	if lvl == hclog.NoLevel {
		return nil, fmt.Errorf("--log-level %q: want trace, debug, info, warn or error", level)
	}
	var json bool
	switch strings.ToLower(format) {
	case "text", "":
	case "json":
		json = true
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       "cube",
		Level:      lvl,
		Output:     out,
		JSONFormat: json,
	}), nil
}
