package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// This file holds the one -o/--output flag of every command that prints a
// listing or an object (DESIGN §6 "Output"): -o table, the default, is the
// aligned text a person reads; -o json is what a script reads, the API's
// objects as the API returns them: a listing is a JSON array ([] when empty,
// never null), a single object (inspect) the object.

// outputFormat is the value of -o/--output. As a pflag.Value it refuses an
// unknown format when the flags are parsed, naming the choices, before any
// manager is asked.
type outputFormat string

const (
	outputTable outputFormat = "table"
	outputJSON  outputFormat = "json"
)

var outputFormats = []outputFormat{outputTable, outputJSON}

func (o *outputFormat) String() string { return string(*o) }
func (o *outputFormat) Type() string   { return "format" }
func (o *outputFormat) Set(s string) error {
	for _, f := range outputFormats {
		if strings.EqualFold(s, string(f)) {
			*o = f
			return nil
		}
	}
	return fmt.Errorf("unknown output format %q; want table or json", s)
}

// outputUsage is the flag's help text.
const outputUsage = "output format: table (aligned columns, for people) or json (the API's objects, for scripts)"

// addOutputFlag gives cmd -o/--output (default table) and returns its value.
func addOutputFlag(cmd *cobra.Command) *outputFormat {
	o := outputTable
	cmd.Flags().VarP(&o, "output", "o", outputUsage)
	return &o
}

// printList prints items: a JSON array with -o json ([] for none), else
// the table that table writes (its columns aligned as newTable does).
func printList[T any](out io.Writer, o outputFormat, items []T, table func(w io.Writer)) error {
	if o == outputJSON {
		if items == nil {
			items = []T{}
		}
		return writeJSON(out, items)
	}
	return printTable(out, table)
}

// printObject prints one object: as JSON with -o json, else as text writes
// it (through the same aligned writer as the tables).
func printObject(out io.Writer, o outputFormat, v any, text func(w io.Writer)) error {
	if o == outputJSON {
		return writeJSON(out, v)
	}
	return printTable(out, text)
}

func printTable(out io.Writer, table func(w io.Writer)) error {
	w := newTable(out)
	table(w)
	return w.Flush()
}

// writeJSON writes v indented, one value, ending in a newline.
func writeJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newTable returns the writer of the client commands' tables: columns
// aligned, two spaces apart. Flush it at the end.
func newTable(out io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
}
