package proxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/audit"
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

// A backend that refuses the edge's client certificate (it trusts another
// CA) gives the caller A-ASSOCIATE-RJ 2/3/1, transient, and the record
// names the TLS reason. Under TLS 1.2 the refusal ends the handshake; under
// TLS 1.3 it arrives after the edge's side of the handshake, in answer to
// the A-ASSOCIATE-RQ.
func TestBackendRefusesEdgeCertificate(t *testing.T) {
	p := sharedPKI(t)
	pair, err := tls.LoadX509KeyPair(p.edgeCert, p.edgeKey)
	if err != nil {
		t.Fatal(err)
	}
	other := x509.NewCertPool()
	other.AppendCertsFromPEM(mustRead(t, p.rogueCA))
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			addr := handshakeOnlyBackend(t, &tls.Config{Certificates: []tls.Certificate{pair},
				MinVersion: version, MaxVersion: version, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: other})
			e := startEdge(t, edgeOptions{Backends: tlsBackendBlock(p, addr), Rules: storeRules(`"C-ECHO"`)})
			c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
			if err := association.WritePDU(c, echoRQ("MODALITY1", "MAINPACS")); err != nil {
				t.Fatal(err)
			}
			pdu, err := readPDU(t, c, 15*time.Second)
			rj, ok := pdu.(*association.AssociateRJ)
			if err != nil || !ok || rj.Result != association.RejectTransient || rj.Source != association.RejectSourceServiceProviderPresentation ||
				rj.Reason != association.RejectPresentationTemporaryCongestion {
				t.Fatalf("client got %#v %v, want A-ASSOCIATE-RJ 2/3/1", pdu, err)
			}
			ev := e.waitEvent(t, "association.rejected", func(ev audit.Event) bool { return ev.Event == audit.EventRejected })
			if !strings.HasPrefix(ev.Reason, "backend-tls-") || ev.Reason == "backend-tls-" || ev.Result != 2 || ev.Source != 3 || ev.ReasonCode != 1 ||
				!strings.Contains(ev.Detail, "backend pacs") {
				t.Errorf("record %+v, want reason backend-tls-<alert>, 2/3/1 and the error in detail", ev)
			}
			t.Logf("reason %s; detail %s", ev.Reason, ev.Detail)
		})
	}
}

// The edge does not trust the backend's certificate: the same answer, with
// the edge's own verification failure as the reason.
func TestBackendCertificateNotTrusted(t *testing.T) {
	p := sharedPKI(t)
	untrusted := testpeer.NewPKI(t, "untrusted")
	cert, key := untrusted.Issue(t, "backend", testpeer.CertOptions{CN: "localhost", DNS: []string{"localhost"}, IPs: []string{"127.0.0.1"}})
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	addr := handshakeOnlyBackend(t, &tls.Config{Certificates: []tls.Certificate{pair}})
	e := startEdge(t, edgeOptions{Backends: tlsBackendBlock(p, addr), Rules: storeRules(`"C-ECHO"`)})
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	if err := association.WritePDU(c, echoRQ("MODALITY1", "MAINPACS")); err != nil {
		t.Fatal(err)
	}
	pdu, err := readPDU(t, c, 15*time.Second)
	if rj, ok := pdu.(*association.AssociateRJ); err != nil || !ok || rj.Result != association.RejectTransient || rj.Reason != association.RejectPresentationTemporaryCongestion {
		t.Fatalf("client got %#v %v, want A-ASSOCIATE-RJ 2/3/1", pdu, err)
	}
	ev := e.waitEvent(t, "association.rejected", func(ev audit.Event) bool { return ev.Event == audit.EventRejected })
	if ev.Reason != "backend-tls-unknown-ca" {
		t.Errorf("reason %q, want backend-tls-unknown-ca (detail %s)", ev.Reason, ev.Detail)
	}
}

func TestAlertName(t *testing.T) {
	for in, want := range map[string]string{
		"tls: bad certificate":                 "bad-certificate",
		"tls: unknown certificate authority":   "unknown-certificate-authority",
		"tls: alert(255)":                      "alert255",
		"\x1b[31mEVIL\n":                       "31mevil",
		"":                                     "alert",
		strings.Repeat("very long alert ", 20): "very-long-alert-very-long-alert-very-long-alert-",
	} {
		if got := alertName(in); got != want {
			t.Errorf("alertName(%q) = %q, want %q", in, got, want)
		}
	}
}

// handshakeOnlyBackend is a TLS backend under cfg that completes (or
// fails) the handshake of each connection and closes it: enough to see
// how the edge's backend dial ends. It returns its address.
func handshakeOnlyBackend(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	return testpeer.ListenServe(t, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_ = tls.Server(c, cfg).Handshake()
	})
}
