package tlslayer

import (
	"context"
	"crypto/tls"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libdns/libdns"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// bindUpdates counts the TXT records named added by dynamic update, from
// named's log ("adding an RR at '_acme-challenge.edge.test' TXT").
func bindUpdates(b *testpeer.BIND, name string) int {
	return strings.Count(b.Proc.Output(), "adding an RR at '"+strings.TrimSuffix(name, ".")+"' TXT")
}

func dnsConfigFor(b *testpeer.BIND) *DNSConfig {
	return &DNSConfig{Server: b.Addr, KeyName: b.KeyName, KeyAlg: b.KeyAlg, KeySecret: b.Secret, Zone: b.Zone,
		PropagationTimeout: 30 * time.Second}
}

// TestRFC2136ZoneBIND: the provider certmagic's solver writes through adds
// and removes TXT records in a real BIND9 by TSIG-signed update, rewrites
// names found under another zone into the configured one, refuses a name
// outside it, and a wrong key is refused by BIND (and the error says so
// without the secret).
func TestRFC2136ZoneBIND(t *testing.T) {
	b := testpeer.StartBIND(t, "edge.test.")
	z := newRFC2136Zone(*dnsConfigFor(b))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// certmagic names the record relative to the zone its SOA lookup
	// found; "test." here stands for a lookup that went wrong.
	rec := libdns.RR{Type: "TXT", Name: "_acme-challenge.edge", Data: "token-1", TTL: time.Minute}
	out, err := z.AppendRecords(ctx, "test.", []libdns.Record{rec})
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	if len(out) != 1 || out[0].RR().Name != "_acme-challenge.edge" {
		t.Fatalf("append returned %+v; want the record relative to the caller's zone", out)
	}
	if got := b.TXT(t, "_acme-challenge.edge.test."); !slices.Equal(got, []string{"token-1"}) {
		t.Fatalf("BIND serves %q after the update", got)
	}
	// A second value under the same name (a wildcard and its base domain
	// are validated at once) is added beside the first.
	rec2 := libdns.RR{Type: "TXT", Name: "_acme-challenge", Data: "token-2", TTL: time.Minute}
	if _, err := z.AppendRecords(ctx, "edge.test.", []libdns.Record{rec2}); err != nil {
		t.Fatal(err)
	}
	if got := b.TXT(t, "_acme-challenge.edge.test."); len(got) != 2 {
		t.Fatalf("BIND serves %q; want both tokens", got)
	}
	if _, err := z.DeleteRecords(ctx, "test.", []libdns.Record{rec}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if got := b.TXT(t, "_acme-challenge.edge.test."); !slices.Equal(got, []string{"token-2"}) {
		t.Fatalf("BIND serves %q after deleting token-1", got)
	}

	if _, err := z.AppendRecords(ctx, "example.org.", []libdns.Record{libdns.RR{Type: "TXT", Name: "_acme-challenge", Data: "x"}}); err == nil ||
		!strings.Contains(err.Error(), "outside zone edge.test.") {
		t.Fatalf("a name outside the zone: %v", err)
	}

	bad := *dnsConfigFor(b)
	bad.KeySecret = "d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3I="
	_, err = newRFC2136Zone(bad).AppendRecords(ctx, "edge.test.", []libdns.Record{libdns.RR{Type: "TXT", Name: "_acme-challenge", Data: "forged"}})
	if err == nil || !strings.Contains(err.Error(), "has this key_alg and secret") {
		t.Fatalf("an update signed with the wrong key: %v", err)
	}
	if strings.Contains(err.Error(), bad.KeySecret) || strings.Contains(err.Error(), b.Secret) {
		t.Fatalf("the error shows a secret: %v", err)
	}
	if got := b.TXT(t, "_acme-challenge.edge.test."); slices.Contains(got, "forged") {
		t.Fatal("the forged record is served")
	}
	t.Logf("wrong key: %v", err)

	// A server that is not primary for the zone refuses (NOTAUTH), and the
	// error says where to look.
	other := testpeer.StartBIND(t, "other.test.")
	foreign := *dnsConfigFor(other)
	foreign.Zone = "edge.test."
	_, err = newRFC2136Zone(foreign).AppendRecords(ctx, "edge.test.", []libdns.Record{libdns.RR{Type: "TXT", Name: "_acme-challenge", Data: "x"}})
	if err == nil || !strings.Contains(err.Error(), "update-policy") {
		t.Fatalf("an update for a zone the server does not serve: %v", err)
	}
	t.Logf("zone not served: %v", err)
}

// TestACMEPebbleDNS01BIND: with port 443 closed (nothing listens on Pebble's
// TLS-ALPN-01 or HTTP-01 ports), the edge obtains a wildcard certificate
// for *.edge.test from Pebble by DNS-01: the TXT records are written into a
// real BIND9 by TSIG-signed RFC 2136 update, Pebble validates them by asking
// that BIND (pebble -dnsserver), and certmagic's own propagation check asks
// it too. The edge serves the certificate to a client asking for
// a.edge.test (SNI) and to one sending no SNI, renews it by DNS-01 again
// after a reload rotated the TSIG key, and cleans the challenge records up.
func TestACMEPebbleDNS01BIND(t *testing.T) {
	testpeer.Require(t, "pebble", "openssl")
	b := testpeer.StartBIND(t, "edge.test.", "dicomedge-acme-2")
	peb := startPebbleDNS(t, testpeer.FreePort(t), testpeer.FreePort(t), 40*time.Second, b.Addr)
	clients := testpeer.NewPKI(t, "client-ca")
	cert, key := clients.Issue(t, "modality", testpeer.CertOptions{CN: "ct1.clinic-a.example.org"})

	var renewals atomic.Int32
	cfg := Config{ClientCAFiles: []string{clients.CACert}, PollInterval: -1, ACME: &ACMEConfig{
		Domains: []string{"*.edge.test", "edge.test"}, Email: "pacs-admins@example.org", Directory: peb.dir,
		CARootFiles: []string{peb.httpsCA}, Storage: filepath.Join(t.TempDir(), "acme"),
		// Renew when 70% of the 40 s lifetime is left: ~12 s after issue.
		RenewalWindowRatio: 0.7, RenewCheckInterval: time.Second,
		DNS: dnsConfigFor(b),
	}, OnCertRenewed: func(d string) {
		if strings.Contains(d, "renewed") {
			renewals.Add(1)
		}
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	l, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("New with ACME DNS-01: %v\npebble:\n%s", err, peb.proc.Output())
	}
	defer l.Close()
	first := l.CertificateNotAfter()
	if first.IsZero() || time.Until(first) > 41*time.Second {
		t.Fatalf("ACME certificate NotAfter %v", first)
	}
	const challenge = "_acme-challenge.edge.test."
	// One update per name (*.edge.test, edge.test), or one when Pebble let
	// the second order reuse the first's authorization (its 1% quirk).
	if n := bindUpdates(b, challenge); n < 1 {
		t.Fatalf("BIND took no TXT update for %s\n%s", challenge, b.Proc.Output())
	}
	// named logs every query (querylog): Pebble's validation and
	// certmagic's propagation check both asked BIND for the record.
	if n := strings.Count(b.Proc.Output(), "query: "+strings.TrimSuffix(challenge, ".")+" IN TXT"); n < 2 {
		t.Fatalf("BIND answered %d TXT queries for %s\n%s", n, challenge, b.Proc.Output())
	}

	srv := startServer(t, l, 5*time.Second)
	root := peb.root(t)
	// certmagic keeps one certificate per name: the wildcard for
	// a.edge.test and for clients without SNI (the first domain), edge.test's own for edge.test.
	for _, sni := range []string{"a.edge.test", "edge.test", ""} {
		c, err := dial(srv.addr, &tls.Config{RootCAs: pool(t, root), ServerName: sni, InsecureSkipVerify: sni == "",
			Certificates: []tls.Certificate{keyPair(t, cert, key)}})
		if err != nil {
			t.Fatalf("SNI %q: client verifying with Pebble's root: %v", sni, err)
		}
		leaf := c.ConnectionState().PeerCertificates[0]
		c.Close()
		if r := srv.next(t); r.err != nil {
			t.Fatal(r.err)
		}
		want := "*.edge.test"
		if sni == "edge.test" {
			want = sni
		}
		if !slices.Equal(leaf.DNSNames, []string{want}) {
			t.Fatalf("SNI %q: the edge served a certificate for %v until %v; want %s", sni, leaf.DNSNames, leaf.NotAfter, want)
		}
	}
	// An independent TLS stack checks the wildcard against the name it asked for.
	args := []string{"s_client", "-connect", srv.addr, "-servername", "a.edge.test", "-verify_hostname", "a.edge.test",
		"-CAfile", root, "-cert", cert, "-key", key, "-verify_return_error"}
	out, _ := testpeer.Run(testpeer.Context(t, 30*time.Second), "openssl", args...)
	if !strings.Contains(out, "Verify return code: 0") || !strings.Contains(out, "*.edge.test") {
		t.Fatalf("s_client did not verify the wildcard for a.edge.test\n%s", testpeer.Describe("openssl", args, out))
	}
	srv.next(t)

	// The TSIG key is rotated by a reload (SIGHUP): the renewal's updates
	// are signed with the new key, without a restart.
	rotated := cfg
	acme := *cfg.ACME
	acme.DNS = dnsConfigFor(b)
	acme.DNS.KeyName, acme.DNS.KeySecret = "dicomedge-acme-2.", b.Extra["dicomedge-acme-2."]
	rotated.ACME = &acme
	if err := l.Reload(rotated); err != nil {
		t.Fatalf("reload with a rotated TSIG key: %v", err)
	}
	byNewKey := func() int {
		return strings.Count(b.Proc.Output(), "/key dicomedge-acme-2: updating zone 'edge.test/IN': adding an RR")
	}

	// The renewal solves DNS-01 through BIND again. Pebble reuses a valid
	// authorization for about one order in a hundred even with
	// PEBBLE_AUTHZREUSE=0; the next renewal (every ~12 s) validates anew.
	updates := bindUpdates(b, challenge)
	deadline := time.Now().Add(60 * time.Second)
	for renewals.Load() == 0 || !l.CertificateNotAfter().After(first) || bindUpdates(b, challenge) <= updates || byNewKey() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no renewal by DNS-01 with the rotated key within 60s (renewals %d, NotAfter %v -> %v, BIND TXT updates %d -> %d, by the new key %d)\npebble:\n%s\nnamed:\n%s",
				renewals.Load(), first, l.CertificateNotAfter(), updates, bindUpdates(b, challenge), byNewKey(), peb.proc.Output(), b.Proc.Output())
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("renewed by DNS-01: NotAfter %v -> %v; BIND TXT updates %d -> %d (%d by the rotated key)", first, l.CertificateNotAfter(), updates, bindUpdates(b, challenge), byNewKey())
	c, err := dial(srv.addr, &tls.Config{RootCAs: pool(t, root), ServerName: "a.edge.test",
		Certificates: []tls.Certificate{keyPair(t, cert, key)}})
	if err != nil {
		t.Fatalf("after the renewal: %v", err)
	}
	if na := c.ConnectionState().PeerCertificates[0].NotAfter; !na.After(first) {
		t.Fatalf("after the renewal the edge serves a certificate expiring %v (first %v)", na, first)
	}
	c.Close()
	srv.next(t)

	// certmagic removes the challenge records once an order is done.
	deadline = time.Now().Add(15 * time.Second)
	for len(b.TXT(t, challenge)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("challenge records left in the zone: %q", b.TXT(t, challenge))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
