package tlslayer

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// The console signs an administrator in by the CN of the certificate the
// admin listener verified, with the role of the user block that CN names.
// A subject with two CNs ("CN=viewer-bob, CN=admin") would be signed in as
// its last CN while a reviewer reads its first: the DICOM listener refuses
// such a certificate (multiple-cn) and the admin listener must too. So must
// it refuse, as the DICOM listener does, a certificate not issued for TLS
// clients (no extended key usage clientAuth), which x509 verification alone
// takes as good for any purpose. A single-CN administrator still gets in.
func TestAdminConfigRefusesAmbiguousAndNonClientCertificates(t *testing.T) {
	f := newFixture(t, false)
	admins := testpeer.NewPKI(t, "admin-ca")
	good, goodKey := admins.Issue(t, "admin", testpeer.CertOptions{CN: "admin"})
	twoCN, twoCNKey := admins.Issue(t, "two-cn", testpeer.CertOptions{Subject: "/CN=viewer-bob/CN=admin"})
	anyEKU, anyEKUKey := admins.Issue(t, "any-eku", testpeer.CertOptions{CN: "admin", ExtUsage: "anyExtendedKeyUsage"})

	l := newLayerT(t, f.config())
	cfg, err := l.AdminConfig("", []string{admins.CACert})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	type seen struct {
		cn  string
		err error
	}
	results := make(chan seen, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				tc := c.(*tls.Conn)
				err := tc.Handshake()
				s := seen{err: err}
				if err == nil {
					if ch := tc.ConnectionState().VerifiedChains; len(ch) > 0 {
						s.cn = ch[0][0].Subject.CommonName
					}
					buf := make([]byte, 4)
					if n, err := tc.Read(buf); err == nil {
						_, _ = tc.Write(buf[:n])
					}
				}
				results <- s
			}(c)
		}
	}()

	for _, tc := range []struct {
		name, cert, key string
		ok              bool
	}{
		{"one CN", good, goodKey, true},
		{"two CNs", twoCN, twoCNKey, false},
		{"anyExtendedKeyUsage", anyEKU, anyEKUKey, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := dial(ln.Addr().String(), &tls.Config{RootCAs: pool(t, f.pki.CACert), ServerName: "localhost",
				Certificates: []tls.Certificate{keyPair(t, tc.cert, tc.key)}})
			if c != nil {
				c.Close()
			}
			var s seen
			select {
			case s = <-results:
			case <-time.After(10 * time.Second):
				t.Fatal("no handshake seen")
			}
			if tc.ok && (s.err != nil || s.cn != "admin") {
				t.Fatalf("administrator refused: %v (CN %q)", s.err, s.cn)
			}
			if !tc.ok && s.err == nil {
				t.Fatalf("admin listener accepted the certificate, signed in as CN %q", s.cn)
			}
		})
	}
}
