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
	}
	var roots *x509.CertPool
	if len(a.CARootFiles) > 0 {
		roots = x509.NewCertPool()
		for _, f := range a.CARootFiles {
			data, err := readBounded(f)
			if err != nil {
				return nil, fmt.Errorf("tls: acme ca_roots: %w", err)
			}
			certs, err := parseCertificates(data)
			if err != nil {
				return nil, fmt.Errorf("tls: acme ca_roots %s: %w", f, err)
			}
			for _, c := range certs {
				roots.AddCert(c)
			}
		}
	}
	m := &acmeManager{domains: append([]string(nil), a.Domains...)}
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
			}
			return nil
		},
	})
	issuer := certmagic.NewACMEIssuer(m.cm, certmagic.ACMEIssuer{
		CA:                   a.Directory,
		TestCA:               a.Directory, // never fall back to Let's Encrypt staging
		Email:                a.Email,
		Agreed:               true,
		DisableHTTPChallenge: a.HTTPPort == 0,
		AltHTTPPort:          a.HTTPPort,
		AltTLSALPNPort:       a.TLSALPNPort,
		ListenHost:           a.ListenHost,
		TrustedRoots:         roots,
		Logger:               nop,
	})
	m.cm.Issuers = []certmagic.Issuer{issuer}
	m.challengeConfig = &tls.Config{
		MinVersion:             tls.VersionTLS12,
		NextProtos:             []string{acmeTLSALPN},
		GetCertificate:         m.cm.GetCertificate,
		SessionTicketsDisabled: true,
	}
	// Obtain (or load from storage) before the listener serves anyone; from
	// here on certmagic's maintenance goroutine renews in the background.
	if err := m.cm.ManageSync(ctx, m.domains); err != nil {
		m.cache.Stop()
		return nil, fmt.Errorf("tls: acme: %w", err)
	}
	return m, nil
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

func (m *acmeManager) close() { m.cache.Stop() }
