package tlslayer

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// resumingClient is a TLS 1.3 client with its own session cache.
func resumingClient(t *testing.T, f *fixture, cert, key string) *tls.Config {
	t.Helper()
	return &tls.Config{RootCAs: pool(t, f.pki.CACert), ServerName: "localhost", MinVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{keyPair(t, cert, key)}, ClientSessionCache: tls.NewLRUClientSessionCache(4)}
}

// session dials once (a ping round trip reads the session ticket) and
// returns whether the session resumed and what the server made of it.
func session(t *testing.T, srv *testServer, cfg *tls.Config) (resumed bool, r result) {
	t.Helper()
	c, err := dial(srv.addr, cfg)
	if c != nil {
		resumed = c.ConnectionState().DidResume
		c.Close()
	}
	r = srv.next(t)
	if err != nil && r.err == nil {
		t.Fatalf("client failed (%v) where the server succeeded", err)
	}
	return resumed, r
}

// A resumed session is judged like a full one: after a CRL reload revokes
// a certificate, its ticket no longer resumes, while another client's does
// (so the refusal is the CRL check, not lost tickets); and the identity a
// resumed session carries is the verified certificate's.
func TestResumptionRechecksCRLAndKeepsIdentity(t *testing.T) {
	f := newFixture(t, false)
	certA, keyA := f.pki.Issue(t, "client-a", testpeer.CertOptions{CN: "client-a"})
	certB, keyB := f.pki.Issue(t, "client-b", testpeer.CertOptions{CN: "client-b"})
	cfg := f.config()
	cfg.CRLFiles = []string{f.pki.CRL(t)}
	l := newLayerT(t, cfg)
	srv := startServer(t, l, 5*time.Second)
	a, b := resumingClient(t, f, certA, keyA), resumingClient(t, f, certB, keyB)
	wantA := IdentityFromCertificate(parsePEMCert(t, certA))

	for _, c := range []*tls.Config{a, b} {
		if resumed, r := session(t, srv, c); r.err != nil || resumed {
			t.Fatalf("first session: resumed=%v err=%v", resumed, r.err)
		}
	}
	resumed, r := session(t, srv, a)
	if r.err != nil || !resumed {
		t.Fatalf("second session of client-a: resumed=%v err=%v; want a resumed session", resumed, r.err)
	}
	if r.id.Fingerprint != wantA.Fingerprint || r.id.CN != "client-a" || r.id.Serial != wantA.Serial {
		t.Fatalf("resumed session's identity %+v, want client-a's certificate %+v", r.id, wantA)
	}

	f.pki.Revoke(t, certA)
	cfg.CRLFiles = []string{f.pki.CRL(t)}
	if err := l.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	resumed, r = session(t, srv, a)
	if got := Classify(r.err); got != ReasonRevoked {
		t.Fatalf("client-a offering its ticket after revocation: resumed=%v err=%v (reason %q), want %q", resumed, r.err, got, ReasonRevoked)
	}
	resumed, r = session(t, srv, b)
	if r.err != nil || !resumed {
		t.Fatalf("client-b after the CRL reload: resumed=%v err=%v; want its ticket to still resume", resumed, r.err)
	}
	if r.id.CN != "client-b" {
		t.Fatalf("client-b's resumed session carries %q", r.id.CN)
	}
}

// A ticket opens under the key that sealed it and the one after; two
// rotations later the client gets a full handshake instead.
func TestTicketKeyRotation(t *testing.T) {
	f := newFixture(t, false)
	cert, key := f.pki.Issue(t, "client", testpeer.CertOptions{})
	l := newLayerT(t, f.config())
	srv := startServer(t, l, 5*time.Second)
	c := resumingClient(t, f, cert, key)
	if _, r := session(t, srv, c); r.err != nil {
		t.Fatal(r.err)
	}
	now := time.Now()
	l.tickets.rotateIfDue(now.Add(ticketKeyPeriod + time.Minute))
	if resumed, r := session(t, srv, c); r.err != nil || !resumed {
		t.Fatalf("one rotation later: resumed=%v err=%v; want the previous key to open the ticket", resumed, r.err)
	}
	// That session was resumed under the new key's ticket; two more
	// rotations retire the key that sealed it.
	l.tickets.rotateIfDue(now.Add(2*ticketKeyPeriod + 2*time.Minute))
	l.tickets.rotateIfDue(now.Add(3*ticketKeyPeriod + 3*time.Minute))
	if resumed, r := session(t, srv, c); r.err != nil || resumed {
		t.Fatalf("two rotations later: resumed=%v err=%v; want a full handshake", resumed, r.err)
	}
}

// A reload that drops the CA a session's client chains to ends that
// session's resumption: the ticket is refused and the full handshake fails.
func TestResumptionEndsWithItsCA(t *testing.T) {
	f := newFixture(t, false)
	other := testpeer.NewPKI(t, "other-ca")
	cert, key := f.pki.Issue(t, "client", testpeer.CertOptions{})
	cfg := f.config()
	l := newLayerT(t, cfg)
	srv := startServer(t, l, 5*time.Second)
	c := resumingClient(t, f, cert, key)
	if _, r := session(t, srv, c); r.err != nil {
		t.Fatal(r.err)
	}
	if resumed, r := session(t, srv, c); r.err != nil || !resumed {
		t.Fatalf("before the reload: resumed=%v err=%v; want a resumed session", resumed, r.err)
	}
	cfg.ClientCAFiles = []string{other.CACert}
	if err := l.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	resumed, r := session(t, srv, c)
	if resumed || r.err == nil {
		t.Fatalf("after its CA was dropped: resumed=%v err=%v; want a refused handshake", resumed, r.err)
	}
	// crypto/tls clients then send no certificate at all, as the edge's
	// CertificateRequest names only the CAs it now trusts.
	if got := Classify(r.err); got != ReasonUnknownCA && got != ReasonNoClientCertificate {
		t.Fatalf("reason %q (%v), want %q or %q", got, r.err, ReasonUnknownCA, ReasonNoClientCertificate)
	}
}
