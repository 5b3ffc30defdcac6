package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/proxy"
	"github.com/dicomedge/dicomedge/spool"
)

// openSpool opens the spool of cfg when a store-and-forward rule needs it
// or it already exists (instances left by an earlier policy are still
// delivered); nil when neither. Audit records are written (not only
// queued) before the spool acts on them: a crash cannot keep a delivery
// or an acknowledged instance out of the trail.
func openSpool(cfg *policy.Config, aw *audit.Writer) (*spool.Spool, error) {
	if len(cfg.Policy.StoreAndForwardBackends()) == 0 {
		if _, err := os.Stat(cfg.Spool.Dir); err != nil {
			return nil, nil
		}
	}
	sc := spool.Config{Dir: cfg.Spool.Dir, MaxSize: cfg.Spool.MaxSize, MaxAge: cfg.Spool.MaxAge}
	if aw != nil {
		sc.Audit = func(e audit.Event) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			aw.LogWritten(ctx, e)
		}
	}
	sp, err := spool.Open(sc)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	return sp, nil
}

type spoolOptions struct {
	config    string
	backend   string
	olderThan time.Duration
	expired   bool
}

func newSpoolCmd() *cobra.Command {
	o := &spoolOptions{}
	cmd := &cobra.Command{
		Use:   "spool",
		Short: "the store-and-forward spool: list, retry, purge",
		Long: `Operates the store-and-forward spool of the policy in --config (spool.dir).

list   per backend: queued instances, bytes, the oldest, failed/ and expired/
       counts and the forwarder's last error.
retry  moves failed/ (with --expired, expired/ too) back into the queue; the
       running edge sends them again.
purge  removes instances (queued, failed/ and expired/; --older-than keeps
       newer ones), each audited as spool.purged. While the edge runs it holds
       the audit log: the purge is then done, and audited, by the edge.`,
	}
	list := &cobra.Command{Use: "list", Short: "per backend: depth, bytes, oldest, last error", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return spoolList(c.OutOrStdout(), c.ErrOrStderr(), o) }}
	retry := &cobra.Command{Use: "retry", Short: "move failed/ back into the queue", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return spoolRetry(c.OutOrStdout(), c.ErrOrStderr(), o) }}
	retry.Flags().BoolVar(&o.expired, "expired", false, "move expired/ back too")
	purge := &cobra.Command{Use: "purge", Short: "remove instances (audited)", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return spoolPurge(c.OutOrStdout(), c.ErrOrStderr(), o) }}
	for _, c := range []*cobra.Command{list, retry, purge} {
		c.Flags().StringVar(&o.config, "config", "policy.hcl", "configuration and policy file")
		c.Flags().StringVar(&o.backend, "backend", "", "only this backend (default: every backend)")
	}
	purge.Flags().DurationVar(&o.olderThan, "older-than", 0, "only instances received longer ago than this (e.g. 72h)")
	cmd.AddCommand(list, retry, purge)
	return cmd
}

// spoolFor loads the policy and opens its spool directory, which must exist.
func spoolFor(stderr io.Writer, o *spoolOptions) (*policy.Config, *spool.Spool, error) {
	cfg, diags := policy.LoadFile(o.config)
	if len(diags) > 0 {
		policy.WriteDiagnostics(stderr, diags, cfg.Files)
	}
	if diags.HasErrors() {
		return nil, nil, withExit(2, fmt.Errorf("%s: invalid configuration", o.config))
	}
	if _, err := os.Stat(cfg.Spool.Dir); err != nil {
		return cfg, nil, nil
	}
	// Open without recovery side effects on a running edge's files: only
	// temporary files of a dead writer would be removed, and a running
	// edge's are young; the listing itself changes nothing.
	sp, err := spool.Inspect(cfg.Spool.Dir, cfg.Spool.MaxSize, cfg.Spool.MaxAge)
	if err != nil {
		return nil, nil, withExit(1, err)
	}
	return cfg, sp, nil
}

func spoolList(stdout, stderr io.Writer, o *spoolOptions) error {
	cfg, sp, err := spoolFor(stderr, o)
	if err != nil {
		return err
	}
	if sp == nil {
		fmt.Fprintf(stdout, "spool %s: empty (no directory)\n", cfg.Spool.Dir)
		return nil
	}
	stats, err := sp.Stats()
	if err != nil {
		return withExit(1, err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND\tQUEUED\tBYTES\tOLDEST\tFAILED\tEXPIRED\tLAST ERROR")
	now := time.Now()
	for _, st := range stats {
		if o.backend != "" && st.Backend != o.backend {
			continue
		}
		oldest := "-"
		if !st.Oldest.IsZero() {
			oldest = fmt.Sprintf("%s (%s ago)", st.Oldest.Format(time.RFC3339), now.Sub(st.Oldest).Round(time.Second))
		}
		last := "-"
		if st.State.LastError != "" {
			last = fmt.Sprintf("%s: %s", st.State.LastErrorTime.Format(time.RFC3339), audit.Escape(st.State.LastError))
			if !st.State.NextAttempt.IsZero() {
				last += fmt.Sprintf(" (next attempt %s)", st.State.NextAttempt.Format(time.RFC3339))
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%d\t%d\t%s\n", audit.Escape(st.Backend), st.Instances, st.Bytes, oldest, st.Failed, st.Expired, last)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "spool %s: %s used of max_size %d bytes\n", cfg.Spool.Dir, sizeText(sp.Used()), cfg.Spool.MaxSize)
	return nil
}

func sizeText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func spoolRetry(stdout, stderr io.Writer, o *spoolOptions) error {
	_, sp, err := spoolFor(stderr, o)
	if err != nil {
		return err
	}
	if sp == nil {
		fmt.Fprintln(stdout, "0 instances moved back to the queue")
		return nil
	}
	n, err := sp.Retry(o.backend, o.expired)
	fmt.Fprintf(stdout, "%d instances moved back to the queue\n", n)
	if err != nil {
		return withExit(1, err)
	}
	return nil
}

func spoolPurge(stdout, stderr io.Writer, o *spoolOptions) error {
	cfg, sp, err := spoolFor(stderr, o)
	if err != nil {
		return err
	}
	if sp == nil {
		fmt.Fprintln(stdout, "0 instances purged")
		return nil
	}
	// The purge is audited in the one chain: this process writes it when
	// it can take the audit log; otherwise the running edge does.
	aw, err := audit.Open(proxy.AuditConfig(cfg, nil))
	if err != nil {
		if !strings.Contains(err.Error(), "locked") {
			return withExit(1, fmt.Errorf("audit: %w", err))
		}
		n, err := spool.RequestPurge(cfg.Spool.Dir, o.backend, o.olderThan, 30*time.Second)
		if err != nil {
			return withExit(1, err)
		}
		fmt.Fprintf(stdout, "%d instances purged (by the running edge)\n", n)
		return nil
	}
	defer aw.Close()
	sp.SetAudit(func(e audit.Event) { aw.Log(e) })
	n, err := sp.Purge(o.backend, o.olderThan)
	fmt.Fprintf(stdout, "%d instances purged\n", n)
	if err != nil {
		return withExit(1, err)
	}
	return nil
}
