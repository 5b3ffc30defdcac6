package proxy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicomedge/dicomedge/tlslayer"
)

// The seen-certificate set writes tls.expiring once a day per certificate,
// forgets a client after 30 days, and never holds more than clientCertsMax
// series however many certificates come.
func TestClientCertsBoundsAndOncePerDay(t *testing.T) {
	now := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	cc := newClientCerts()
	cc.now = func() time.Time { return now }
	warn := 14 * 24 * time.Hour
	soon := tlslayer.Identity{CN: "ct1", Fingerprint: "sha256:01", NotAfter: now.Add(5 * 24 * time.Hour)}
	later := tlslayer.Identity{CN: "mr1", Fingerprint: "sha256:02", NotAfter: now.Add(90 * 24 * time.Hour)}
	expired := tlslayer.Identity{CN: "dx1", Fingerprint: "sha256:03", NotAfter: now.Add(-time.Hour)}

	if !cc.seen(soon, warn) {
		t.Fatal("first sight of a certificate 5 days from expiry: no tls.expiring")
	}
	if cc.seen(soon, warn) {
		t.Fatal("second association the same day wrote tls.expiring again")
	}
	if cc.seen(later, warn) || cc.seen(expired, warn) {
		t.Fatal("tls.expiring for a certificate outside warn_expiry, or already expired")
	}
	if cc.seen(soon, 0) {
		t.Fatal("warn_expiry 0 wrote tls.expiring")
	}
	now = now.Add(23 * time.Hour)
	if cc.seen(soon, warn) {
		t.Fatal("tls.expiring again after 23 hours")
	}
	now = now.Add(time.Hour)
	if !cc.seen(soon, warn) {
		t.Fatal("no tls.expiring a day later")
	}
	if n := countSeries(t, cc); n != 3 {
		t.Fatalf("%d expiry series, want 3", n)
	}
	// A client not seen for 30 days leaves the metric.
	now = now.Add(29 * 24 * time.Hour)
	cc.seen(later, warn)
	now = now.Add(2 * 24 * time.Hour)
	if n := countSeries(t, cc); n != 1 {
		t.Fatalf("%d expiry series after 31 days, want 1 (the one seen 2 days ago)", n)
	}
	// Bounded: the least recently seen goes first.
	for i := range clientCertsMax + 100 {
		now = now.Add(time.Second)
		cc.seen(tlslayer.Identity{CN: "x", Fingerprint: fmt.Sprintf("sha256:%04x", i), NotAfter: now.Add(time.Hour)}, warn)
	}
	if n := countSeries(t, cc); n != clientCertsMax {
		t.Fatalf("%d series, want the bound %d", n, clientCertsMax)
	}
	if n := len(cc.certs); n != clientCertsMax {
		t.Fatalf("%d certificates held, want %d", n, clientCertsMax)
	}
	if _, ok := cc.certs["sha256:0000"]; ok {
		t.Fatal("the oldest certificate was kept over newer ones")
	}
	// An invalid UTF-8 CN cannot break a scrape.
	cc.seen(tlslayer.Identity{CN: "bad\xff", Fingerprint: "sha256:ff", NotAfter: now.Add(time.Hour)}, warn)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(cc)
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
}

// countSeries counts the expiry series the collector gives.
func countSeries(t *testing.T, c prometheus.Collector) int {
	t.Helper()
	ch := make(chan prometheus.Metric, 4*clientCertsMax)
	c.Collect(ch)
	close(ch)
	n := 0
	for m := range ch {
		if d := m.Desc().String(); strings.Contains(d, `"dicomedge_client_cert_expiry_seconds"`) {
			n++
		}
	}
	return n
}
