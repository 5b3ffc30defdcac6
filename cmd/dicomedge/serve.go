package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// Placeholder until the serve command lands; it says so instead of pretending.
func newServeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "not yet implemented",
		RunE: func(*cobra.Command, []string) error {
			return withExit(1, errors.New("serve: not yet implemented"))
		},
	}
}
