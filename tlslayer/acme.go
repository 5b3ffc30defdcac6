package tlslayer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/hashicorp/go-hclog"
	"go.uber.org/zap"
)

// acmeManager obtains and renews the edge certificate through certmagic with
// its own cache (not certmagic's global default), so several Layers (tests,
// or a reload that rebuilds one) do not share state.
type acmeManager struct {
	domains         []string
	cache           *certmagic.Cache
	cm              *certmagic.Config
	challengeConfig *tls.Config
	stopAsync       context.CancelFunc // ends ManageAsync's retries; nil after ManageSync
	dns             *rfc2136Zone       // DNS-01's provider; nil without tls.acme.dns
}

func newACMEManager(ctx context.Context, cfg Config, log hclog.Logger) (*acmeManager, error) {
	a := cfg.ACME
	switch {
	case len(a.Domains) == 0:
		return nil, errors.New("tls: acme: domains is required")
	case a.Directory == "":
		return nil, errors.New("tls: acme: directory is required")
	case a.Storage == "":
		return nil, errors.New("tls: acme: storage is required")
	case a.DNS == nil && a.DisableTLSALPN && a.HTTPPort == 0:
		return nil, errors.New("tls: acme: with TLS-ALPN-01 disabled an HTTP-01 port is required")
	}
	var roots *x509.CertPool
	if len(a.CARootFiles) > 0 {
		var err error
		if roots, err = LoadCertPool(a.CARootFiles); err != nil {
			return nil, fmt.Errorf("tls: acme ca_roots: %w", err)
		}
	}
	m := &acmeManager{domains: append([]string(nil), a.Domains...)}
	failed := make(chan error, 1)
	nop := zap.NewNop()
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return m.cm, nil },
		RenewCheckInterval: a.RenewCheckInterval,
		Logger:             nop,
	})
	m.cm = certmagic.New(m.cache, certmagic.Config{
		Storage:            &certmagic.FileStorage{Path: a.Storage},
		RenewalWindowRatio: a.RenewalWindowRatio,
		// DICOM clients rarely send SNI: without a name, serve the first domain.
		DefaultServerName: a.Domains[0],
		Logger:            nop,
		OnEvent: func(_ context.Context, event string, data map[string]any) error {
			switch event {
			case "cert_obtained":
				renewal, _ := data["renewal"].(bool)
				what := "obtained"
				if renewal {
					what = "renewed"
				}
				detail := fmt.Sprintf("ACME certificate %s for %v from %s", what, data["identifier"], data["issuer"])
				log.Info(detail)
				if cfg.OnCertRenewed != nil {
					cfg.OnCertRenewed(detail)
				}
			case "cert_failed":
				log.Error("ACME certificate order failed", "identifier", data["identifier"], "renewal", data["renewal"], "error", data["error"])
				err, _ := data["error"].(error)
				if err == nil {
					err = fmt.Errorf("%v", data["error"])
				}
				select {
				case failed <- err:
				default:
				}
			}
			return nil
		},
	})
	issuer := certmagic.NewACMEIssuer(m.cm, certmagic.ACMEIssuer{
		CA:                      a.Directory,
		TestCA:                  a.Directory, // never fall back to Let's Encrypt staging
		Email:                   a.Email,
		Agreed:                  true,
		DisableHTTPChallenge:    a.HTTPPort == 0,
		DisableTLSALPNChallenge: a.DisableTLSALPN,
		AltHTTPPort:             a.HTTPPort,
		AltTLSALPNPort:          a.TLSALPNPort,
		ListenHost:              a.ListenHost,
		TrustedRoots:            roots,
		Logger:                  nop,
	})
	if a.DNS != nil {
		// DNS-01 only: certmagic then offers no other challenge.
		m.dns = newRFC2136Zone(*a.DNS)
		solver, err := dns01Solver(*a.DNS, m.dns, nop)
		if err != nil {
			m.cache.Stop()
			return nil, fmt.Errorf("tls: acme: %w", err)
		}
		issuer.DNS01Solver = solver
	}
	m.cm.Issuers = []certmagic.Issuer{issuer}
	m.challengeConfig = &tls.Config{
		MinVersion:             tls.VersionTLS12,
		NextProtos:             []string{acmeTLSALPN},
		GetCertificate:         m.cm.GetCertificate,
		SessionTicketsDisabled: true,
	}
	// Obtain (or load from storage) before the listener serves anyone; from
	// here on certmagic's maintenance goroutine renews in the background.
	if err := m.obtain(ctx, a.Email != "", failed); err != nil {
		m.close()
		return nil, fmt.Errorf("tls: acme: %w", err)
	}
	return m, nil
}

// obtain gets the certificates at start. certmagic's synchronous path is
// "interactive": without an email address it would prompt on stdin, which a
// server must never do, so without one it manages asynchronously and waits
// for the certificate (or the first failure, or ctx).
func (m *acmeManager) obtain(ctx context.Context, haveEmail bool, failed <-chan error) error {
	if haveEmail {
		return m.cm.ManageSync(ctx, m.domains)
	}
	mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.stopAsync = cancel
	if err := m.cm.ManageAsync(mctx, m.domains); err != nil {
		return err
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if !m.notAfter().IsZero() {
			return nil // mctx lives until close: it bounds the async retries
		}
		select {
		case err := <-failed:
			return err
		case <-ctx.Done():
			return fmt.Errorf("no certificate before the start deadline: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

func (m *acmeManager) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return m.cm.GetCertificate(hello)
}

func (m *acmeManager) notAfter() time.Time {
	var na time.Time
	for _, c := range m.cache.AllMatchingCertificates(m.domains[0]) {
		if c.Leaf != nil && c.Leaf.NotAfter.After(na) {
			na = c.Leaf.NotAfter
		}
	}
	return na
}

// current is the newest certificate for the first domain in the cache.
func (m *acmeManager) current() *tls.Certificate {
	var best *certmagic.Certificate
	for _, c := range m.cache.AllMatchingCertificates(m.domains[0]) {
		if c.Leaf != nil && (best == nil || c.Leaf.NotAfter.After(best.Leaf.NotAfter)) {
			best = &c
		}
	}
	if best == nil {
		return nil
	}
	return &best.Certificate
}

func (m *acmeManager) close() {
	if m.stopAsync != nil {
		m.stopAsync()
	}
	m.cache.Stop()
}
