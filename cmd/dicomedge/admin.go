package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/dicomedge/dicomedge/console/password"
)

func newAdminCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "administer the web console",
	}
	cmd.AddCommand(newAdminPasswdCmd())
	return cmd
}

func newAdminPasswdCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "passwd",
		Short: "read a password twice and print its hash for a console user block",
		Long: `Reads a password twice, from the terminal without echo, or from standard input
(one line each) when it is not a terminal, and prints its argon2id hash for
admin.console.user "NAME" { password_hash = "..." } in policy.hcl.
Exit status: 0, or 1 when the two differ or the password is empty.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPasswd(cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
}

func runPasswd(stdin io.Reader, stdout, stderr io.Writer) error {
	read := readLinesFrom(stdin)
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		read = func(prompt string) (string, error) {
			fmt.Fprint(stderr, prompt)
			b, err := term.ReadPassword(int(f.Fd()))
			fmt.Fprintln(stderr)
			return string(b), err
		}
	}
	pw, err := read("Password: ")
	if err != nil {
		return withExit(1, fmt.Errorf("reading the password: %w", err))
	}
	again, err := read("Again: ")
	if err != nil {
		return withExit(1, fmt.Errorf("reading the password again: %w", err))
	}
	if pw != again {
		return withExit(1, errors.New("the two passwords differ; nothing printed"))
	}
	if pw == "" {
		return withExit(1, errors.New("empty password; nothing printed"))
	}
	h, err := password.Hash(pw)
	if err != nil {
		return withExit(1, err)
	}
	fmt.Fprintln(stdout, h)
	return nil
}

// readLinesFrom reads one line per call from r (a pipe or file), without
// its line ending, refusing a line longer than a password may be.
func readLinesFrom(r io.Reader) func(string) (string, error) {
	br := bufio.NewReaderSize(r, 4096)
	return func(string) (string, error) {
		line, err := br.ReadString('\n')
		if err != nil && (err != io.EOF || line == "") {
			if err == io.EOF {
				return "", errors.New("standard input ended before two lines")
			}
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) > password.MaxPasswordLen {
			return "", fmt.Errorf("longer than %d bytes", password.MaxPasswordLen)
		}
		return line, nil
	}
}
