package tlslayer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// TestHandshakeClassification drives the layer with certificates made by
// openssl (an independent CA) and checks what the server concludes.
func TestHandshakeClassification(t *testing.T) {
	f := newFixture(t, false)
	p := f.pki
	now := time.Now()
	good, goodKey := p.Issue(t, "good", testpeer.CertOptions{CN: "ct1.clinic-a.example.org", URIs: []string{"spiffe://example.org/clinic-a/ct1"}})
	goodRSA, goodRSAKey := p.Issue(t, "good-rsa", testpeer.CertOptions{CN: "mr1.clinic-a.example.org", RSA: true})
	expired, expiredKey := p.Issue(t, "expired", testpeer.CertOptions{NotBefore: now.Add(-72 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	future, futureKey := p.Issue(t, "future", testpeer.CertOptions{NotBefore: now.Add(24 * time.Hour), NotAfter: now.Add(72 * time.Hour)})
	revoked, revokedKey := p.Issue(t, "revoked", testpeer.CertOptions{})
	codeSign, codeSignKey := p.Issue(t, "codesign", testpeer.CertOptions{ExtUsage: "codeSigning"})
	noDigSig, noDigSigKey := p.Issue(t, "nodigsig", testpeer.CertOptions{KeyUsage: "critical,keyEncipherment"})
	p.Revoke(t, revoked)
	crl := p.CRL(t)

	rogue := testpeer.NewPKI(t, "rogue-ca")
	rogueCert, rogueKey := rogue.Issue(t, "rogue", testpeer.CertOptions{CN: "ct1.clinic-a.example.org"})

	cfg := f.config()
	cfg.CRLFiles = []string{crl}
	l := newLayerT(t, cfg)
	srv := startServer(t, l, 2*time.Second)
	roots := pool(t, p.CACert)

	client := func(cert, key string) *tls.Config {
		c := &tls.Config{RootCAs: roots, ServerName: "localhost"}
		if cert != "" {
			c.Certificates = []tls.Certificate{keyPair(t, cert, key)}
		}
		return c
	}
	// A Go client withholds a certificate the server's CertificateRequest
	// does not name a CA for; OpenSSL-based peers send it anyway, so make
	// this one insist as they do.
	insist := func(c *tls.Config) *tls.Config {
		cert := c.Certificates[0]
		c.Certificates = nil
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
		return c
	}
	tls11 := client(good, goodKey)
	tls11.MinVersion, tls11.MaxVersion = tls.VersionTLS11, tls.VersionTLS11
	cbc := client(good, goodKey)
	cbc.MaxVersion = tls.VersionTLS12
	cbc.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}
	tls12 := client(good, goodKey)
	tls12.MaxVersion = tls.VersionTLS12

	cases := []struct {
		name   string
		cfg    *tls.Config
		reason string // "" = accepted
		cn     string
	}{
		{"valid ECDSA client, TLS 1.3", client(good, goodKey), "", "ct1.clinic-a.example.org"},
		{"valid ECDSA client, TLS 1.2", tls12, "", "ct1.clinic-a.example.org"},
		{"valid RSA client", client(goodRSA, goodRSAKey), "", "mr1.clinic-a.example.org"},
		{"no client certificate", client("", ""), ReasonNoClientCertificate, ""},
		{"unknown CA", insist(client(rogueCert, rogueKey)), ReasonUnknownCA, ""},
		{"expired", client(expired, expiredKey), ReasonExpired, ""},
		{"not yet valid", client(future, futureKey), ReasonNotYetValid, ""},
		{"revoked by openssl CRL", client(revoked, revokedKey), ReasonRevoked, ""},
		{"extended key usage codeSigning", client(codeSign, codeSignKey), ReasonBadKeyUsage, ""},
		{"key usage without digitalSignature", client(noDigSig, noDigSigKey), ReasonBadKeyUsage, ""},
		{"client offers only TLS 1.1", tls11, ReasonProtocolVersion, ""},
		{"client offers only CBC suites", cbc, ReasonNoCipherSuite, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, cerr := dial(srv.addr, tc.cfg)
			if c != nil {
				c.Close()
			}
			r := srv.next(t)
			if tc.reason == "" {
				if r.err != nil || cerr != nil {
					t.Fatalf("want accepted; server: %v, client: %v", r.err, cerr)
				}
				if r.id.CN != tc.cn || !strings.HasPrefix(r.id.Fingerprint, "sha256:") {
					t.Fatalf("identity = %+v", r.id)
				}
				return
			}
			if r.err == nil {
				t.Fatalf("server accepted; want %s", tc.reason)
			}
			if cerr == nil {
				t.Errorf("client round trip succeeded although the server refused (%v)", r.err)
			}
			if got := Classify(r.err); got != tc.reason {
				t.Fatalf("reason = %q, want %q (err %v)", got, tc.reason, r.err)
			}
			if he, ok := r.err.(*HandshakeError); !ok || he.Reason != tc.reason {
				t.Fatalf("err = %#v, want *HandshakeError{%s}", r.err, tc.reason)
			}
		})
	}
}

func TestHandshakeTimeoutAndEOF(t *testing.T) {
	f := newFixture(t, false)
	l := newLayerT(t, f.config())
	srv := startServer(t, l, 300*time.Millisecond)

	silent, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	r := srv.next(t)
	if got := Classify(r.err); got != ReasonTimeout {
		t.Fatalf("silent client: reason %q (%v), want timeout", got, r.err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("handshake bound not enforced: %v", el)
	}

	// The EOF and plain-DICOM cases test classification, not the timer: on
	// a loaded machine the client's close or write can come later than
	// 300ms after the server's accept, which would read as a timeout.
	srv = startServer(t, l, 30*time.Second)
	closer, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	closer.Close()
	r = srv.next(t)
	if got := Classify(r.err); got != ReasonEOF {
		t.Fatalf("closing client: reason %q (%v), want eof", got, r.err)
	}

	garbage, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer garbage.Close()
	// An A-ASSOCIATE-RQ header sent in clear to the TLS port.
	_, _ = garbage.Write([]byte{0x01, 0x00, 0x00, 0x00, 0x00, 0x44, 0x00, 0x01})
	r = srv.next(t)
	if r.err == nil {
		t.Fatal("plain DICOM accepted on the TLS port")
	}
	if got := Classify(r.err); got != ReasonNotTLS {
		t.Fatalf("plain DICOM: reason %q (%v), want %s", got, r.err, ReasonNotTLS)
	}
}

// TestProfiles: what each PS3.15 Annex B profile accepts and refuses.
func TestProfiles(t *testing.T) {
	f := newFixture(t, true) // RSA edge: the legacy TLS_RSA_* suites need one
	cert, key := f.pki.Issue(t, "client", testpeer.CertOptions{})
	roots := pool(t, f.pki.CACert)
	base := func() *tls.Config {
		return &tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{keyPair(t, cert, key)}}
	}
	tls11 := func() *tls.Config {
		c := base()
		c.MinVersion, c.MaxVersion = tls.VersionTLS11, tls.VersionTLS11
		c.CipherSuites = []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA}
		return c
	}
	cbc12 := func() *tls.Config {
		c := base()
		c.MaxVersion = tls.VersionTLS12
		c.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}
		return c
	}
	tls13 := func() *tls.Config {
		c := base()
		c.MinVersion = tls.VersionTLS13
		return c
	}
	chacha12 := func() *tls.Config {
		c := base()
		c.MaxVersion = tls.VersionTLS12
		c.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256}
		return c
	}
	gcm12 := func() *tls.Config {
		c := base()
		c.MaxVersion = tls.VersionTLS12
		c.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384}
		return c
	}
	cases := []struct {
		profile string
		client  string
		cfg     func() *tls.Config
		reason  string
	}{
		{"", "TLS 1.1 RSA-CBC", tls11, ReasonProtocolVersion},
		{ProfileBCP195RFC8996, "TLS 1.2 ECDHE CBC", cbc12, ReasonNoCipherSuite},
		{ProfileBCP195RFC8996, "TLS 1.2 ECDHE AES-GCM", gcm12, ""},
		{ProfileBCP195RFC8996, "TLS 1.3", tls13, ""},
		{ProfileBCP195RFC8996, "TLS 1.2 ChaCha20", chacha12, ReasonNoCipherSuite},
		{ProfileBCP195RFC8996Modified, "TLS 1.2 ChaCha20", chacha12, ""},
		{ProfileBCP195RFC8996Modified, "TLS 1.1 RSA-CBC", tls11, ReasonProtocolVersion},
		{ProfileBCP195ND, "TLS 1.1 RSA-CBC", tls11, ReasonProtocolVersion},
		{ProfileBCP195ND, "TLS 1.2 ECDHE CBC", cbc12, ReasonNoCipherSuite},
		{ProfileBCP195ND, "TLS 1.3", tls13, ""},
		{ProfileBCP195, "TLS 1.1 RSA-CBC", tls11, ""},
		{ProfileBCP195, "TLS 1.3", tls13, ""},
		{ProfileBCP195Extended, "TLS 1.3", tls13, ReasonProtocolVersion},
		{ProfileBCP195Extended, "TLS 1.2 ECDHE AES-GCM", gcm12, ""},
		{ProfileBCP195Extended, "TLS 1.1 RSA-CBC", tls11, ReasonProtocolVersion},
	}
	for _, tc := range cases {
		name := tc.profile
		if name == "" {
			name = "default"
		}
		t.Run(name+"/"+tc.client, func(t *testing.T) {
			cfg := f.config()
			cfg.Profile = tc.profile
			srv := startServer(t, newLayerT(t, cfg), 2*time.Second)
			c, cerr := dial(srv.addr, tc.cfg())
			if c != nil {
				c.Close()
			}
			r := srv.next(t)
			if tc.reason == "" {
				if r.err != nil || cerr != nil {
					t.Fatalf("want accepted; server: %v, client: %v", r.err, cerr)
				}
				return
			}
			if got := Classify(r.err); got != tc.reason {
				t.Fatalf("reason = %q (%v), want %q", got, r.err, tc.reason)
			}
		})
	}
	if err := ValidateProfile("tls-1.0-please"); err == nil {
		t.Fatal("unknown profile accepted")
	}
}

// TestModifiedProfileKeySize: B.13 refuses RSA client keys under 2048 bits.
func TestModifiedProfileKeySize(t *testing.T) {
	f := newFixture(t, false)
	dir := t.TempDir()
	// openssl makes the weak key; the CA signs it like any other request.
	weakKey := filepath.Join(dir, "weak-key.pem")
	cmd := []string{"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", weakKey}
	if out, err := testpeer.Run(testpeer.Context(t, 30*time.Second), "openssl", cmd...); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	weakCert := signExternalKey(t, f.pki, weakKey, "weak")
	for _, prof := range []string{ProfileBCP195RFC8996Modified, ProfileBCP195RFC8996} {
		t.Run(prof, func(t *testing.T) {
			cfg := f.config()
			cfg.Profile = prof
			srv := startServer(t, newLayerT(t, cfg), 2*time.Second)
			c, _ := dial(srv.addr, &tls.Config{RootCAs: pool(t, f.pki.CACert), ServerName: "localhost",
				Certificates: []tls.Certificate{keyPair(t, weakCert, weakKey)}})
			if c != nil {
				c.Close()
			}
			r := srv.next(t)
			if prof == ProfileBCP195RFC8996Modified {
				if Classify(r.err) != ReasonBadCertificate {
					t.Fatalf("1024-bit RSA client: %v, want bad-certificate", r.err)
				}
			} else if r.err != nil {
				t.Fatalf("1024-bit RSA client refused by %s: %v", prof, r.err)
			}
		})
	}
}

// signExternalKey has the openssl CA sign a certificate for an existing key.
func signExternalKey(t *testing.T, p *testpeer.PKI, keyFile, name string) string {
	t.Helper()
	csr := filepath.Join(p.Dir, name+".csr")
	out := filepath.Join(p.Dir, name+".pem")
	ext := filepath.Join(p.Dir, name+".ext")
	if err := os.WriteFile(ext, []byte("[ v3 ]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := testpeer.Context(t, 30*time.Second)
	for _, args := range [][]string{
		{"req", "-new", "-key", keyFile, "-out", csr, "-subj", "/CN=" + name},
		{"x509", "-req", "-in", csr, "-CA", p.CACert, "-CAkey", p.CAKey, "-CAcreateserial", "-out", out, "-days", "1", "-extfile", ext, "-extensions", "v3"},
	} {
		if o, err := testpeer.Run(ctx, "openssl", args...); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, o)
		}
	}
	return out
}

// TestCRLHandling: expired CRLs fail closed unless allowed, and a CRL that
// its claimed issuer did not sign is refused at load.
func TestCRLHandling(t *testing.T) {
	f := newFixture(t, false)
	cert, key := f.pki.Issue(t, "client", testpeer.CertOptions{})
	dir := t.TempDir()
	caCert := parsePEMCert(t, f.pki.CACert)
	caKey := parsePEMKey(t, f.pki.CAKey)
	stale := filepath.Join(dir, "stale.crl")
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(7), ThisUpdate: time.Now().Add(-48 * time.Hour), NextUpdate: time.Now().Add(-time.Hour),
	}, caCert, caKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, stale, "X509 CRL", der)
	derFile := filepath.Join(dir, "fresh.der")
	der, err = x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(8), ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: time.Now().Add(24 * time.Hour),
	}, caCert, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(derFile, der, 0o600); err != nil {
		t.Fatal(err)
	}
	client := &tls.Config{RootCAs: pool(t, f.pki.CACert), ServerName: "localhost", Certificates: []tls.Certificate{keyPair(t, cert, key)}}

	cases := []struct {
		name   string
		crls   []string
		allow  bool
		reason string
	}{
		{"expired CRL fails closed", []string{stale}, false, ReasonCRLExpired},
		{"expired CRL allowed by config", []string{stale}, true, ""},
		{"fresh DER CRL", []string{derFile}, false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.config()
			cfg.CRLFiles, cfg.AllowExpiredCRL = tc.crls, tc.allow
			srv := startServer(t, newLayerT(t, cfg), 2*time.Second)
			c, _ := dial(srv.addr, client)
			if c != nil {
				c.Close()
			}
			r := srv.next(t)
			if got := Classify(r.err); got != tc.reason {
				t.Fatalf("reason %q (%v), want %q", got, r.err, tc.reason)
			}
		})
	}

	t.Run("CRL from another CA is refused at load", func(t *testing.T) {
		other := testpeer.NewPKI(t, "other-ca")
		cfg := f.config()
		cfg.CRLFiles = []string{other.CRL(t)}
		if _, err := New(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "no such CA") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("CRL with a forged signature is refused at load", func(t *testing.T) {
		// Same subject as the real CA, different key: the name matches, the
		// signature must not.
		forgedKey := parsePEMKey(t, testpeer.NewPKI(t, "forger").CAKey)
		forgedCA := *caCert
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(9), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour)}, &forgedCA, forgedKey)
		if err != nil {
			t.Fatal(err)
		}
		forged := filepath.Join(dir, "forged.crl")
		writePEM(t, forged, "X509 CRL", der)
		cfg := f.config()
		cfg.CRLFiles = []string{forged}
		if _, err := New(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "signature") {
			t.Fatalf("err = %v", err)
		}
	})
}

func parsePEMCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := parseCertificates(b)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

func parsePEMKey(t *testing.T, path string) crypto.Signer {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		k2, err2 := x509.ParseECPrivateKey(blk.Bytes)
		if err2 != nil {
			t.Fatalf("%s: %v / %v", path, err, err2)
		}
		return k2
	}
	return k.(crypto.Signer)
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestClientDistrustsEdge: a client that does not trust the edge's
// certificate aborts with an alert; that is the edge's problem to report,
// not a bad client certificate.
func TestClientDistrustsEdge(t *testing.T) {
	f := newFixture(t, false)
	cert, key := f.pki.Issue(t, "client", testpeer.CertOptions{})
	srv := startServer(t, newLayerT(t, f.config()), 2*time.Second)
	other := testpeer.NewPKI(t, "unrelated-ca")
	c, err := dial(srv.addr, &tls.Config{RootCAs: pool(t, other.CACert), ServerName: "localhost",
		Certificates: []tls.Certificate{keyPair(t, cert, key)}})
	if err == nil {
		c.Close()
		t.Fatal("client accepted an edge it does not trust")
	}
	if r := srv.next(t); Classify(r.err) != ReasonPeerAlert {
		t.Fatalf("reason %q (%v), want peer-alert", Classify(r.err), r.err)
	}
}

// The docs promise that a client certificate carries the extended key
// usage clientAuth. x509 verification alone takes a leaf without any
// extended key usage (and one with anyExtendedKeyUsage) as good for every
// purpose, which lets in certificates the CA never issued for TLS clients:
// an S/MIME or document-signing certificate without the extension, or the
// CA's own intermediate certificate presented as a leaf. Both are refused.
func TestClientCertificateNeedsClientAuthUsage(t *testing.T) {
	f := newFixture(t, false)
	anyEKU, anyEKUKey := f.pki.Issue(t, "any-eku", testpeer.CertOptions{ExtUsage: "anyExtendedKeyUsage"})

	// openssl's ca always writes the extension the fixture names, so the
	// certificate without one is signed here with the CA's key.
	caCert, caKey := parsePEMCert(t, f.pki.CACert), parsePEMKey(t, f.pki.CAKey)
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x5eed), Subject: pkix.Name{CommonName: "no-eku"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	noEKU := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: leafKey}

	srv := startServer(t, newLayerT(t, f.config()), 2*time.Second)
	for _, tc := range []struct {
		name string
		cert tls.Certificate
	}{
		{"no extended key usage", noEKU},
		{"anyExtendedKeyUsage", keyPair(t, anyEKU, anyEKUKey)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := dial(srv.addr, &tls.Config{RootCAs: pool(t, f.pki.CACert), ServerName: "localhost", Certificates: []tls.Certificate{tc.cert}})
			if c != nil {
				c.Close()
			}
			r := srv.next(t)
			if got := Classify(r.err); got != ReasonBadKeyUsage {
				t.Fatalf("reason %q (%v, identity %+v), want %q", got, r.err, r.id, ReasonBadKeyUsage)
			}
			if he, ok := r.err.(*HandshakeError); !ok || !he.Issued {
				t.Fatalf("err %#v: want a certificate the client CA issued, refused for its usage", r.err)
			}
		})
	}
}
