package tlslayer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"
)

// fuzzSeeds is a small CA, a certificate and a CRL in PEM and DER, made in
// process so the corpus needs no files; f.Add also gets truncations.
func fuzzSeeds(f *testing.F) [][]byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fuzz-ca"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	caDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		f.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	crlDER, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now(),
		NextUpdate:                time.Now().Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: big.NewInt(4242), RevocationTime: time.Now()}}}, ca, key)
	if err != nil {
		f.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	crlPEM := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crlDER})
	seeds := [][]byte{caDER, crlDER, caPEM, crlPEM, append(append([]byte{}, caPEM...), crlPEM...),
		[]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), {0x30, 0x82, 0xff, 0xff}, nil}
	for _, s := range [][]byte{caDER, crlDER, caPEM} {
		seeds = append(seeds, s[:len(s)/2])
	}
	for _, s := range seeds {
		f.Add(s)
	}
	return [][]byte{caDER}
}

// FuzzParsePKI: whatever a certificate or CRL file holds, parsing returns an
// error or values, never a panic, and a CRL that parses is only accepted when
// the CA really signed it.
func FuzzParsePKI(f *testing.F) {
	caDER := fuzzSeeds(f)[0]
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if certs, err := parseCertificates(data); err == nil && len(certs) == 0 {
			t.Fatal("no error and no certificates")
		}
		crls, err := parseCRLs(data)
		if err != nil {
			return
		}
		if len(crls) == 0 {
			t.Fatal("no error and no CRLs")
		}
		sets, err := buildCRLSets([]*x509.Certificate{ca}, crls)
		if err != nil {
			return
		}
		for _, crl := range crls {
			if err := crl.CheckSignatureFrom(ca); err != nil {
				t.Fatalf("accepted a CRL the CA did not sign: %v (%d sets)", err, len(sets))
			}
		}
	})
}
