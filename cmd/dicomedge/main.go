// Command dicomedge is a TLS-first secure DICOM edge proxy.
//
// This package holds flags, subcommands and wiring only; the logic lives in
// the packages it calls so that tests can reach it.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// exitError carries a specific process exit status (docs/commands.md: 2 for an
// invalid configuration, 1 for a fatal error or a failed audit verification).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// withExit wraps err so that main exits with code.
func withExit(code int, err error) error { return &exitError{code: code, err: err} }

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "dicomedge",
		Short:         "TLS-first secure DICOM edge proxy",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		newServeCmd(),
		newPolicyCmd(),
		newAuditCmd(),
		newCertsCmd(),
		newVersionCmd(),
		newSpoolCmd(),
		newAdminCmd(),
		newDeidentifyCmd(),
	)
	return root
}

// run executes the command line and returns the process exit status.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(stderr, "dicomedge:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "dicomedge:", err)
	return 1
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
