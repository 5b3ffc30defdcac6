package tlslayer

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
	"github.com/miekg/dns"
)

// fakeDNS answers every A query with 127.0.0.1 (and nothing else), so Pebble's
// validation authority reaches the test listener for any domain name.
func fakeDNS(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for _, q := range r.Question {
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: net.IPv4(127, 0, 0, 1)})
			}
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

// pebble is testpeer's Pebble under the names these tests use.
type pebble struct {
	dir, mgmt string
	httpsCA   string // the CA of Pebble's own HTTPS certificate
	proc      *testpeer.Process
	p         *testpeer.Pebble
}

// issued counts the certificates Pebble has issued so far.
func (p *pebble) issued() int { return p.p.Issued() }

// startPebble runs Debian's pebble with real challenge validation: its
// TLS-ALPN-01 port is tlsPort on loopback, where the test puts the edge.
func startPebble(t *testing.T, tlsPort, httpPort int, validity time.Duration) *pebble {
	t.Helper()
	return startPebbleDNS(t, tlsPort, httpPort, validity, fakeDNS(t))
}

// startPebbleDNS is startPebble with Pebble's validation authority asking
// dnsServer (host:port) for A, AAAA and DNS-01's TXT records.
func startPebbleDNS(t *testing.T, tlsPort, httpPort int, validity time.Duration, dnsServer string) *pebble {
	t.Helper()
	p := testpeer.StartPebble(t, testpeer.PebbleOptions{TLSPort: tlsPort, HTTPPort: httpPort, DNSServer: dnsServer, Validity: validity})
	return &pebble{dir: p.Directory, mgmt: p.Mgmt, httpsCA: p.HTTPSCA, proc: p.Proc, p: p}
}

// root fetches the root that signs Pebble's issued certificates.
func (p *pebble) root(t *testing.T) string { return p.p.Root(t) }

// TestACMEPebble: the edge certificate comes from Pebble over real
// TLS-ALPN-01 validation (the first order at start through certmagic's own
// loopback listener, the renewal through the edge's listener itself), is
// renewed when it runs short, and DCMTK verifies it with Pebble's root.
func TestACMEPebble(t *testing.T) {
	testpeer.Require(t, "pebble", "echoscu", "openssl")
	const domain = "edge.dicomedge.test"
	port := testpeer.FreePort(t)
	peb := startPebble(t, port, testpeer.FreePort(t), 40*time.Second)
	clients := testpeer.NewPKI(t, "client-ca")
	modCert, modKey := clients.Issue(t, "modality", testpeer.CertOptions{CN: "ct1.clinic-a.example.org"})

	var renewals atomic.Int32
	events := make(chan string, 16)
	cfg := Config{
		ClientCAFiles: []string{clients.CACert},
		ACME: &ACMEConfig{
			Domains: []string{domain}, Email: "pacs-admins@example.org", Directory: peb.dir,
			CARootFiles: []string{peb.httpsCA}, Storage: filepath.Join(t.TempDir(), "acme"),
			TLSALPNPort: port, ListenHost: "127.0.0.1",
			// Renew when 70% of the 40 s lifetime is left: ~12 s after issue.
			RenewalWindowRatio: 0.7, RenewCheckInterval: time.Second,
		},
		PollInterval: -1,
		OnCertRenewed: func(d string) {
			if strings.Contains(d, "renewed") {
				renewals.Add(1)
			}
			select {
			case events <- d:
			default:
			}
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	l, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("New with ACME: %v", err)
	}
	defer l.Close()
	first := l.CertificateNotAfter()
	if first.IsZero() || time.Until(first) > 41*time.Second {
		t.Fatalf("ACME certificate NotAfter %v", first)
	}

	// Now the DICOM listener takes the port: challenge connections arrive
	// here from now on.
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var challenges atomic.Int32
	type outcome struct {
		id      Identity
		calling string
		err     error
	}
	clientDone := make(chan outcome, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := tls.Server(c, l.ServerConfig())
				hctx, hcancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer hcancel()
				id, err := l.Handshake(hctx, tc)
				if errors.Is(err, ErrACMEChallenge) {
					challenges.Add(1)
					return
				}
				if Classify(err) == ReasonEOF {
					return // certmagic probing whether the port is served
				}
				if err != nil {
					clientDone <- outcome{err: err}
					return
				}
				calling, err := rejectAssociation(tc)
				clientDone <- outcome{id: id, calling: calling, err: err}
			}()
		}
	}()

	// Pebble still reuses a valid authorization for one order in a hundred
	// with PEBBLE_AUTHZREUSE=0 (it makes a new one only when rand.Intn(100)
	// exceeds the percentage), and such a renewal needs no challenge; the
	// next renewal (every ~12 s) validates.
	deadline := time.Now().Add(60 * time.Second)
	for renewals.Load() == 0 || !l.CertificateNotAfter().After(first) || challenges.Load() == 0 {
		if time.Now().After(deadline) {
			if renewals.Load() > 0 {
				t.Fatalf("%d renewals within 60s, none validated through the edge's own listener (TLS-ALPN-01)", renewals.Load())
			}
			t.Fatalf("no renewal within 60s (NotAfter still %v, challenges on the edge listener %d)", l.CertificateNotAfter(), challenges.Load())
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("renewed: NotAfter %v -> %v; TLS-ALPN-01 connections on the edge listener: %d", first, l.CertificateNotAfter(), challenges.Load())

	// A DICOM client that trusts only Pebble's root verifies the edge.
	root := peb.root(t)
	args := []string{"-aet", "CLINA_CT1", "-aec", "DICOMEDGE", "+tls", modKey, modCert, "+cf", root, "127.0.0.1", strconv.Itoa(port)}
	out, _ := testpeer.Run(testpeer.Context(t, 30*time.Second), "echoscu", args...)
	select {
	case o := <-clientDone:
		if o.err != nil || o.id.CN != "ct1.clinic-a.example.org" || o.calling != "CLINA_CT1" {
			t.Fatalf("edge saw %+v\n%s", o, testpeer.Describe("echoscu", args, out))
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("edge saw no client\n%s", testpeer.Describe("echoscu", args, out))
	}
	if !strings.Contains(strings.ToLower(out), "reject") {
		t.Fatalf("echoscu did not get through TLS to the DICOM answer\n%s", testpeer.Describe("echoscu", args, out))
	}

	// And a client that does not trust Pebble refuses the edge.
	other := testpeer.NewPKI(t, "not-pebble")
	args[7] = other.CACert
	out, err = testpeer.Run(testpeer.Context(t, 30*time.Second), "echoscu", args...)
	if err == nil || strings.Contains(strings.ToLower(out), "reject") {
		t.Fatalf("echoscu trusted the edge without Pebble's root\n%s", testpeer.Describe("echoscu", args, out))
	}
	select {
	case <-clientDone:
	case <-time.After(5 * time.Second):
	}
}

// TestACMEPebbleHTTP01: with TLS-ALPN-01 disabled the order is validated by
// HTTP-01 on the configured port, and the layer serves the result.
func TestACMEPebbleHTTP01(t *testing.T) {
	const domain = "http01.dicomedge.test"
	httpPort := testpeer.FreePort(t)
	peb := startPebble(t, testpeer.FreePort(t), httpPort, 300*time.Second)
	clients := testpeer.NewPKI(t, "client-ca")
	cert, key := clients.Issue(t, "modality", testpeer.CertOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := New(ctx, Config{ClientCAFiles: []string{clients.CACert}, PollInterval: -1, ACME: &ACMEConfig{
		Domains: []string{domain}, Directory: peb.dir, CARootFiles: []string{peb.httpsCA},
		Storage: filepath.Join(t.TempDir(), "acme"), HTTPPort: httpPort, DisableTLSALPN: true, ListenHost: "127.0.0.1"}})
	if err != nil {
		t.Fatalf("New with ACME HTTP-01: %v", err)
	}
	defer l.Close()
	srv := startServer(t, l, 5*time.Second)
	c, err := dial(srv.addr, &tls.Config{RootCAs: pool(t, peb.root(t)), ServerName: domain,
		Certificates: []tls.Certificate{keyPair(t, cert, key)}})
	if err != nil {
		t.Fatalf("client verifying with pebble's root: %v", err)
	}
	defer c.Close()
	if r := srv.next(t); r.err != nil {
		t.Fatal(r.err)
	}
	if got := c.ConnectionState().PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != domain {
		t.Fatalf("edge certificate names %v", got)
	}
}
