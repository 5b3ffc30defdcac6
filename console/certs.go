package console

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"sort"
	"time"

	"github.com/dicomedge/dicomedge/policy"
)

// certRow is one certificate, CA or CRL the edge uses.
type certRow struct {
	Use, File, Subject, Issuer, NotAfter, DaysLeft, Problem string
	Expiring, Expired                                       bool
	Kind                                                    string // certificate | CA | CRL
}

// maxCertFile bounds what the page reads of a certificate or CRL file.
const maxCertFile = 8 << 20

func (c *Console) certificates(w http.ResponseWriter, r *http.Request, s *session) {
	now := c.opt.Now()
	cfg := c.opt.Config()
	var rows []certRow
	add := func(use, kind, file string) {
		rows = append(rows, certRows(use, kind, file, now)...)
	}
	if cfg != nil {
		if cfg.TLS.ACME != nil || cfg.TLS.CertFile == "" {
			row := certRow{Use: "edge listener (ACME)", Kind: "certificate", File: "-"}
			if c.opt.EdgeCertificate != nil {
				if tc, err := c.opt.EdgeCertificate(); err == nil && tc.Leaf != nil {
					fillCert(&row, tc.Leaf, now)
				} else if err == nil && len(tc.Certificate) > 0 {
					if leaf, err := x509.ParseCertificate(tc.Certificate[0]); err == nil {
						fillCert(&row, leaf, now)
					}
				} else if err != nil {
					row.Problem = esc(err.Error())
				}
			}
			rows = append(rows, row)
		} else {
			add("edge listener", "certificate", cfg.TLS.CertFile)
		}
		for _, f := range cfg.TLS.ClientCA {
			add("client CA (tls.client_ca)", "CA", f)
		}
		for _, f := range cfg.TLS.CRL {
			add("client CRL (tls.crl)", "CRL", f)
		}
		for _, name := range sortedBackends(cfg) {
			b := cfg.Backends[name]
			if b.TLS == nil {
				continue
			}
			if b.TLS.CertFile != "" {
				add(fmt.Sprintf("backend %q client certificate", name), "certificate", b.TLS.CertFile)
			}
			for _, f := range b.TLS.CA {
				add(fmt.Sprintf("backend %q CA", name), "CA", f)
			}
		}
		if sl := cfg.Audit.Syslog; sl != nil {
			if sl.CertFile != "" {
				add("audit syslog client certificate", "certificate", sl.CertFile)
			}
			for _, f := range sl.CA {
				add("audit syslog CA", "CA", f)
			}
		}
		if cons := cfg.Admin.Console; cons != nil {
			for _, f := range cons.ClientCA {
				add("console administrators' CA (admin.console.client_ca)", "CA", f)
			}
		}
	}
	c.render(w, http.StatusOK, "certificates", c.page(r, s, "Certificates", rows))
}

func sortedBackends(cfg *policy.Config) []string {
	var names []string
	for n := range cfg.Backends {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func fillCert(row *certRow, cert *x509.Certificate, now time.Time) {
	row.Subject, row.Issuer = esc(cert.Subject.String()), esc(cert.Issuer.String())
	fillExpiry(row, cert.NotAfter, now)
}

func fillExpiry(row *certRow, t time.Time, now time.Time) {
	row.NotAfter = fmtTime(t)
	days := int(t.Sub(now).Hours() / 24)
	row.DaysLeft = fmt.Sprint(days)
	row.Expired = t.Before(now)
	row.Expiring = !row.Expired && t.Before(now.Add(expiringWithin))
	if row.Expired {
		row.DaysLeft = "expired"
	}
}

// certRows reads file's certificates (or CRLs): one row each.
func certRows(use, kind, file string, now time.Time) []certRow {
	base := certRow{Use: esc(use), Kind: kind, File: esc(file), NotAfter: "-", DaysLeft: "-"}
	st, err := os.Stat(file)
	if err == nil && st.Size() > maxCertFile {
		err = fmt.Errorf("larger than %d bytes", maxCertFile)
	}
	var data []byte
	if err == nil {
		data, err = os.ReadFile(file)
	}
	if err != nil {
		base.Problem = esc(err.Error())
		return []certRow{base}
	}
	var rows []certRow
	for rest := data; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		row := base
		switch blk.Type {
		case "CERTIFICATE":
			cert, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				row.Problem = esc(err.Error())
			} else {
				fillCert(&row, cert, now)
			}
		case "X509 CRL":
			crl, err := x509.ParseRevocationList(blk.Bytes)
			if err != nil {
				row.Problem = esc(err.Error())
			} else {
				row.Issuer = esc(crl.Issuer.String())
				row.Subject = fmt.Sprintf("%d revoked; this update %s", len(crl.RevokedCertificateEntries), fmtTime(crl.ThisUpdate))
				fillExpiry(&row, crl.NextUpdate, now) // a CRL's "expiry" is its next update
			}
		default:
			continue
		}
		rows = append(rows, row)
	}
	if len(rows) == 0 && kind == "CRL" {
		// A DER CRL.
		if crl, err := x509.ParseRevocationList(data); err == nil {
			row := base
			row.Issuer = esc(crl.Issuer.String())
			row.Subject = fmt.Sprintf("%d revoked; this update %s", len(crl.RevokedCertificateEntries), fmtTime(crl.ThisUpdate))
			fillExpiry(&row, crl.NextUpdate, now)
			rows = append(rows, row)
		}
	}
	if len(rows) == 0 {
		base.Problem = "no certificate found in the file"
		rows = append(rows, base)
	}
	return rows
}
