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
// aligned text a person reads; -o wide, on listings, the same table with
// more columns; -o json is what a script reads, the API's objects as the
// API returns them: a listing is a JSON array ([] when empty, never null),
// a single object (inspect) the object.

// outputFormat is the value of -o/--output.
type outputFormat string

const (
	outputTable outputFormat = "table"
	outputWide  outputFormat = "wide"
	outputJSON  outputFormat = "json"
)

// outputValue is -o/--output as a pflag.Value: it refuses a format the
// command does not offer when the flags are parsed, naming the choices,
// before any manager is asked. Case does not matter.
type outputValue struct {
	p       *outputFormat
	choices []outputFormat
}

func (v *outputValue) String() string { return string(*v.p) }
func (v *outputValue) Type() string   { return "format" }
func (v *outputValue) Set(s string) error {
	for _, f := range v.choices {
		if strings.EqualFold(s, string(f)) {
			*v.p = f
			return nil
		}
	}
	names := make([]string, len(v.choices))
	for i, f := range v.choices {
		names[i] = string(f)
	}
	want := strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
	return fmt.Errorf("unknown output format %q; want %s", s, want)
}

// The flag's help texts: of a command that prints one object, and of a
// listing, which also has wide.
const (
	outputUsage     = "output format: table (aligned columns, for people) or json (the API's objects, for scripts)"
	listOutputUsage = "output format: table (aligned columns, for people), wide (the table with more columns) or json (the API's objects, for scripts)"
)

// addOutputFlag gives cmd -o/--output table|json (default table) and
// returns its value: for a command that prints one object.
func addOutputFlag(cmd *cobra.Command) *outputFormat {
	o := outputTable
	cmd.Flags().VarP(&outputValue{p: &o, choices: []outputFormat{outputTable, outputJSON}}, "output", "o", outputUsage)
	return &o
}

// addListOutputFlag gives a listing -o/--output table|wide|json (default
// table) and returns its value. wide is the table with more columns (see
// column); table and json are the same with or without it.
func addListOutputFlag(cmd *cobra.Command) *outputFormat {
	o := outputTable
	cmd.Flags().VarP(&outputValue{p: &o, choices: []outputFormat{outputTable, outputWide, outputJSON}}, "output", "o", listOutputUsage)
	return &o
}

// column is one column of a listing's table: its header, its cell for an
// item, and which of -o table and -o wide show it (both unless set). A
// listing declares its columns once, so wide can only add to the table.
type column[T any] struct {
	head string
	cell func(T) string
	show columnShow
}

// columnShow says which tables show a column.
type columnShow int

const (
	inBoth    columnShow = iota
	tableOnly            // replaced by a fuller column in wide
	wideOnly
)

// writeColumns writes the header and a row per item of the columns that
// -o table (wide false) or -o wide shows.
func writeColumns[T any](w io.Writer, wide bool, items []T, cols []column[T]) {
	var shown []column[T]
	for _, c := range cols {
		if c.show == inBoth || (c.show == wideOnly) == wide {
			shown = append(shown, c)
		}
	}
	cells := make([]string, len(shown))
	for i, c := range shown {
		cells[i] = c.head
	}
	fmt.Fprintln(w, strings.Join(cells, "\t"))
	for _, it := range items {
		for i, c := range shown {
			cells[i] = c.cell(it)
		}
		fmt.Fprintln(w, strings.Join(cells, "\t"))
	}
}

// printColumns prints a listing: a JSON array with -o json, else its
// columns for -o table or -o wide.
func printColumns[T any](out io.Writer, o outputFormat, items []T, cols []column[T]) error {
	return printList(out, o, items, func(w io.Writer) { writeColumns(w, o == outputWide, items, cols) })
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
