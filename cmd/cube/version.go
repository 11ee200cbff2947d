package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/cube-orch/cube/cluster"
	"github.com/spf13/cobra"
)

// version and commit are set at build time (make build, make machine-files):
//
//	go build -ldflags "-X main.version=v1.2.0 -X main.commit=$(git rev-parse HEAD)" ./cmd/cube
//
// A build without them (go build, go install, go test) falls back on what the
// Go toolchain stamped in the binary (runtime/debug.ReadBuildInfo: the
// module's version and vcs.revision), when it did.
var (
	version string
	commit  string
)

// versionInfo is what cube version prints; its JSON is -o json's.
type versionInfo struct {
	// Version is the release (git describe in make build), "dev" when the
	// build says nothing.
	Version string
	// Commit is the git commit built, "" when unknown.
	Commit string
	// Modified is set when the tree built had changes not committed (known
	// from the Go toolchain's stamp only).
	Modified  bool `json:",omitempty"`
	GoVersion string
	Platform  string
}

// buildVersion works out the version from the -X values, then from the
// build information read returns.
func buildVersion(version, commit string, read func() (*debug.BuildInfo, bool)) versionInfo {
	v := versionInfo{Version: version, Commit: commit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := read(); ok && bi != nil {
		if v.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v.Version = bi.Main.Version
		}
		var rev string
		var modified bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if v.Commit == "" {
			v.Commit = rev
		}
		// The stamp's word on changes holds for the commit it names.
		v.Modified = modified && rev != "" && rev == v.Commit
		if bi.GoVersion != "" {
			v.GoVersion = bi.GoVersion
		}
	}
	if v.Version == "" {
		v.Version = "dev"
	}
	return v
}

func (v versionInfo) String() string {
	c := v.Commit
	if c == "" {
		c = "unknown"
	}
	if v.Modified {
		c += " (modified)"
	}
	return fmt.Sprintf("cube %s (commit %s, %s %s)", v.Version, c, v.GoVersion, v.Platform)
}

func newVersionCmd() *cobra.Command {
	var output *outputFormat
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print cube's version and the git commit it was built from",
		Long: `Print the version of this cube binary and the git commit it was built from
(set by make build from git describe and git rev-parse; a plain go build falls
back on what the Go toolchain recorded, or says "dev" and "unknown"). It asks
no manager. -o json prints {"Version","Commit","Modified","GoVersion","Platform"}.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := buildVersion(version, commit, debug.ReadBuildInfo)
			return printObject(cmd.OutOrStdout(), *output, v, func(w io.Writer) {
				c := v.Commit
				if c == "" {
					c = "unknown"
				}
				if v.Modified {
					c += " (with changes not committed)"
				}
				fmt.Fprintf(w, "Version:\t%s\n", v.Version)
				fmt.Fprintf(w, "Commit:\t%s\n", c)
				fmt.Fprintf(w, "Go:\t%s %s\n", v.GoVersion, v.Platform)
			})
		},
	}
	output = addOutputFlag(cmd)
	return cmd
}

// gossipVersion is the short form a node gossips and GET /cluster shows:
// the version and, when known, the first 12 characters of the commit
// ("dev abc123def456+" when built from a modified tree), at most
// cluster.MaxVersionBytes.
func gossipVersion(v versionInfo) string {
	s := v.Version
	if c := v.Commit; c != "" {
		if len(c) > 12 {
			c = c[:12]
		}
		s += " " + c
		if v.Modified {
			s += "+"
		}
	}
	if len(s) > cluster.MaxVersionBytes {
		s = s[:cluster.MaxVersionBytes]
	}
	return s
}
