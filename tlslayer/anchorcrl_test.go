package tlslayer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"path/filepath"
	"testing"
	"time"
)

// An intermediate CA's CRL is accepted only when the intermediate is in
// client_ca, which makes it a trust anchor too. A client that then
// presents its leaf without the intermediate chains to the intermediate
// directly, and the root's CRL, which revokes that intermediate, was never
// consulted for it: the certificate of a revoked (say compromised) sub-CA
// got in by leaving its issuer out. A client CA that is not self-issued is
// judged by its issuer's CRL whether or not the client sent it.
func TestRevokedIntermediateInClientCAIsRefused(t *testing.T) {
	f := newFixture(t, false)
	dir := t.TempDir()
	now := time.Now()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	issue := func(tmpl, parent *x509.Certificate, pub, signer any) *x509.Certificate {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rootKey, interKey, leafKey := newKey(), newKey(), newKey()
	ca := func(serial int64, cn string) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	}
	root := issue(ca(1, "root"), ca(1, "root"), &rootKey.PublicKey, rootKey)
	inter := issue(ca(2, "sub-ca"), root, &interKey.PublicKey, rootKey)
	leaf := issue(&x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "modality"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(12 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, inter, &leafKey.PublicKey, interKey)

	crl := func(name string, issuer *x509.Certificate, key *ecdsa.PrivateKey, revoked ...*big.Int) string {
		l := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: now.Add(-time.Hour), NextUpdate: now.Add(24 * time.Hour)}
		for _, s := range revoked {
			l.RevokedCertificateEntries = append(l.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: now.Add(-time.Minute)})
		}
		der, err := x509.CreateRevocationList(rand.Reader, l, issuer, key)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		writePEM(t, p, "X509 CRL", der)
		return p
	}
	writePEM(t, filepath.Join(dir, "root.pem"), "CERTIFICATE", root.Raw)
	writePEM(t, filepath.Join(dir, "sub-ca.pem"), "CERTIFICATE", inter.Raw)
	cfg := f.config()
	cfg.ClientCAFiles = []string{filepath.Join(dir, "root.pem"), filepath.Join(dir, "sub-ca.pem")}
	cfg.CRLFiles = []string{crl("root.crl", root, rootKey, inter.SerialNumber), crl("sub-ca.crl", inter, interKey)}
	srv := startServer(t, newLayerT(t, cfg), 2*time.Second)

	for _, tc := range []struct {
		name  string
		chain [][]byte
	}{
		{"leaf and intermediate", [][]byte{leaf.Raw, inter.Raw}},
		{"leaf alone", [][]byte{leaf.Raw}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := dial(srv.addr, &tls.Config{RootCAs: pool(t, f.pki.CACert), ServerName: "localhost",
				Certificates: []tls.Certificate{{Certificate: tc.chain, PrivateKey: leafKey}}})
			if c != nil {
				c.Close()
			}
			r := srv.next(t)
			if got := Classify(r.err); got != ReasonRevoked {
				t.Fatalf("reason %q (%v, identity CN %q), want %q: the root's CRL revokes the intermediate", got, r.err, r.id.CN, ReasonRevoked)
			}
		})
	}
}
