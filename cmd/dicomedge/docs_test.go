package main

import (
	"io"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dicomedge/dicomedge/internal/doccheck"
)

// TestDocsCoverCommands keeps docs/commands.md true to the command tree:
// every command that does something has its own section, a row in the exit
// status table, and a row for each of its flags. The tree is walked from
// newRootCmd, so a new command or flag fails here until it is documented.
func TestDocsCoverCommands(t *testing.T) {
	page := doccheck.Read(t, "commands.md")
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		defer func() {
			for _, sub := range c.Commands() {
				walk(sub)
			}
		}()
		var flags []*pflag.Flag
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if f.Name != "help" {
				flags = append(flags, f)
			}
		})
		// A command that only groups others (policy, certs) has nothing of
		// its own to document.
		if !c.Runnable() || (c.HasSubCommands() && len(flags) == 0) {
			return
		}
		path := c.CommandPath()
		title := "`" + path + "`"
		if _, ok := doccheck.Row(page.Text, path); !ok {
			t.Errorf("%s: the exit status table at the top has no row for %s: add \"| %s | <exit statuses> |\"", page.Name, title, title)
		}
		sec, ok := page.Section(title, false)
		if !ok {
			t.Errorf("%s: no section for %s: add a heading \"## %s\" saying what it does and prints, a table \"| flag | default | meaning |\" of its flags, and its exit status", page.Name, title, title)
			return
		}
		known := map[string]bool{}
		for _, f := range flags {
			known[f.Name] = true
		}
		for _, k := range doccheck.Keys(sec, "flag") {
			name, _, _ := strings.Cut(strings.TrimPrefix(k, "--"), " ")
			if !known[name] {
				t.Errorf("%s: section \"## %s\" documents flag %s, which the command does not have: remove its row or correct its name", page.Name, title, k)
			}
		}
		for _, f := range flags {
			if !strings.Contains(sec, "`--"+f.Name) {
				t.Errorf("%s: section \"## %s\" does not document flag --%s (%s): add a row \"| `--%s ...` | <default> | <meaning> |\" to its flag table",
					page.Name, title, f.Name, f.Usage, f.Name)
			}
		}
	}
	walk(newRootCmd(io.Discard, io.Discard))
}
