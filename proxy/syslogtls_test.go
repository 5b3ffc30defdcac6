package proxy

import (
	"bytes"
	"crypto/tls"
	"testing"

	"github.com/dicomedge/dicomedge/policy"
)

// The client certificate the edge presents to the audit collector:
// audit.syslog's own cert_file when given; otherwise the edge's current
// certificate from its Layer, or, before the Layer exists, the tls block's
// files. The tls.profile bounds the versions either way.
func TestSyslogTLSConfigChoosesTheClientCertificate(t *testing.T) {
	p := sharedPKI(t)
	edge, err := tls.LoadX509KeyPair(p.edgeCert, p.edgeKey)
	if err != nil {
		t.Fatal(err)
	}
	other, err := tls.LoadX509KeyPair(p.otherCert, p.otherKey)
	if err != nil {
		t.Fatal(err)
	}
	base := func(sl policy.Syslog) *policy.Config {
		cfg := &policy.Config{}
		cfg.TLS.Profile = "bcp195-extended"
		cfg.TLS.CertFile, cfg.TLS.KeyFile = p.edgeCert, p.edgeKey
		sl.Address, sl.CA = "siem.example.org:6514", []string{p.ca}
		cfg.Audit.Syslog = &sl
		return cfg
	}
	presented := func(tc *tls.Config) []byte {
		t.Helper()
		if len(tc.Certificates) > 0 {
			return tc.Certificates[0].Certificate[0]
		}
		if tc.GetClientCertificate == nil {
			return nil
		}
		c, err := tc.GetClientCertificate(&tls.CertificateRequestInfo{})
		if err != nil || len(c.Certificate) == 0 {
			return nil
		}
		return c.Certificate[0]
	}
	layerCert := func() (*tls.Certificate, error) { return &other, nil } // stands for a renewed ACME certificate
	for _, tc := range []struct {
		name     string
		sl       policy.Syslog
		edgeCert func() (*tls.Certificate, error)
		want     []byte
	}{
		{"own cert_file", policy.Syslog{CertFile: p.otherCert, KeyFile: p.otherKey}, nil, other.Certificate[0]},
		{"the Layer's current certificate", policy.Syslog{}, layerCert, other.Certificate[0]},
		{"the tls block's files before the Layer", policy.Syslog{}, nil, edge.Certificate[0]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := SyslogTLSConfig(base(tc.sl), tc.edgeCert)
			if err != nil {
				t.Fatal(err)
			}
			if got := presented(cfg); !bytes.Equal(got, tc.want) {
				t.Fatalf("presents a different certificate than expected")
			}
			if cfg.ServerName != "siem.example.org" || cfg.MaxVersion != tls.VersionTLS12 || cfg.RootCAs == nil {
				t.Fatalf("server name %q, max version %x, roots %v", cfg.ServerName, cfg.MaxVersion, cfg.RootCAs != nil)
			}
		})
	}
}
