package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"

	"github.com/dicomedge/dicomedge/console"
	"github.com/dicomedge/dicomedge/console/password"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/proxy"
	"github.com/dicomedge/dicomedge/tlslayer"
)

// devConsoleUser is the operator `serve --dev` signs in, with a password
// made at each start and printed once.
const devConsoleUser = "dev"

// startConsole serves the web console on the admin listener when the policy
// has an admin.console block (or, with --dev, for a development user), and
// starts indexing the audit log in the background: the DICOM listener does
// not wait for it. The returned function stops the indexing.
func startConsole(ctx context.Context, s *proxy.Server, layer *tlslayer.Layer, o serveOptions, cfg *policy.Config,
	logger hclog.Logger, stderr io.Writer) (func(), error) {
	var dev *policy.Console
	devPassword := ""
	if o.dev && cfg.Admin.Console == nil && cfg.Edge.AdminListen != "" {
		devPassword = randomPassword()
		h, err := password.Hash(devPassword)
		if err != nil {
			return nil, err
		}
		dev = &policy.Console{Users: []policy.ConsoleUser{{Name: devConsoleUser, PasswordHash: h, Role: policy.RoleOperator}}}
	}
	if cfg.Admin.Console == nil && dev == nil {
		return func() {}, nil
	}
	current := func() *policy.Config {
		c := s.Current()
		if c != nil && c.Admin.Console == nil && dev != nil {
			withDev := *c // a Config is immutable: a shallow copy shares its parts safely
			withDev.Admin.Console = dev
			return &withDev
		}
		return c
	}
	opts := console.Options{Config: current, AuditFile: cfg.Audit.File, Audit: s.Audit, Live: s.OpenAssociations,
		EdgeCertificate: layer.Certificate, Logger: logger}
	if cc := cfg.Admin.Console; cc != nil && len(cc.ClientCA) > 0 {
		tc, err := layer.AdminConfig(cfg.TLS.Profile, cc.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("admin.console.client_ca: %w", err)
		}
		s.AdminTLS = tc
		opts.HTTPS = true
	}
	if s.Audit == nil {
		opts.Audit = nil
	}
	con, err := console.New(opts)
	if err != nil {
		return nil, err
	}
	con.AddAction(console.Action{
		Name: "reload", Label: "Reload the policy",
		Description: "as SIGHUP: an invalid policy is refused and the old one stays",
		Run: func(context.Context, url.Values) (string, error) {
			newCfg, err := s.ReloadFile(o.config)
			var d hcl.Diagnostics
			if errors.As(err, &d) && newCfg != nil {
				var b strings.Builder
				policy.WriteDiagnostics(&b, d, newCfg.Files)
				return "", fmt.Errorf("refused, the old policy stays: %s", strings.TrimSpace(b.String()))
			}
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("%s: %d rules, %d backends", newCfg.Filename, len(newCfg.Policy.Rules()), len(newCfg.Backends)), nil
		},
	})
	if s.Spool != nil {
		// Retry and purge, as `dicomedge spool retry|purge`; the spool
		// audits each purged instance.
		for _, a := range console.SpoolActions(s.Spool) {
			con.AddAction(a)
		}
	}
	s.Console = con.Handler()
	cctx, cancel := context.WithCancel(ctx)
	go func() { _ = con.Run(cctx) }()
	if dev != nil {
		host, port, _ := net.SplitHostPort(cfg.Edge.AdminListen)
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		u := "http://" + net.JoinHostPort(host, port) + "/console/"
		if o.logFormat == "json" {
			// Every line of a JSON log is JSON; a development password only.
			logger.Info("development console", "url", u, "user", devConsoleUser, "password", devPassword)
			return cancel, nil
		}
		logger.Info("development console", "url", u, "user", devConsoleUser)
		fmt.Fprintf(stderr, "\n  Console (--dev): %s\n  user %q, password %s (operator; made for this run only)\n\n", u, devConsoleUser, devPassword)
	}
	return cancel, nil
}

// randomPassword is 80 random bits as 20 hex digits: easy to copy.
func randomPassword() string {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}
