package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"

	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/tlslayer"
)

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Check, explain, format, test and replay policy.hcl",
	}
	cmd.AddCommand(newPolicyCheckCmd(), newPolicyExplainCmd(), newPolicyFmtCmd(), newPolicyTestCmd(), newPolicyReplayCmd())
	return cmd
}

// loadConfig loads the file and prints its diagnostics; an invalid file is
// exit status 2 (docs/commands.md).
func loadConfig(w io.Writer, path string) (*policy.Config, hcl.Diagnostics, error) {
	cfg, diags := policy.LoadFile(path)
	writeDiags(w, diags, cfg)
	if diags.HasErrors() {
		return nil, diags, withExit(2, fmt.Errorf("%s: %s", path, countProblems(diags)))
	}
	return cfg, diags, nil
}

// writeDiags prints diags with the sources cfg holds.
func writeDiags(w io.Writer, diags hcl.Diagnostics, cfg *policy.Config) {
	var files map[string]*hcl.File
	if cfg != nil {
		files = cfg.Files
	}
	policy.WriteDiagnostics(w, diags, files)
}

func countProblems(diags hcl.Diagnostics) string {
	errs := len(diags.Errs())
	warns := len(diags) - errs
	s := plural(errs, "error")
	if warns > 0 {
		s += ", " + plural(warns, "warning")
	}
	return s
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func newPolicyCheckCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Parse and validate the configuration; print file:line:col: message for every problem",
		Long: "Parses and validates the configuration and prints every problem as file:line:col: message,\n" +
			"with the offending line. Exit status 0 when it is valid (warnings allowed), 2 when it is not.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			cfg, diags, err := loadConfig(out, path)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "%s: valid: %s, %s", path, plural(len(cfg.Policy.Rules()), "rule"), plural(len(cfg.Backends), "backend"))
			if len(diags) > 0 {
				fmt.Fprintf(out, " (%s)", countProblems(diags))
			}
			fmt.Fprintln(out)
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "config", "policy.hcl", "configuration file")
	return cmd
}

type explainFlags struct {
	config, callingAE, calledAE, cert, cn, fingerprint, sourceIP string
	listener                                                     string
	dns, uri, email                                              []string
}

func newPolicyExplainCmd() *cobra.Command {
	var f explainFlags
	cmd := &cobra.Command{
		Use:   "explain --calling-ae A --called-ae B [--cert client.pem | --cn NAME --dns N --uri U --email E] [--source-ip IP] [--listener NAME]",
		Short: "Show the decision for an association request and why each rule did or did not match",
		Long: "Evaluates the policy for one association request, as the edge would after the TLS handshake,\n" +
			"and prints the decision (answer, relay <backend>, reject <reason>), the rule that matched and,\n" +
			"for each earlier rule, the first condition that failed. The client is described by its\n" +
			"certificate (--cert, PEM) or by --cn/--dns/--uri/--email/--fingerprint. --listener names the\n" +
			"listener the request arrives on (default: edge, the edge block's TLS listener); on a plain\n" +
			"listener only rules naming it in when.listener apply and client_* attributes never match.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runExplain(cmd, &f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.config, "config", "policy.hcl", "configuration file")
	fl.StringVar(&f.callingAE, "calling-ae", "", "calling AE title of the request (required)")
	fl.StringVar(&f.calledAE, "called-ae", "", "called AE title of the request (required)")
	fl.StringVar(&f.cert, "cert", "", "client certificate (PEM); the identity is taken from it")
	fl.StringVar(&f.cn, "cn", "", "client certificate common name")
	fl.StringArrayVar(&f.dns, "dns", nil, "client certificate DNS name (repeatable)")
	fl.StringArrayVar(&f.uri, "uri", nil, "client certificate URI (repeatable)")
	fl.StringArrayVar(&f.email, "email", nil, "client certificate email address (repeatable)")
	fl.StringVar(&f.fingerprint, "fingerprint", "", "client certificate fingerprint, sha256:<hex>")
	fl.StringVar(&f.sourceIP, "source-ip", "", "client IP address")
	fl.StringVar(&f.listener, "listener", policy.EdgeListener, "name of the listener the request arrives on")
	_ = cmd.MarkFlagRequired("calling-ae")
	_ = cmd.MarkFlagRequired("called-ae")
	cmd.MarkFlagsMutuallyExclusive("cert", "cn")
	cmd.MarkFlagsMutuallyExclusive("cert", "dns")
	cmd.MarkFlagsMutuallyExclusive("cert", "uri")
	cmd.MarkFlagsMutuallyExclusive("cert", "email")
	cmd.MarkFlagsMutuallyExclusive("cert", "fingerprint")
	return cmd
}

func runExplain(cmd *cobra.Command, f *explainFlags) error {
	out := cmd.OutOrStdout()
	in := policy.Input{Listener: f.listener, CallingAE: f.callingAE, CalledAE: f.calledAE, CN: f.cn, DNS: f.dns, URI: f.uri, Email: f.email, Fingerprint: f.fingerprint}
	if f.sourceIP != "" {
		ip, err := netip.ParseAddr(f.sourceIP)
		if err != nil {
			return fmt.Errorf("--source-ip %q: not an IP address", f.sourceIP)
		}
		in.SourceIP = ip
	}
	var leaf *x509.Certificate
	if f.cert != "" {
		var err error
		if leaf, err = readCertificate(f.cert); err != nil {
			return err
		}
		id := tlslayer.IdentityFromCertificate(leaf)
		in.CN, in.DNS, in.URI, in.Email, in.Fingerprint = id.CN, id.DNS, id.URI, id.Email, id.Fingerprint
	}

	// Diagnostics go to stderr here so that stdout is only the explanation.
	cfg, _, err := loadConfig(cmd.ErrOrStderr(), f.config)
	if err != nil {
		return err
	}
	ln := cfg.Listener(f.listener)
	if ln == nil {
		var names []string
		for _, l := range cfg.Listeners {
			names = append(names, l.Name)
		}
		return withExit(2, fmt.Errorf("--listener %q: no such listener in %s; defined: %s", f.listener, f.config, strings.Join(names, ", ")))
	}
	e := cfg.Policy.Explain(&in)
	writeExplanation(out, &in, e)
	if ln.Plain() && in.SourceIP.IsValid() && !ln.AllowsSource(in.SourceIP) {
		fmt.Fprintf(out, "note: source %s is not in listener %q's allow_cidr: the connection would be closed (connection.refused, source-not-allowed) before any rule is tried\n", in.SourceIP, ln.Name)
	}
	if leaf != nil && !ln.Plain() {
		if note := verifyNote(leaf, cfg.TLS.ClientCA, cfg.TLS.Profile); note != "" {
			fmt.Fprintln(out, note)
		}
	}
	return nil
}

func readCertificate(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--cert: %w", err)
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("--cert %s: no PEM CERTIFICATE block", path)
		}
		if block.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("--cert %s: %w", path, err)
			}
			return cert, nil
		}
	}
}

// verifyNote warns when the certificate would not pass the handshake, since
// then no rule is ever tried. CRLs are not consulted here.
func verifyNote(leaf *x509.Certificate, caFiles []string, profile string) string {
	pool := x509.NewCertPool()
	for _, f := range caFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			return fmt.Sprintf("note: cannot read tls.client_ca %s (%v): the certificate was not checked against it", f, errors.Unwrap(err))
		}
		pool.AppendCertsFromPEM(data)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return fmt.Sprintf("note: this certificate does not verify against tls.client_ca (%v): the TLS handshake would fail before any rule is tried", err)
	}
	// What the listener checks beyond the chain: without it, explain would
	// say a rule admits a certificate the handshake refuses.
	if err := tlslayer.CheckClientLeaf(profile, leaf); err != nil {
		return fmt.Sprintf("note: the TLS handshake would refuse this certificate before any rule is tried (%v)", err)
	}
	return ""
}

func writeExplanation(w io.Writer, in *policy.Input, e policy.Explanation) {
	d := e.Decision
	// The first line is exactly the decision (docs/commands.md: answer,
	// relay <backend>, reject <reason>) so that scripts can compare it whole; the
	// A-ASSOCIATE-RJ codes follow on a line of their own.
	fmt.Fprintln(w, d.String())
	if d.Action == policy.ActionReject {
		kind := "permanent"
		if d.Reject.Result == 2 {
			kind = "transient"
		}
		fmt.Fprintf(w, "A-ASSOCIATE-RJ: result %d (%s), source %d, reason %d\n", d.Reject.Result, kind, d.Reject.Source, d.Reject.Reason)
	}
	fmt.Fprintf(w, "request: %s\n", describeInput(in))

	var matched *policy.Step
	var earlier []policy.Step
	for i := range e.Steps {
		if e.Steps[i].Matched {
			matched = &e.Steps[i]
		} else {
			earlier = append(earlier, e.Steps[i])
		}
	}
	if matched == nil {
		fmt.Fprintln(w, "rule: none matched; an association no rule matches is rejected (calling AE title not recognized)")
	} else {
		fmt.Fprintf(w, "rule: %q at %s\n", matched.Rule, pos(matched.Range))
		fmt.Fprintf(w, "  %s\n", matched.Why)
		if d.Action == policy.ActionRelay {
			where := d.Backend.Address
			if d.Backend.DICOMweb != nil {
				where = "STOW-RS " + d.Backend.DICOMweb.URL
			}
			fmt.Fprintf(w, "  backend %s (%s, AE %s); services: %s; sop_classes: %s; move_destinations: %s\n",
				d.Backend.Name, where, aeOr(d.Backend.AETitle),
				listOr(d.Services, "all"), listOr(d.SOPClasses, "all"), listOr(d.MoveDestinations, "none"))
			if d.Deidentify != nil && d.Deidentify.Profile != nil {
				// What leaves is de-identified (docs/deidentify.md): say by which block.
				fmt.Fprintf(w, "  deidentify: %s (%s)\n", d.Deidentify.Name, d.Deidentify.Profile.Describe())
			}
			if d.StoreAndForward {
				// The edge answers the C-STOREs itself (docs/spool.md).
				fmt.Fprintln(w, "  store-and-forward: the edge answers each C-STORE once the instance is durable in the spool; a forwarder delivers it")
			}
		}
	}
	if len(earlier) > 0 {
		if matched == nil {
			fmt.Fprintln(w, "rules that did not match:")
		} else {
			fmt.Fprintln(w, "earlier rules that did not match:")
		}
		for _, s := range earlier {
			fmt.Fprintf(w, "  %s: %s\n", pos(s.Range), s.Why)
		}
	}
}

func pos(r hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
}

func listOr(xs []string, empty string) string {
	if len(xs) == 0 {
		return empty
	}
	return strings.Join(xs, ", ")
}

func describeInput(in *policy.Input) string {
	listener := in.Listener
	if listener == "" {
		listener = policy.EdgeListener
	}
	parts := []string{fmt.Sprintf("listener %q, calling_ae %q, called_ae %q", listener, in.CallingAE, in.CalledAE)}
	if in.CN != "" {
		parts = append(parts, fmt.Sprintf("client_cn %q", in.CN))
	}
	for _, kv := range []struct {
		k  string
		vs []string
	}{{"client_dns", in.DNS}, {"client_uri", in.URI}, {"client_email", in.Email}} {
		if len(kv.vs) > 0 {
			parts = append(parts, fmt.Sprintf("%s %q", kv.k, kv.vs))
		}
	}
	if in.Fingerprint != "" {
		parts = append(parts, "client_fingerprint "+in.Fingerprint)
	}
	if in.SourceIP.IsValid() {
		parts = append(parts, "source "+in.SourceIP.String())
	}
	return strings.Join(parts, ", ")
}

// aeOr is an AE title for explain's output; a DICOMweb backend may have none.
func aeOr(ae string) string {
	if ae == "" {
		return "none"
	}
	return ae
}
