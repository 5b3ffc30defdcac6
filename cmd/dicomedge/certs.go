package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/spf13/cobra"

	"github.com/dicomedge/dicomedge/tlslayer"
)

func newCertsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Manage the edge's certificate files",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(newCertsInitCmd())
	return cmd
}

func newCertsInitCmd() *cobra.Command {
	var dir string
	var hosts, clients []string
	cmd := &cobra.Command{
		Use:   "init [--dir certs] [--host NAME]... [--client NAME]...",
		Short: "Create a development PKI: CA, edge server certificate, client certificates (never overwrites)",
		Long: `Creates a development PKI in --dir: ca.pem/ca-key.pem, edge.pem/edge-key.pem (for every
--host plus localhost, 127.0.0.1 and ::1) and <name>.pem/<name>-key.pem for every --client
(default "client"). Keys are written 0600. Files that exist are kept, never overwritten;
new client certificates are signed by the existing CA. For development only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			created, err := tlslayer.InitDevPKI(dir, hosts, clients)
			out := cmd.OutOrStdout()
			for _, p := range created {
				fmt.Fprintln(out, "created", p)
			}
			if err != nil {
				return withExit(1, fmt.Errorf("certs init: %w", err))
			}
			for _, name := range tlslayer.DevPKIFiles(clients) {
				p := filepath.Join(dir, name)
				if slices.Contains(created, p) {
					continue
				}
				if _, err := os.Stat(p); err == nil {
					fmt.Fprintln(out, "kept", p)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "certs", "directory for the PKI files")
	cmd.Flags().StringArrayVar(&hosts, "host", nil, "DNS name or IP address for the edge certificate (repeatable)")
	cmd.Flags().StringArrayVar(&clients, "client", []string{"client"}, "client certificate to create (repeatable)")
	return cmd
}
