package tlslayer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"strings"
	"testing"
	"time"
)

func selfSigned(t *testing.T, subject pkix.Name, dns []string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x1f), Subject: subject, DNSNames: dns,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A subject with two CNs, or with attributes pkix.Name has no field for
// (domainComponent, in RFC 4514 OID=#hex form), is shown whole: the CN a tool displays and the one
// another matches are both in the record.
func TestIdentityShowsEveryAttributeOfTheSubject(t *testing.T) {
	cn := asn1.ObjectIdentifier{2, 5, 4, 3}
	dc := asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}
	c := selfSigned(t, pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
		{Type: dc, Value: "org"}, {Type: cn, Value: "harmless"}, {Type: cn, Value: "ct1.clinic-a.example.org"}}}, nil)
	id := IdentityFromCertificate(c)
	for _, want := range []string{"CN=harmless", "CN=ct1.clinic-a.example.org", "0.9.2342.19200300.100.1.25=#13036f7267"} {
		if !strings.Contains(id.Subject, want) || !strings.Contains(id.Issuer, want) {
			t.Errorf("subject %q / issuer %q lacks %s", id.Subject, id.Issuer, want)
		}
	}
	plain := selfSigned(t, pkix.Name{Organization: []string{"Clinic A"}, CommonName: "ct1"}, nil)
	if got := IdentityFromCertificate(plain).Subject; got != plain.Subject.String() {
		t.Errorf("an ordinary subject reads %q, want %q as before", got, plain.Subject.String())
	}
}

// What a client presents is bounded before it is recorded.
func TestPresentedIdentityIsBounded(t *testing.T) {
	long := strings.Repeat("é", 2000)
	var dns []string
	for i := range 40 {
		dns = append(dns, strings.Repeat("a", 300)+string(rune('a'+i%26))+".example.org")
	}
	c := selfSigned(t, pkix.Name{CommonName: long}, dns)
	id := PresentedIdentity(c)
	if len(id.CN) > maxPresentedString+3 || !strings.HasSuffix(id.CN, "...") || !strings.HasPrefix(id.CN, "éé") {
		t.Errorf("CN of %d bytes: %q...", len(id.CN), id.CN[:20])
	}
	if !strings.HasSuffix(strings.TrimSuffix(id.CN, "..."), "é") {
		t.Error("the CN was cut inside a UTF-8 sequence")
	}
	if len(id.Subject) > maxPresentedString+3 || len(id.DNS) != maxPresentedNames {
		t.Errorf("subject %d bytes, %d DNS names", len(id.Subject), len(id.DNS))
	}
	if id.Fingerprint != IdentityFromCertificate(c).Fingerprint || id.Serial != "1f" || id.NotBefore.IsZero() {
		t.Errorf("identity %+v", id)
	}
}
