package proxy

import (
	"crypto/tls"
	"fmt"
	"net/netip"

	"github.com/hashicorp/go-hclog"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/tlslayer"
)

// TLSConfig maps the policy's tls block to the TLS layer's configuration.
func TLSConfig(cfg *policy.Config, logger hclog.Logger) tlslayer.Config {
	t := tlslayer.Config{
		Profile:       cfg.TLS.Profile,
		ClientCAFiles: cfg.TLS.ClientCA,
		CRLFiles:      cfg.TLS.CRL,
		CertFile:      cfg.TLS.CertFile,
		KeyFile:       cfg.TLS.KeyFile,
	}
	if logger != nil {
		t.Logger = logger.Named("tls")
	}
	if a := cfg.TLS.ACME; a != nil {
		t.ACME = &tlslayer.ACMEConfig{
			Domains: a.Domains, Email: a.Email, Directory: a.Directory,
			CARootFiles: a.CARoots, Storage: a.Storage, HTTPPort: a.HTTPPort,
		}
		if ap, err := netip.ParseAddrPort(normalizeListen(cfg.Edge.Listen)); err == nil {
			t.ACME.TLSALPNPort = int(ap.Port())
		}
		if a.DNS != nil && a.DNS.RFC2136 != nil {
			r := a.DNS.RFC2136
			t.ACME.DNS = &tlslayer.DNSConfig{Server: r.Server, KeyName: r.KeyName, KeyAlg: r.KeyAlg,
				KeySecret: string(r.KeySecret), Zone: r.Zone}
		}
	}
	return t
}

func normalizeListen(l string) string {
	if len(l) > 0 && l[0] == ':' {
		return "0.0.0.0" + l
	}
	return l
}

// AuditConfig maps the policy's audit block to the audit writer's.
func AuditConfig(cfg *policy.Config, logger hclog.Logger) audit.Config {
	a := audit.Config{
		File:       cfg.Audit.File,
		Fsync:      cfg.Audit.Fsync,
		OnFull:     cfg.Audit.OnFull,
		PatientIDs: cfg.Audit.PatientIDs,
	}
	if logger != nil {
		a.Logger = logger.Named("audit")
	}
	return a
}

// OpenAudit opens the audit writer for cfg's audit block, forwarding the
// trail to audit.syslog when it is set (the writer stops the forwarder).
// edgeCert supplies the edge's current certificate, which the edge presents
// to the collector when audit.syslog names no cert_file of its own (the
// Layer's Certificate: files or ACME); nil reads the tls block's files.
func OpenAudit(cfg *policy.Config, logger hclog.Logger, edgeCert func() (*tls.Certificate, error)) (*audit.Writer, error) {
	ac := AuditConfig(cfg, logger)
	if sl := cfg.Audit.Syslog; sl != nil {
		tc, err := SyslogTLSConfig(cfg, edgeCert)
		if err != nil {
			return nil, fmt.Errorf("audit.syslog: %w", err)
		}
		ac.Syslog = &audit.SyslogConfig{Address: sl.Address, Format: sl.Format, TLS: tc,
			Poll: policy.SyslogPoll, ConfirmAfter: policy.SyslogConfirmAfter,
			DialTimeout: policy.SyslogDialTimeout, WriteTimeout: policy.SyslogWriteTimeout,
			MaxBackoff: policy.SyslogMaxBackoff, CloseTimeout: policy.SyslogCloseTimeout}
		if logger != nil {
			ac.Syslog.Logger = logger.Named("syslog")
		}
	}
	return audit.Open(ac)
}

// SyslogTLSConfig is the client side towards the audit collector (RFC 5425,
// mutual TLS): the tls block's PS3.15 profile, audit.syslog.ca as roots,
// and audit.syslog's own certificate or else the edge's (see OpenAudit).
func SyslogTLSConfig(cfg *policy.Config, edgeCert func() (*tls.Certificate, error)) (*tls.Config, error) {
	sl := cfg.Audit.Syslog
	o := tlslayer.Outbound{Profile: cfg.TLS.Profile, CAFiles: sl.CA, Address: sl.Address, CertFile: sl.CertFile, KeyFile: sl.KeyFile}
	if o.CertFile == "" {
		o.Certificate = edgeCert
		if certFile, keyFile := cfg.TLS.CertFile, cfg.TLS.KeyFile; certFile != "" {
			o.Certificate = func() (*tls.Certificate, error) {
				if edgeCert != nil {
					if c, err := edgeCert(); err == nil && c != nil {
						return c, nil
					}
				}
				// Before the listener's Layer exists (a backlog sent at
				// start): the files, read at each connection.
				c, err := tls.LoadX509KeyPair(certFile, keyFile)
				return &c, err
			}
		}
	}
	return tlslayer.OutboundConfig(o)
}
