package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// Placeholder until the policy command lands; it says so instead of pretending.
func newPolicyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "policy",
		Short: "not yet implemented",
		RunE: func(*cobra.Command, []string) error {
			return withExit(1, errors.New("policy: not yet implemented"))
		},
	}
}
