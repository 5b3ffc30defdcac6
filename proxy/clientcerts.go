package proxy

import (
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicomedge/dicomedge/tlslayer"
)

// The client certificates the edge has seen, for the expiry metric and the
// tls.expiring record. Only certificates issued by a configured client CA
// are kept (verified ones, and those refused for what they say: expired,
// revoked, two CNs, wrong key usage), so an attacker cannot add a series
// by presenting a certificate of their own making; and the set is bounded
// anyway, dropping the client seen longest ago.
const (
	clientCertsSeenFor = 30 * 24 * time.Hour // a client not seen for this long leaves the metric
	clientCertsMax     = 2048                // series of dicomedge_client_cert_expiry_seconds at most
	expiringEvery      = 24 * time.Hour      // one tls.expiring record per certificate per this
)

type seenCert struct {
	cn       string
	notAfter time.Time
	lastSeen time.Time
	warned   time.Time // when the last tls.expiring record was written
}

// clientCerts is the set of client certificates seen; safe for concurrent
// use. It is also the Prometheus collector of their expiry.
type clientCerts struct {
	mu    sync.Mutex
	certs map[string]*seenCert // by fingerprint
	now   func() time.Time     // time.Now; tests move the clock
	// Filled from certs at each scrape (Collect), under mu.
	expiry, lastSeen *prometheus.GaugeVec
}

func newClientCerts() *clientCerts {
	return &clientCerts{
		certs: map[string]*seenCert{},
		now:   time.Now,
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dicomedge_client_cert_expiry_seconds",
			Help: "Seconds until the client certificate expires (negative: expired), for each certificate issued by a client CA " +
				"that was presented in the last 30 days (at most 2048, the least recently seen dropped first).",
		}, []string{"fingerprint", "cn"}),
		lastSeen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dicomedge_client_cert_last_seen_timestamp_seconds",
			Help: "When the client certificate was last presented (Unix seconds), for the same certificates as dicomedge_client_cert_expiry_seconds.",
		}, []string{"fingerprint", "cn"}),
	}
}

// seen records that id (a certificate issued by a client CA) was presented
// now. It reports whether a tls.expiring record is due: the certificate
// has not expired, expires within warn, and none was written for it in
// the last day.
func (cc *clientCerts) seen(id tlslayer.Identity, warn time.Duration) (expiring bool) {
	if id.Fingerprint == "" || id.NotAfter.IsZero() {
		return false
	}
	now := cc.now()
	cc.mu.Lock()
	defer cc.mu.Unlock()
	c := cc.certs[id.Fingerprint]
	if c == nil {
		if len(cc.certs) >= clientCertsMax {
			cc.evictLocked(now)
		}
		// A label value must be UTF-8; the CN of a CA-issued certificate
		// almost always is, and is shown escaped where it is not.
		c = &seenCert{cn: strings.ToValidUTF8(id.CN, "\ufffd"), notAfter: id.NotAfter}
		cc.certs[id.Fingerprint] = c
	}
	c.lastSeen = now
	left := c.notAfter.Sub(now)
	if warn <= 0 || left <= 0 || left > warn || (!c.warned.IsZero() && now.Sub(c.warned) < expiringEvery) {
		return false
	}
	c.warned = now
	return true
}

// evictLocked drops the certificates not seen for clientCertsSeenFor and,
// if none was that old, the one seen longest ago.
func (cc *clientCerts) evictLocked(now time.Time) {
	var oldest string
	var oldestSeen time.Time
	for fp, c := range cc.certs {
		if now.Sub(c.lastSeen) > clientCertsSeenFor {
			delete(cc.certs, fp)
			continue
		}
		if oldest == "" || c.lastSeen.Before(oldestSeen) {
			oldest, oldestSeen = fp, c.lastSeen
		}
	}
	if len(cc.certs) >= clientCertsMax {
		delete(cc.certs, oldest)
	}
}

// Describe implements prometheus.Collector.
func (cc *clientCerts) Describe(ch chan<- *prometheus.Desc) {
	cc.expiry.Describe(ch)
	cc.lastSeen.Describe(ch)
}

// Collect implements prometheus.Collector: seconds left are computed at
// scrape time, so the gauge falls as the certificate ages.
func (cc *clientCerts) Collect(ch chan<- prometheus.Metric) {
	now := cc.now()
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.expiry.Reset()
	cc.lastSeen.Reset()
	for fp, c := range cc.certs {
		if now.Sub(c.lastSeen) > clientCertsSeenFor {
			delete(cc.certs, fp)
			continue
		}
		cc.expiry.WithLabelValues(fp, c.cn).Set(c.notAfter.Sub(now).Seconds())
		cc.lastSeen.WithLabelValues(fp, c.cn).Set(float64(c.lastSeen.UnixNano()) / 1e9)
	}
	cc.expiry.Collect(ch)
	cc.lastSeen.Collect(ch)
}
