package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"

	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/proxy"
	"github.com/dicomedge/dicomedge/tlslayer"
)

type serveOptions struct {
	config    string
	dev       bool
	logLevel  string
	logFormat string
}

func newServeCmd() *cobra.Command {
	o := serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "run the edge: TLS listener, policy, answer/reject/relay, audit, admin endpoints",
		Long: `Runs the edge with the configuration and policy in --config.

--dev first creates a development PKI (CA, edge certificate, client certificate
"client") in certs/ next to the configuration file when those files are missing,
and the key_file of each deidentify block (32 random bytes, mode 0600) when it is
missing; it never overwrites a file.

Signals: SIGHUP reloads the policy and certificates (an invalid policy is refused,
the old one stays); SIGINT/SIGTERM stop accepting, let open associations finish
for up to edge.drain_timeout, then abort them. Exit status: 0 after a clean
shutdown, 1 on a fatal error, 2 for an invalid configuration.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			return runServe(ctx, o, cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.config, "config", "policy.hcl", "configuration and policy file")
	f.BoolVar(&o.dev, "dev", false, "create a development PKI in certs/ next to the config, and deidentify key files, when missing")
	f.StringVar(&o.logLevel, "log-level", "info", "trace, debug, info, warn or error")
	f.StringVar(&o.logFormat, "log-format", "text", "text or json")
	return cmd
}

func runServe(ctx context.Context, o serveOptions, stderr io.Writer) error {
	level := hclog.LevelFromString(o.logLevel)
	if level == hclog.NoLevel {
		return withExit(2, fmt.Errorf("--log-level %q: want trace, debug, info, warn or error", o.logLevel))
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return withExit(2, fmt.Errorf("--log-format %q: want text or json", o.logFormat))
	}
	logger := hclog.New(&hclog.LoggerOptions{
		Name: "dicomedge", Level: level, JSONFormat: o.logFormat == "json", Output: stderr,
	})

	if o.dev {
		dir := filepath.Join(filepath.Dir(o.config), "certs")
		created, err := tlslayer.InitDevPKI(dir, nil, []string{"client"})
		if err != nil {
			return withExit(1, fmt.Errorf("--dev: %w", err))
		}
		if len(created) > 0 {
			logger.Info("development PKI created", "dir", dir, "files", strings.Join(created, ", "))
		}
		// A deidentify block's key, as the PKI: created when missing,
		// never replaced (a new key gives new pseudonyms and UIDs). A file
		// that does not parse is left to the load below to report.
		keys, err := policy.CreateDevKeys(o.config)
		var diags hcl.Diagnostics
		if err != nil && !errors.As(err, &diags) && !errors.Is(err, fs.ErrNotExist) {
			return withExit(1, fmt.Errorf("--dev: %w", err))
		}
		if len(keys) > 0 {
			logger.Info("de-identification key created", "files", strings.Join(keys, ", "))
		}
	}

	cfg, diags := policy.LoadFile(o.config)
	if len(diags) > 0 {
		policy.WriteDiagnostics(stderr, diags, cfg.Files)
	}
	if diags.HasErrors() {
		return withExit(2, fmt.Errorf("%s: invalid configuration", o.config))
	}

	// The collector sees the edge's own certificate, once the Layer below
	// holds it (with ACME, the current one after each renewal).
	var layerRef atomic.Pointer[tlslayer.Layer]
	edgeCert := func() (*tls.Certificate, error) {
		if l := layerRef.Load(); l != nil {
			return l.Certificate()
		}
		return nil, errors.New("tls layer not loaded yet")
	}
	aw, err := proxy.OpenAudit(cfg, logger, edgeCert)
	if err != nil {
		return withExit(1, fmt.Errorf("audit: %w", err))
	}
	defer aw.Close()
	s := &proxy.Server{Config: cfg, Audit: aw, Logger: logger}
	sp, err := openSpool(cfg, aw)
	if err != nil {
		return withExit(1, err)
	}
	if sp != nil {
		defer sp.Close()
		s.Spool = sp
	}
	layer, err := tlslayer.New(ctx, s.TLSConfigFor(cfg))
	if err != nil {
		if !strings.HasPrefix(err.Error(), "tls:") {
			err = fmt.Errorf("tls: %w", err)
		}
		if errors.Is(err, fs.ErrNotExist) && !o.dev {
			// The first run of a fresh checkout ends here; say how to go on.
			err = fmt.Errorf("%w (for a development PKI run 'dicomedge certs init' in the configuration's directory, or serve --dev)", err)
		}
		return withExit(1, err)
	}
	defer layer.Close()
	s.TLS = layer
	layerRef.Store(layer)
	stopConsole, err := startConsole(ctx, s, layer, o, cfg, logger, stderr)
	if err != nil {
		return withExit(1, err)
	}
	defer stopConsole()
	ln, err := net.Listen("tcp", cfg.Edge.Listen)
	if err != nil {
		return withExit(1, fmt.Errorf("listen %s: %w", cfg.Edge.Listen, err))
	}
	if err := s.StartAdmin(); err != nil {
		ln.Close()
		return withExit(1, err)
	}
	// The listener blocks (e.g. a plain inside listener, the way out).
	if err := s.StartListeners(); err != nil {
		ln.Close()
		return withExit(1, err)
	}

	// Deliver what the spool holds: an edge back after a crash drains it.
	s.StartForwarders()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	logger.Info("dicomedge serving", "listen", ln.Addr().String(), "admin", cfg.Edge.AdminListen,
		"ae_title", cfg.Edge.AETitle, "config", o.config)

	for {
		select {
		case err := <-served:
			if errors.Is(err, proxy.ErrServerClosed) {
				return nil
			}
			return withExit(1, fmt.Errorf("serve: %w", err))
		case <-ctx.Done():
			return shutdown(s, cfg, logger, served)
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				newCfg, err := s.ReloadFile(o.config)
				var d hcl.Diagnostics
				if errors.As(err, &d) && newCfg != nil {
					// The server has logged the refusal; show where the file is wrong.
					var b strings.Builder
					policy.WriteDiagnostics(&b, d, newCfg.Files)
					if o.logFormat == "json" {
						logger.Warn("policy diagnostics", "config", o.config, "diagnostics", b.String())
					} else {
						fmt.Fprint(stderr, b.String())
					}
				}
				if err == nil {
					cfg = newCfg
				}
				continue
			}
			logger.Info("shutting down", "signal", sig.String(), "drain_timeout", cfg.Edge.DrainTimeout)
			return shutdown(s, cfg, logger, served)
		}
	}
}

func shutdown(s *proxy.Server, cfg *policy.Config, logger hclog.Logger, served <-chan error) error {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Edge.DrainTimeout+15*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		logger.Error("shutdown", "error", err)
		return withExit(1, err)
	}
	<-served
	logger.Info("stopped")
	return nil
}
