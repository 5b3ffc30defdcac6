package policy

import (
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

func (l *loader) tls(s *tlsSchema, t *TLS) {
	if s == nil {
		l.errorf(l.bodyEnd, "Missing tls block", "A tls block is required: it names the edge's certificate and, in client_ca, the CAs whose clients may connect.")
		return
	}
	if v, ok := l.str(s.Profile, DefaultTLSProfile); ok {
		l.enum(v, "TLS profile", TLSProfiles)
		t.Profile = v.s
	} else {
		t.Profile = v.s
	}
	t.ClientCA = l.paths(s.ClientCA, "tls.client_ca")
	if len(t.ClientCA) == 0 {
		rng := s.DefRange
		if s.ClientCA != nil {
			rng = s.ClientCA.Expr.Range()
		}
		l.errorf(rng, "Missing client_ca", "tls.client_ca must list at least one CA certificate file: every client must present a certificate that chains to one of them.")
	}
	t.CRL = l.paths(s.CRL, "tls.crl")
	t.CertFile = l.filePath(s.CertFile, "tls.cert_file", "")
	t.KeyFile = l.filePath(s.KeyFile, "tls.key_file", "")
	switch {
	case s.CertFile != nil && s.KeyFile == nil:
		l.errorf(s.CertFile.Range, "Missing key_file", "tls.cert_file needs tls.key_file, the file with its private key.")
	case s.KeyFile != nil && s.CertFile == nil:
		l.errorf(s.KeyFile.Range, "Missing cert_file", "tls.key_file needs tls.cert_file, the certificate it belongs to.")
	}
	t.WarnExpiry = l.warnExpiry(s.WarnExpiry)
	acme := first(l, s.ACME, "acme")
	switch {
	case acme != nil && (s.CertFile != nil || s.KeyFile != nil):
		l.errorf(acme.DefRange, "Both cert_file and acme", "The edge's certificate comes either from files (cert_file and key_file) or from an ACME CA (acme block), not both.")
	case acme == nil && s.CertFile == nil && s.KeyFile == nil:
		l.errorf(s.DefRange, "No certificate for the edge", "Give tls.cert_file and tls.key_file, or an acme block to obtain a certificate from an ACME CA.")
	}
	if acme != nil {
		t.ACME = l.acme(acme)
	}
}

func (l *loader) acme(s *acmeSchema) *ACME {
	a := &ACME{}
	if dns := first(l, s.DNS, "dns"); dns != nil {
		a.DNS = l.acmeDNS(dns)
	}
	before := len(l.diags)
	domains := l.strList(s.Domains)
	for _, v := range domains {
		if validDomain(v.s) {
			a.Domains = append(a.Domains, strings.ToLower(v.s))
			l.domainNeedsDNS(v, s.DNS != nil, a.DNS)
		} else {
			l.errorf(v.rng, "Invalid domain", "tls.acme.domains: %q is not a DNS name.", v.s)
		}
	}
	// An empty list is missing domains; a list that did not decode was reported already.
	if s.Domains == nil || (len(domains) == 0 && len(l.diags) == before) {
		l.errorf(s.DefRange, "Missing domains", "tls.acme.domains must list the DNS names the edge's certificate is for.")
	}
	if v, ok := l.str(s.Email, ""); ok {
		if v.s != "" && (!strings.Contains(v.s, "@") || strings.ContainsAny(v.s, " \t\r\n")) {
			l.errorf(v.rng, "Invalid email", "tls.acme.email: %q is not an email address.", v.s)
		}
		a.Email = v.s
	}
	v, ok := l.str(s.Directory, DefaultACMEDirectory)
	if ok {
		u, err := url.Parse(v.s)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			l.errorf(v.rng, "Invalid ACME directory", "tls.acme.directory: %q is not an https:// URL (RFC 8555 requires HTTPS).", v.s)
		}
	}
	a.Directory = v.s
	a.CARoots = l.paths(s.CARoots, "tls.acme.ca_roots")
	a.Storage = l.filePath(s.Storage, "tls.acme.storage", DefaultACMEStorage)
	a.HTTPPort = int(l.integer(s.HTTPPort, "tls.acme.http_port", 0, 0, 65535))
	if s.HTTPPort != nil && len(s.DNS) > 0 {
		l.errorf(s.HTTPPort.Expr.Range(), "http_port with dns", "tls.acme.http_port has no effect with a dns block: the edge then validates by DNS-01 only. Remove one of them.")
	}
	return a
}

// validDomain accepts DNS names, with an optional leading wildcard label.
func validDomain(s string) bool {
	s = strings.TrimPrefix(s, "*.")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// warnExpiry reads tls.warn_expiry: a duration that may be in days ("14d").
func (l *loader) warnExpiry(a *hcl.Attribute) time.Duration {
	v, ok := l.str(a, "")
	if !ok || a == nil {
		return DefaultWarnExpiry
	}
	d, err := ParseDays(v.s)
	switch {
	case err != nil:
		l.errorf(v.rng, "Invalid duration", "tls.warn_expiry = %q is not a duration: write a number of days or hours, like \"14d\" or \"72h\" (\"0\" turns tls.expiring records off).", v.s)
		return DefaultWarnExpiry
	case d < 0 || d > MaxWarnExpiry:
		l.errorf(v.rng, "Value out of range", "tls.warn_expiry must be between 0 and %s, not %q.", FormatDays(MaxWarnExpiry), v.s)
		return DefaultWarnExpiry
	}
	return d
}
