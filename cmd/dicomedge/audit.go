package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// Placeholder until the audit command lands; it says so instead of pretending.
func newAuditCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "audit",
		Short: "not yet implemented",
		RunE: func(*cobra.Command, []string) error {
			return withExit(1, errors.New("audit: not yet implemented"))
		},
	}
}
