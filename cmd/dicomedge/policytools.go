package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/policytool"
)

func newPolicyFmtCmd() *cobra.Command {
	var config string
	var check bool
	cmd := &cobra.Command{
		Use:   "fmt [--check] [FILE...]",
		Short: "Rewrite policy files in canonical HCL layout",
		Long: "Rewrites each FILE (default: the --config file) in the canonical HCL layout, as\n" +
			"`terraform fmt` does, and prints the name of each file it changed. FILE - reads standard\n" +
			"input and writes the result to standard output. With --check nothing is written: the\n" +
			"files that are not formatted are listed and the exit status is 1. A syntax error is\n" +
			"printed as file:line:col and the exit status is 2.",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				args = []string{config}
			}
			return runFmt(cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr(), args, check)
		},
	}
	cmd.Flags().StringVar(&config, "config", "policy.hcl", "configuration file, formatted when no FILE is given")
	cmd.Flags().BoolVar(&check, "check", false, "change nothing; list the files that are not formatted and exit 1 if any")
	return cmd
}

func runFmt(stdin io.Reader, out, errOut io.Writer, files []string, check bool) error {
	var unformatted, broken int
	for _, name := range files {
		var src []byte
		var err error
		if name == "-" {
			src, err = policytool.ReadSource(stdin)
		} else {
			src, err = policytool.ReadSourceFile(name)
		}
		if err != nil {
			fmt.Fprintf(errOut, "%s: %v\n", name, err)
			broken++
			continue
		}
		label := name
		if name == "-" {
			label = "<stdin>"
		}
		formatted, file, diags := policytool.Format(label, src)
		if diags.HasErrors() {
			policy.WriteDiagnostics(errOut, diags, map[string]*hcl.File{label: file})
			broken++
			continue
		}
		switch {
		case name == "-" && !check:
			_, err = out.Write(formatted)
		case bytes.Equal(formatted, src):
			continue
		case check:
			fmt.Fprintln(out, label)
			unformatted++
			continue
		default:
			if err = writeInPlace(name, formatted); err == nil {
				fmt.Fprintln(out, name)
			}
		}
		if err != nil {
			fmt.Fprintf(errOut, "%s: %v\n", label, err)
			broken++
		}
	}
	switch {
	case broken > 0:
		return withExit(2, fmt.Errorf("%s could not be formatted", plural(broken, "file")))
	case unformatted > 0:
		return withExit(1, nil)
	}
	return nil
}

// writeInPlace replaces the file behind name (following a symbolic link)
// through a temporary file and a rename, so that an interrupted write never
// leaves a truncated policy; the file keeps its permissions.
func writeInPlace(name string, data []byte) error {
	path, err := filepath.EvalSymlinks(name)
	if err != nil {
		return err
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".fmt*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(st.Mode().Perm()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func newPolicyTestCmd() *cobra.Command {
	var config string
	cmd := &cobra.Command{
		Use:   "test [--config F] TESTFILE...",
		Short: "Run policy test cases against the policy",
		Long: "Runs the test blocks of each TESTFILE against the policy in --config and prints\n" +
			"PASS <name> or FAIL <name>: <what differed> for each, then a summary line. Exit status 0\n" +
			"when every test passes, 1 when one fails, 2 when the policy or a test file is invalid\n" +
			"(its problems printed as file:line:col).",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPolicyTest(cmd.OutOrStdout(), cmd.ErrOrStderr(), config, args)
		},
	}
	cmd.Flags().StringVar(&config, "config", "policy.hcl", "configuration file")
	return cmd
}

func runPolicyTest(out, errOut io.Writer, config string, files []string) error {
	cfg, _, cfgErr := loadConfig(errOut, config)
	suite, diags := policytool.LoadTestFiles(files...)
	policy.WriteDiagnostics(errOut, diags, suite.Files)
	switch {
	case cfgErr != nil:
		return cfgErr
	case diags.HasErrors():
		return withExit(2, fmt.Errorf("test files: %s", countProblems(diags)))
	}
	failed := 0
	for _, tc := range suite.Cases {
		name := policytool.Printable(tc.Name)
		if diff := tc.Run(cfg); len(diff) > 0 {
			failed++
			fmt.Fprintf(out, "FAIL %s: %s\n", name, strings.Join(diff, "; "))
		} else {
			fmt.Fprintf(out, "PASS %s\n", name)
		}
	}
	fmt.Fprintf(out, "%s: %d passed, %d failed\n", plural(len(suite.Cases), "test"), len(suite.Cases)-failed, failed)
	if failed > 0 {
		return withExit(1, nil)
	}
	return nil
}

type replayOpts struct {
	config, auditFile, since, until string
	exitCode                        bool
}

func newPolicyReplayCmd() *cobra.Command {
	o := &replayOpts{}
	cmd := &cobra.Command{
		Use:   "replay [--config F] [--audit F] [--since DUR|TIME] [--until TIME] [--exit-code]",
		Short: "Re-decide past traffic from the audit log with the policy in --config",
		Long: "Reads the audit log (--audit, default the audit.file of --config; rotated files first) and\n" +
			"decides every association.accepted and association.rejected record again with the policy in\n" +
			"--config, from the record's client identity, source address, listener and AE titles, and\n" +
			"each DIMSE request of the association from its service, SOP class and move destination.\n" +
			"Prints each association and request whose outcome would change (old → new, with the rules),\n" +
			"each record that cannot be decided again without guessing, and the summary line\n" +
			"`N associations replayed, M would change`. --since/--until select associations by the time\n" +
			"of their decision. With --exit-code the exit status is 1 when any outcome would change.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd.OutOrStdout(), cmd.ErrOrStderr()) },
	}
	f := cmd.Flags()
	f.StringVar(&o.config, "config", "policy.hcl", "the policy to replay the log with")
	f.StringVar(&o.auditFile, "audit", "", "audit log file (default: audit.file of --config)")
	f.StringVar(&o.since, "since", "", "only associations decided at or after this time, or this long ago (e.g. 1h, 7d, 2026-11-25T08:00:00Z)")
	f.StringVar(&o.until, "until", "", "only associations decided before this time (or this long ago)")
	f.BoolVar(&o.exitCode, "exit-code", false, "exit 1 when any outcome would change")
	return cmd
}

func (o *replayOpts) run(out, errOut io.Writer) error {
	cfg, _, err := loadConfig(errOut, o.config)
	if err != nil {
		return err
	}
	r := &policytool.Replayer{Config: cfg}
	if r.Since, err = parseWhen(o.since); err != nil {
		return withExit(2, fmt.Errorf("--since: %w", err))
	}
	if r.Until, err = parseWhen(o.until); err != nil {
		return withExit(2, fmt.Errorf("--until: %w", err))
	}
	file := o.auditFile
	if file == "" {
		file = cfg.Audit.File
	}
	bw := bufio.NewWriter(out)
	defer bw.Flush()
	r.Report = func(c *policytool.Change) error {
		_, err := fmt.Fprintln(bw, c.String())
		return err
	}
	st, err := r.ReplayFiles(audit.Files(file))
	var bad *audit.BadLinesError
	switch {
	case errors.As(err, &bad):
		fmt.Fprintln(errOut, "dicomedge: warning:", bad)
	case err != nil:
		return err
	}
	fmt.Fprintln(bw, st.Summary())
	if st.NotReplayed > 0 {
		fmt.Fprintf(bw, "%s not replayed (listed above)\n", plural(st.NotReplayed, "association record"))
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if o.exitCode && st.AssociationsChanged > 0 {
		return withExit(1, nil)
	}
	return nil
}
