package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// Placeholder until the certs command lands; it says so instead of pretending.
func newCertsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "certs",
		Short: "not yet implemented",
		RunE: func(*cobra.Command, []string) error {
			return withExit(1, errors.New("certs: not yet implemented"))
		},
	}
}
