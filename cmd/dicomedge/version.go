package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at link time by release builds (scripts/package:
// -ldflags "-X main.version=..."), so the binary reports the version of the
// package it came in; otherwise the module version from the build info.
var version string

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print version, Go version and build information",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			version, revision, modified := version, "", false
			if version == "" {
				version = "devel"
			}
			if bi, ok := debug.ReadBuildInfo(); ok {
				if version == "devel" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
					version = bi.Main.Version
				}
				for _, s := range bi.Settings {
					switch s.Key {
					case "vcs.revision":
						revision = s.Value
					case "vcs.modified":
						modified = s.Value == "true"
					}
				}
			}
			fmt.Fprintf(out, "dicomedge %s\n", version)
			if revision != "" {
				dirty := ""
				if modified {
					dirty = " (modified)"
				}
				fmt.Fprintf(out, "revision  %s%s\n", revision, dirty)
			}
			fmt.Fprintf(out, "go        %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}
