package tlslayer

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// A client's chain is verified once per state: the next handshake with the
// same certificates takes it from the cache (no new entry, same identity);
// another client's chain is verified on its own; a chain is not served
// from the cache once a certificate of it has expired; a reload starts an
// empty cache; and CRLs still refuse a cached chain (the reload that loads
// them is a new state, and checkChain runs on every handshake).
func TestVerifiedChainCache(t *testing.T) {
	f := newFixture(t, false)
	certA, keyA := f.pki.Issue(t, "client-a", testpeer.CertOptions{CN: "client-a"})
	certB, keyB := f.pki.Issue(t, "client-b", testpeer.CertOptions{CN: "client-b"})
	cfg := f.config()
	cfg.CRLFiles = []string{f.pki.CRL(t)}
	l := newLayerT(t, cfg)
	srv := startServer(t, l, 5*time.Second)
	client := func(cert, key string) *tls.Config {
		return &tls.Config{RootCAs: pool(t, f.pki.CACert), ServerName: "localhost", Certificates: []tls.Certificate{keyPair(t, cert, key)}}
	}
	a, b := client(certA, keyA), client(certB, keyB)
	hs := func(cfg *tls.Config) result {
		t.Helper()
		_, r := session(t, srv, cfg)
		return r
	}
	if r := hs(a); r.err != nil || r.id.CN != "client-a" {
		t.Fatalf("first handshake: %+v", r)
	}
	st := l.st.Load()
	if n := st.cached(); n != 1 {
		t.Fatalf("%d chains cached after one client, want 1", n)
	}
	if r := hs(a); r.err != nil || r.id.CN != "client-a" {
		t.Fatalf("second handshake: %+v", r)
	}
	if n := st.cached(); n != 1 {
		t.Fatalf("%d chains cached after the same client twice, want 1", n)
	}
	if r := hs(b); r.err != nil || r.id.CN != "client-b" {
		t.Fatalf("client-b: %+v", r)
	}
	if n := st.cached(); n != 2 {
		t.Fatalf("%d chains cached after two clients, want 2", n)
	}

	// Past its certificates' validity a cached chain is verified afresh,
	// and fails as crypto/tls's own verification would.
	leaf := parsePEMCert(t, certA)
	if _, err := st.verifyClient([]*x509.Certificate{leaf}, leaf.NotAfter.Add(time.Hour)); Classify(err) != ReasonExpired {
		t.Fatalf("a cached chain after its leaf expired: %v (reason %q), want %q", err, Classify(err), ReasonExpired)
	}

	f.pki.Revoke(t, certA)
	cfg.CRLFiles = []string{f.pki.CRL(t)}
	if err := l.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if n := l.st.Load().cached(); n != 0 {
		t.Fatalf("a reload kept %d cached chains", n)
	}
	if r := hs(a); Classify(r.err) != ReasonRevoked {
		t.Fatalf("client-a after its revocation: %v (reason %q)", r.err, Classify(r.err))
	}
	if r := hs(b); r.err != nil || r.id.CN != "client-b" {
		t.Fatalf("client-b after the reload: %+v", r)
	}

	// A stranger's chain is refused with the reason crypto/tls gave it.
	rogue := testpeer.NewPKI(t, "rogue")
	certR, keyR := rogue.Issue(t, "client", testpeer.CertOptions{CN: "client-a"})
	stranger := client(certR, keyR)
	pair := keyPair(t, certR, keyR)
	stranger.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	if r := hs(stranger); Classify(r.err) != ReasonUnknownCA {
		t.Fatalf("a stranger: %v (reason %q), want %q", r.err, Classify(r.err), ReasonUnknownCA)
	}
}
