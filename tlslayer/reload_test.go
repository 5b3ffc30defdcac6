package tlslayer

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

func serialSeen(c *tls.Conn) string {
	return serialHex(c.ConnectionState().PeerCertificates[0].SerialNumber)
}

func roundTrip(t *testing.T, c *tls.Conn) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("more")); err != nil {
		t.Fatalf("old connection write: %v", err)
	}
	buf := make([]byte, 4)
	if _, err := c.Read(buf); err != nil || string(buf) != "more" {
		t.Fatalf("old connection read: %q %v", buf, err)
	}
}

// TestRotationOnDisk: the edge certificate changes on disk while connections
// are open; they continue, and new handshakes present the new certificate.
func TestRotationOnDisk(t *testing.T) {
	f := newFixture(t, false)
	cert2, key2 := f.pki.Issue(t, "edge2", testpeer.CertOptions{CN: "localhost", DNS: []string{"localhost"}, Server: true})
	client, clientKey := f.pki.Issue(t, "client", testpeer.CertOptions{})
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "edge.pem"), filepath.Join(dir, "edge-key.pem")
	copyFile(t, f.edgeCert, certPath)
	copyFile(t, f.edgeKey, keyPath)

	var renewed atomic.Int32
	cfg := f.config()
	cfg.CertFile, cfg.KeyFile, cfg.PollInterval = certPath, keyPath, 50*time.Millisecond
	cfg.OnCertRenewed = func(string) { renewed.Add(1) }
	l := newLayerT(t, cfg)
	srv := startServer(t, l, 2*time.Second)
	ccfg := &tls.Config{RootCAs: pool(t, f.pki.CACert), ServerName: "localhost", Certificates: []tls.Certificate{keyPair(t, client, clientKey)}}

	var old []*tls.Conn
	for range 3 {
		c, err := dial(srv.addr, ccfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		srv.next(t)
		old = append(old, c)
	}
	first := serialSeen(old[0])
	before := l.CertificateNotAfter()

	// Key first, then certificate: in between the pair does not match and
	// the watcher must keep serving the old one.
	copyFile(t, key2, keyPath)
	copyFile(t, cert2, certPath)

	want := serialHex(parsePEMCert(t, cert2).SerialNumber)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := dial(srv.addr, ccfg)
		if err != nil {
			t.Fatalf("handshake during rotation: %v", err)
		}
		srv.next(t)
		got := serialSeen(c)
		c.Close()
		if got == want {
			break
		}
		if got != first {
			t.Fatalf("served serial %s, neither old %s nor new %s", got, first, want)
		}
		if time.Now().After(deadline) {
			t.Fatalf("new certificate not served within 10s (still %s)", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range old {
		roundTrip(t, c)
	}
	if renewed.Load() == 0 {
		t.Error("OnCertRenewed not called")
	}
	if after := l.CertificateNotAfter(); after.Equal(before) && parsePEMCert(t, cert2).NotAfter != before {
		t.Errorf("CertificateNotAfter still %v", after)
	}
}

// TestReload: an explicit Reload swaps CAs and certificates; a broken one
// leaves the old state serving.
func TestReload(t *testing.T) {
	f := newFixture(t, false)
	client, clientKey := f.pki.Issue(t, "client", testpeer.CertOptions{})
	other := testpeer.NewPKI(t, "other-ca")
	otherClient, otherKey := other.Issue(t, "other-client", testpeer.CertOptions{})

	l := newLayerT(t, f.config())
	srv := startServer(t, l, 2*time.Second)
	roots := pool(t, f.pki.CACert)
	fromF := &tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{keyPair(t, client, clientKey)}}
	otherCert := keyPair(t, otherClient, otherKey)
	fromOther := &tls.Config{RootCAs: roots, ServerName: "localhost",
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &otherCert, nil }}

	try := func(cfg *tls.Config) error {
		c, _ := dial(srv.addr, cfg)
		if c != nil {
			c.Close()
		}
		return srv.next(t).err
	}
	if err := try(fromOther); Classify(err) != ReasonUnknownCA {
		t.Fatalf("before reload, other CA: %v", err)
	}

	bad := f.config()
	bad.ClientCAFiles = []string{filepath.Join(t.TempDir(), "missing.pem")}
	if err := l.Reload(bad); err == nil {
		t.Fatal("Reload with a missing CA file succeeded")
	}
	if err := try(fromF); err != nil {
		t.Fatalf("after failed reload the old state should serve: %v", err)
	}

	both := f.config()
	both.ClientCAFiles = []string{f.pki.CACert, other.CACert}
	if err := l.Reload(both); err != nil {
		t.Fatal(err)
	}
	if err := try(fromOther); err != nil {
		t.Fatalf("after reload, other CA refused: %v", err)
	}

	// Revoke after the fact: the next Reload's CRL applies to new handshakes.
	f.pki.Revoke(t, client)
	withCRL := both
	withCRL.CRLFiles = []string{f.pki.CRL(t)}
	if err := l.Reload(withCRL); err != nil {
		t.Fatal(err)
	}
	if err := try(fromF); Classify(err) != ReasonRevoked {
		t.Fatalf("after CRL reload: %v, want revoked", err)
	}
}
