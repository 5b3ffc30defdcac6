package testpeer

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"testing"
	"time"
)

func TestPKIIssuesVerifiableChains(t *testing.T) {
	p := NewPKI(t, "test-ca")
	cert, key := p.Issue(t, "client", CertOptions{CN: "modality.clinic-a.example.org", URIs: []string{"spiffe://example.org/clinic-a/ct1"}})
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(p.CACert)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("CA does not parse")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("client certificate does not verify: %v", err)
	}
	if leaf.Subject.CommonName != "modality.clinic-a.example.org" || len(leaf.URIs) != 1 {
		t.Fatalf("unexpected subject %v / URIs %v", leaf.Subject, leaf.URIs)
	}

	expCert, _ := p.Issue(t, "expired", CertOptions{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	b, _ := os.ReadFile(expCert)
	blk, _ := pem.Decode(b)
	exp, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !exp.NotAfter.Before(time.Now()) {
		t.Fatalf("expired certificate is still valid until %v", exp.NotAfter)
	}

	p.Revoke(t, cert)
	crlPEM, err := os.ReadFile(p.CRL(t))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ = pem.Decode(crlPEM)
	crl, err := x509.ParseRevocationList(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Fatalf("CRL does not list the revoked certificate: %+v", crl.RevokedCertificateEntries)
	}
}
