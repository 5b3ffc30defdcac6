package proxy

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/internal/testpeer"
	"github.com/dicomedge/dicomedge/policy"
)

// tlsBackendBlock is a backend with a tls block trusting the test CA.
func tlsBackendBlock(p *testPKI, addr string) string {
	return fmt.Sprintf(`backend "pacs" {
  address  = %q
  ae_title = "PACS"
  tls {
    ca          = [%q]
    cert_file   = %q
    key_file    = %q
    server_name = "localhost"
  }
}
`, addr, p.ca, p.clientCert, p.clientKey)
}

// The edge dials a TLS backend under its tls.profile
// (PS3.15 BCP 195 RFC 8996/9325 by default), not merely TLS 1.2+: a backend
// offering only CBC suites is not reached.
func TestBackendTLSUsesProfile(t *testing.T) {
	p := sharedPKI(t)
	pair, err := tls.LoadX509KeyPair(p.edgeCert, p.edgeKey)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair},
		MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}})
	if err != nil {
		t.Fatal(err)
	}
	handshake := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			handshake <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		handshake <- c.(*tls.Conn).Handshake()
	}()
	t.Cleanup(func() { ln.Close() })
	e := startEdge(t, edgeOptions{Backends: tlsBackendBlock(p, ln.Addr().String()), Rules: storeRules(`"C-ECHO"`)})
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	if err := association.WritePDU(c, echoRQ("MODALITY1", "MAINPACS")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-handshake:
		if err == nil {
			t.Fatal("the edge completed a TLS handshake with a CBC-only backend")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no handshake seen")
	}
	pdu, err := readPDU(t, c, 10*time.Second)
	if rj, ok := pdu.(*association.AssociateRJ); err != nil || !ok || rj.Result != association.RejectTransient {
		t.Errorf("client got %T %v, want a transient A-ASSOCIATE-RJ (backend unreachable)", pdu, err)
	}
}

// The cache of backend TLS configs holds the current
// policy's backends only, however many reloads there were; an association
// from before a reload neither fills nor empties it.
func TestBackendTLSCacheBoundedAcrossReloads(t *testing.T) {
	p := sharedPKI(t)
	e := startEdge(t, edgeOptions{Backends: tlsBackendBlock(p, "127.0.0.1:1"), Rules: storeRules(`"C-ECHO"`)})
	s := e.Server
	first := s.current()
	for i := range 5 {
		cfg, diags := policy.LoadFile(e.file)
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		if err := s.Reload(cfg); err != nil {
			t.Fatal(err)
		}
		tc, err := s.backendTLS.get(cfg, s.current(), cfg.Backends["pacs"])
		if err != nil || tc == nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		if again, _ := s.backendTLS.get(cfg, s.current(), cfg.Backends["pacs"]); again != tc {
			t.Errorf("reload %d: config not cached", i)
		}
		if _, err := s.backendTLS.get(first, s.current(), first.Backends["pacs"]); err != nil {
			t.Fatal(err)
		}
		if n := s.backendTLS.len(); n != 1 {
			t.Fatalf("after reload %d the cache holds %d configs, want 1", i, n)
		}
	}
}

// A rotated backend client certificate is used from the
// next dial, without a SIGHUP.
func TestBackendTLSCacheRereadsRotatedFiles(t *testing.T) {
	p := sharedPKI(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	copyFile := func(from, to string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(to, mustRead(t, from), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(to, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	then := time.Now().Add(-time.Hour)
	copyFile(p.clientCert, cert, then)
	copyFile(p.clientKey, key, then)
	e := startEdge(t, edgeOptions{Backends: fmt.Sprintf(`backend "pacs" {
  address  = "127.0.0.1:1"
  ae_title = "PACS"
  tls {
    ca        = [%q]
    cert_file = %q
    key_file  = %q
  }
}
`, p.ca, cert, key), Rules: storeRules(`"C-ECHO"`)})
	s := e.Server
	cfg := s.current()
	be := cfg.Backends["pacs"]
	first, err := s.backendTLS.get(cfg, cfg, be)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := s.backendTLS.get(cfg, cfg, be); again != first {
		t.Fatal("unchanged files: config rebuilt")
	}
	newCert, newKey := p.issuer.Issue(t, "rotated-backend-client", testpeer.CertOptions{CN: "edge-rotated"})
	copyFile(newCert, cert, time.Now())
	copyFile(newKey, key, time.Now())
	rotated, err := s.backendTLS.get(cfg, cfg, be)
	if err != nil {
		t.Fatal(err)
	}
	if rotated == first || len(rotated.Certificates) != 1 ||
		bytes.Equal(rotated.Certificates[0].Certificate[0], first.Certificates[0].Certificate[0]) {
		t.Error("the rotated client certificate is not used")
	}
}
