package tlslayer

import (
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

func TestIdentityFromOpensslCertificate(t *testing.T) {
	p := testpeer.NewPKI(t, "identity-ca")
	cert, key := p.Issue(t, "ct1", testpeer.CertOptions{
		CN:     "ct1.clinic-a.example.org",
		DNS:    []string{"ct1.clinic-a.example.org"},
		URIs:   []string{"spiffe://example.org/clinic-a/ct1"},
		Emails: []string{"radiology@clinic-a.example.org"},
	})
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	id := IdentityFromCertificate(leaf)
	if id.CN != "ct1.clinic-a.example.org" {
		t.Errorf("CN = %q", id.CN)
	}
	if len(id.DNS) != 1 || id.DNS[0] != "ct1.clinic-a.example.org" {
		t.Errorf("DNS = %v", id.DNS)
	}
	if len(id.URI) != 1 || id.URI[0] != "spiffe://example.org/clinic-a/ct1" {
		t.Errorf("URI = %v", id.URI)
	}
	if len(id.Email) != 1 || id.Email[0] != "radiology@clinic-a.example.org" {
		t.Errorf("Email = %v", id.Email)
	}
	if !strings.HasPrefix(id.Fingerprint, "sha256:") || len(id.Fingerprint) != len("sha256:")+64 {
		t.Errorf("Fingerprint = %q", id.Fingerprint)
	}
	if !strings.Contains(id.Issuer, "CN=identity-ca") || !strings.Contains(id.Subject, "CN=ct1.clinic-a.example.org") {
		t.Errorf("Issuer = %q, Subject = %q", id.Issuer, id.Subject)
	}
	if id.Serial == "" || id.NotAfter.IsZero() {
		t.Errorf("Serial = %q, NotAfter = %v", id.Serial, id.NotAfter)
	}
}
