package proxy

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/internal/testpeer"
	"github.com/dicomedge/dicomedge/tlslayer"
)

// readCert parses the PEM certificate file an openssl CA wrote.
func readCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(data)
	if blk == nil {
		t.Fatalf("%s: no PEM", file)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Every refused certificate is named: for each reason a handshake fails
// on, a real client (DCMTK's echoscu) presents an openssl-made
// certificate, and the tls.failed record carries that certificate's
// subject, issuer, serial, fingerprint and validity. Certificates the edge's
// CA issued (expired, revoked, ...) also appear in the expiry metric; the
// stranger's (unknown CA) does not, so an attacker cannot add series.
func TestTLSFailedNamesThePresentedCertificate(t *testing.T) {
	testpeer.Require(t, "echoscu")
	p := sharedPKI(t)
	// A CA of this test's own, so that revoking and the CRL touch nobody else.
	ca := testpeer.NewPKI(t, "clinic-ca")
	now := time.Now()
	type tc struct {
		reason     string
		cert, key  string
		issued     bool // by a client CA: in the metric
		subjectHas string
	}
	var cases []tc
	add := func(reason, name string, o testpeer.CertOptions, issued bool, subjectHas string) {
		c, k := ca.Issue(t, name, o)
		cases = append(cases, tc{reason, c, k, issued, subjectHas})
	}
	add(tlslayer.ReasonExpired, "ct-expired", testpeer.CertOptions{CN: "ct1.clinic-a.example.org",
		NotBefore: now.Add(-400 * 24 * time.Hour), NotAfter: now.Add(-2 * time.Hour)}, true, "CN=ct1.clinic-a.example.org")
	// Both CNs are shown: the one a tool would match and the one it would display.
	add(tlslayer.ReasonMultipleCN, "two-cn", testpeer.CertOptions{Subject: "/O=dicomedge tests/CN=harmless/CN=mr1.clinic-b.example.org"}, true, "CN=mr1.clinic-b.example.org,CN=harmless")
	add(tlslayer.ReasonBadKeyUsage, "no-digsig", testpeer.CertOptions{CN: "us1.clinic-c.example.org", KeyUsage: "critical,keyAgreement"}, true, "CN=us1.clinic-c.example.org")
	add(tlslayer.ReasonBadKeyUsage, "codesigning", testpeer.CertOptions{CN: "cr1.clinic-d.example.org", ExtUsage: "codeSigning"}, true, "CN=cr1.clinic-d.example.org")
	add(tlslayer.ReasonNotYetValid, "not-yet", testpeer.CertOptions{CN: "nm1.clinic-f.example.org",
		NotBefore: now.Add(48 * time.Hour), NotAfter: now.Add(400 * 24 * time.Hour)}, true, "CN=nm1.clinic-f.example.org")
	// A name built to pass for another client: a right-to-left override
	// (U+202E) inside the CN, which the record must carry escaped.
	add(tlslayer.ReasonMultipleCN, "bidi", testpeer.CertOptions{Subject: "/O=dicomedge tests/CN=gro.elpmaxe.a-cinilc.1tc\u202e/CN=x"}, true, "CN=gro.elpmaxe.a-cinilc.1tc\u202e")
	revoked, revokedKey := ca.Issue(t, "dx-revoked", testpeer.CertOptions{CN: "dx1.clinic-e.example.org"})
	ca.Revoke(t, revoked)
	cases = append(cases, tc{tlslayer.ReasonRevoked, revoked, revokedKey, true, "CN=dx1.clinic-e.example.org"})
	cases = append(cases, tc{tlslayer.ReasonUnknownCA, p.rogueCert, p.rogueKey, false, "CN=client"})
	crl := ca.CRL(t)

	e := startEdge(t, edgeOptions{AdminListen: true,
		ExtraClientCAs: []string{ca.CACert},
		TLSExtra:       `crl = ["` + crl + `"]`})
	for _, c := range cases {
		cert := readCert(t, c.cert)
		fp := fingerprint(cert)
		t.Run(c.reason+"/"+cert.Subject.CommonName, func(t *testing.T) {
			out, err := e.dcmtkAs(t, c.cert, c.key, "echoscu", "-aet", "MODALITY", "-aec", "DICOMEDGE", e.host(), e.port())
			if err == nil {
				t.Fatalf("echoscu with a %s certificate succeeded:\n%s", c.reason, out)
			}
			ev := e.waitEvent(t, "tls.failed naming "+fp, func(ev audit.Event) bool {
				return ev.Event == audit.EventTLSFailed && ev.Client != nil && ev.Client.Fingerprint == fp
			})
			if ev.Reason != c.reason {
				t.Errorf("reason %q, want %q", ev.Reason, c.reason)
			}
			cl := ev.Client
			// Every record line keeps attacker-controlled characters escaped.
			raw, err := os.ReadFile(e.AuditFile)
			if err != nil {
				t.Fatal(err)
			}
			if strings.ContainsRune(string(raw), '\u202e') {
				t.Errorf("the audit file holds a raw U+202E")
			}
			if !strings.Contains(cl.Subject, c.subjectHas) || cl.Subject != tlslayer.IdentityFromCertificate(cert).Subject {
				t.Errorf("subject %q, want %q (with %s)", cl.Subject, cert.Subject, c.subjectHas)
			}
			if cl.Issuer != cert.Issuer.String() || cl.Serial != cert.SerialNumber.Text(16) ||
				!cl.NotAfter.Equal(cert.NotAfter) || !cl.NotBefore.Equal(cert.NotBefore) {
				t.Errorf("client %+v does not describe %s (issuer %q serial %x %v..%v)", cl, c.cert, cert.Issuer, cert.SerialNumber, cert.NotBefore, cert.NotAfter)
			}
		})
	}
	if raw, _ := os.ReadFile(e.AuditFile); !strings.Contains(string(raw), `gro.elpmaxe.a-cinilc.1tc\u202e`) {
		var lines []string
		for _, l := range strings.Split(string(raw), "\n") {
			if strings.Contains(l, "1tc") {
				lines = append(lines, l)
			}
		}
		t.Errorf("the override in the presented CN is not in the audit file as \\u202e: %q", lines)
	}
	// A record names the certificate, and the metric only the clients of a
	// client CA: every issued one, none of the stranger's.
	m := scrape(t, "http://"+e.Server.AdminAddr().String()+"/metrics")
	for _, c := range cases {
		cert := readCert(t, c.cert)
		fp := fingerprint(cert)
		var found bool
		var v float64
		for k, val := range m {
			if strings.HasPrefix(k, "dicomedge_client_cert_expiry_seconds{") && strings.Contains(k, `fingerprint="`+fp+`"`) {
				found, v = true, val
			}
		}
		if found != c.issued {
			t.Errorf("%s (%s): in dicomedge_client_cert_expiry_seconds: %v, want %v", c.reason, cert.Subject.CommonName, found, c.issued)
		}
		if found {
			want := time.Until(cert.NotAfter).Seconds()
			if v > want+60 || v < want-60 {
				t.Errorf("%s: expiry seconds %v, want about %v", c.reason, v, want)
			}
		}
	}
}

// A client certificate that expires within tls.warn_expiry gets one
// tls.expiring record (not one per association) and its expiry in the
// metric, which promtool accepts; one that does not is only in the metric.
func TestExpiringClientCertificate(t *testing.T) {
	testpeer.Require(t, "echoscu")
	ca := testpeer.NewPKI(t, "clinic-ca")
	now := time.Now()
	soon, soonKey := ca.Issue(t, "ct-soon", testpeer.CertOptions{CN: "client", NotBefore: now.Add(-300 * 24 * time.Hour), NotAfter: now.Add(5*24*time.Hour + time.Hour)})
	later, laterKey := ca.Issue(t, "ct-later", testpeer.CertOptions{CN: "client", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(60 * 24 * time.Hour)})
	e := startEdge(t, edgeOptions{AdminListen: true,
		ExtraClientCAs: []string{ca.CACert},
		TLSExtra:       `warn_expiry = "14d"`})
	for range 2 {
		for _, id := range [][2]string{{soon, soonKey}, {later, laterKey}} {
			if out, err := e.dcmtkAs(t, id[0], id[1], "echoscu", "-aet", "MODALITY", "-aec", "DICOMEDGE", e.host(), e.port()); err != nil {
				t.Fatalf("echoscu: %v\n%s", err, out)
			}
		}
	}
	soonFP, laterFP := fingerprint(readCert(t, soon)), fingerprint(readCert(t, later))
	e.waitEvent(t, "association.released of the second echo", func(ev audit.Event) bool {
		return ev.Event == audit.EventReleased
	})
	var expiring []audit.Event
	accepted := 0
	for _, ev := range e.events(t) {
		switch ev.Event {
		case audit.EventTLSExpiring:
			expiring = append(expiring, ev)
		case audit.EventAccepted:
			accepted++
		}
	}
	if len(expiring) != 1 {
		t.Fatalf("%d tls.expiring records, want 1 (once a day per certificate): %+v", len(expiring), expiring)
	}
	ev := expiring[0]
	if ev.Client == nil || ev.Client.Fingerprint != soonFP || ev.Client.CN != "client" || !strings.HasPrefix(ev.Detail, "5 days left") {
		t.Errorf("tls.expiring %+v (client %+v), want the certificate %s with 5 days left", ev, ev.Client, soonFP)
	}
	if accepted < 2 {
		t.Errorf("%d association.accepted, want 4", accepted)
	}

	url := "http://" + e.Server.AdminAddr().String() + "/metrics"
	m := scrape(t, url)
	want := map[string]time.Duration{soonFP: 5*24*time.Hour + time.Hour, laterFP: 60 * 24 * time.Hour}
	for fp, left := range want {
		key := `dicomedge_client_cert_expiry_seconds{cn="client",fingerprint="` + fp + `"}`
		v, ok := m[key]
		if !ok {
			t.Errorf("no %s in /metrics", key)
			continue
		}
		if d := v - left.Seconds(); d > 120 || d < -120 {
			t.Errorf("%s = %v, want about %v", key, v, left.Seconds())
		}
		if seen := m[`dicomedge_client_cert_last_seen_timestamp_seconds{cn="client",fingerprint="`+fp+`"}`]; seen < float64(now.Unix()) {
			t.Errorf("last seen %v, before the test began (%v)", seen, now.Unix())
		}
	}
	testpeer.Require(t, "promtool")
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(string(body))
	if out, err := cmd.CombinedOutput(); err != nil {
		// promtool exits 3 for lint warnings about metrics the edge does not own (go_*);
		// only a problem with the client certificate metrics fails the test.
		if strings.Contains(string(out), "dicomedge_client_cert") {
			t.Fatalf("promtool check metrics: %v\n%s", err, out)
		}
		t.Logf("promtool check metrics: %v\n%s", err, out)
	}
}
