package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dicomedge/dicomedge/spool"
	"github.com/dicomedge/dicomedge/tlslayer"
)

// Metrics are the edge's Prometheus metrics, on their own registry so that
// tests can run several servers in one process.
type Metrics struct {
	Registry *prometheus.Registry

	Associations       *prometheus.CounterVec // decision, rule
	TLSFailures        *prometheus.CounterVec // reason
	ConnectionsRefused *prometheus.CounterVec // reason
	Active             prometheus.Gauge
	RelayBytes         *prometheus.CounterVec // direction: in (client→edge), out (edge→client)
	DIMSERequests      *prometheus.CounterVec // service, status_class
	BackendHandshakes  *prometheus.CounterVec // backend, resumed
	AuditQueueDepth    prometheus.GaugeFunc
	AuditDropped       prometheus.CounterFunc
	AuditWriteErrors   prometheus.CounterFunc
	CertificateExpiry  prometheus.GaugeFunc
	AssociationLimit   prometheus.GaugeFunc
	ForwardBacklog     prometheus.GaugeFunc
	ForwardDelivered   prometheus.GaugeFunc
	// ForwardTotal counts spooled instances by backend and outcome
	// (delivered, failed, retry).
	ForwardTotal *prometheus.CounterVec

	// clientCerts are the client certificates seen (clientcerts.go), the
	// collector of dicomedge_client_cert_expiry_seconds.
	clientCerts *clientCerts

	// read by the func metrics; set by the server
	auditDepth   atomic.Pointer[func() int]
	auditDropped atomic.Pointer[func() uint64]
	auditErrors  atomic.Pointer[func() uint64]
	certExpiry   atomic.Pointer[func() time.Time]
	assocLimit   atomic.Pointer[func() int]
	fwdBacklog   atomic.Pointer[func() uint64]
	fwdLast      atomic.Pointer[func() time.Time]
	spool        atomic.Pointer[spool.Spool]
}

// SetSpool makes the spool gauges read from sp.
func (m *Metrics) SetSpool(sp *spool.Spool) { m.spool.Store(sp) }

// spoolCollector exports the queues' figures, read afresh at each scrape.
type spoolCollector struct {
	m                        *Metrics
	mu                       sync.Mutex
	instances, bytes, oldest *prometheus.GaugeVec
}

func newSpoolCollector(m *Metrics) *spoolCollector {
	return &spoolCollector{m: m,
		instances: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dicomedge_spool_instances",
			Help: "Instances queued for a backend (acknowledged, not yet delivered).",
		}, []string{"backend"}),
		bytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dicomedge_spool_bytes",
			Help: "Bytes queued for a backend.",
		}, []string{"backend"}),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dicomedge_spool_oldest_seconds",
			Help: "Age of the oldest instance queued for a backend, seconds; 0 when its queue is empty.",
		}, []string{"backend"}),
	}
}

func (c *spoolCollector) Describe(ch chan<- *prometheus.Desc) {
	c.instances.Describe(ch)
	c.bytes.Describe(ch)
	c.oldest.Describe(ch)
}

func (c *spoolCollector) Collect(ch chan<- prometheus.Metric) {
	sp := c.m.spool.Load()
	if sp == nil {
		return
	}
	names, err := sp.Backends()
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.instances.Reset()
	c.bytes.Reset()
	c.oldest.Reset()
	for _, b := range names {
		n, bytes, oldest := sp.Counts(b)
		age := 0.0
		if n > 0 && !oldest.IsZero() {
			age = time.Since(oldest).Seconds()
		}
		c.instances.WithLabelValues(b).Set(float64(n))
		c.bytes.WithLabelValues(b).Set(float64(bytes))
		c.oldest.WithLabelValues(b).Set(age)
	}
	c.instances.Collect(ch)
	c.bytes.Collect(ch)
	c.oldest.Collect(ch)
}

// NewMetrics registers every metric of docs/metrics.md on a fresh registry.
func NewMetrics() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.Associations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dicomedge_associations_total",
		Help: "Association requests by decision (answer, relay, reject) and the rule that decided.",
	}, []string{"decision", "rule"})
	m.TLSFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dicomedge_tls_handshake_failures_total",
		Help: "Failed TLS handshakes by classification.",
	}, []string{"reason"})
	// Every reason a client can cause is exported from the start at 0, so
	// that /metrics names the series before the first failure and an alert
	// on its rate has a baseline (acme-challenge is not counted as a failure).
	for _, r := range []string{tlslayer.ReasonNoClientCertificate, tlslayer.ReasonUnknownCA, tlslayer.ReasonExpired,
		tlslayer.ReasonNotYetValid, tlslayer.ReasonRevoked, tlslayer.ReasonBadKeyUsage, tlslayer.ReasonProtocolVersion,
		tlslayer.ReasonNoCipherSuite, tlslayer.ReasonBadCertificate, tlslayer.ReasonTimeout, tlslayer.ReasonEOF,
		tlslayer.ReasonCRLExpired, tlslayer.ReasonPeerAlert, tlslayer.ReasonNotTLS, tlslayer.ReasonMultipleCN, tlslayer.ReasonOther} {
		m.TLSFailures.WithLabelValues(r)
	}
	m.ConnectionsRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dicomedge_connections_refused_total",
		Help: "Connections closed without an answer before the TLS handshake or association, by reason (audited as connection.refused).",
	}, []string{"reason"})
	for _, r := range RefusedReasons {
		m.ConnectionsRefused.WithLabelValues(r)
	}
	m.Active = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "dicomedge_associations_active",
		Help: "Associations currently established (answered or relayed).",
	})
	m.RelayBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dicomedge_relay_bytes_total",
		Help: "PDU bytes by direction: in = received from clients, out = sent to clients.",
	}, []string{"direction"})
	m.DIMSERequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dicomedge_dimse_requests_total",
		Help: "DIMSE requests from clients by service and the status class of the response.",
	}, []string{"service", "status_class"})
	m.BackendHandshakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dicomedge_backend_tls_handshakes_total",
		Help: "Completed TLS handshakes with backends, by backend and whether a session was resumed.",
	}, []string{"backend", "resumed"})
	m.AuditQueueDepth = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dicomedge_audit_queue_depth",
		Help: "Audit events waiting to be written.",
	}, func() float64 {
		if f := m.auditDepth.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	m.AuditDropped = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "dicomedge_audit_dropped_total",
		Help: "Audit events dropped because the queue was full (audit.on_full = \"drop\").",
	}, func() float64 {
		if f := m.auditDropped.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	m.AuditWriteErrors = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "dicomedge_audit_write_errors_total",
		Help: "Failed attempts to write or sync the audit trail; the records are kept and retried, and /readyz fails meanwhile.",
	}, func() float64 {
		if f := m.auditErrors.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	m.CertificateExpiry = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dicomedge_certificate_expiry_timestamp_seconds",
		Help: "NotAfter of the edge's current server certificate, Unix seconds.",
	}, func() float64 {
		if f := m.certExpiry.Load(); f != nil {
			if t := (*f)(); !t.IsZero() {
				return float64(t.Unix())
			}
		}
		return 0
	})
	m.AssociationLimit = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dicomedge_associations_limit",
		Help: "edge.max_associations: concurrent associations allowed, all clients together.",
	}, func() float64 {
		if f := m.assocLimit.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	m.ForwardBacklog = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dicomedge_audit_forward_backlog_records",
		Help: "Audit records written but not yet delivered to the audit.syslog collector (they wait in the audit file).",
	}, func() float64 {
		if f := m.fwdBacklog.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	m.ForwardDelivered = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dicomedge_audit_forward_last_delivered_timestamp_seconds",
		Help: "When the audit.syslog collector last confirmed records, Unix seconds; 0 before the first since the start.",
	}, func() float64 {
		if f := m.fwdLast.Load(); f != nil {
			if t := (*f)(); !t.IsZero() {
				return float64(t.UnixNano()) / 1e9
			}
		}
		return 0
	})
	m.ForwardTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dicomedge_forward_total",
		Help: "Spooled instances by backend and outcome: delivered, failed (moved to failed/), retry (a transient failure, retried after back-off).",
	}, []string{"backend", "result"})
	m.clientCerts = newClientCerts()
	m.Registry.MustRegister(m.clientCerts, m.Associations, m.TLSFailures, m.ConnectionsRefused, m.Active, m.RelayBytes, m.DIMSERequests, m.BackendHandshakes,
		m.AuditQueueDepth, m.AuditDropped, m.AuditWriteErrors, m.CertificateExpiry, m.AssociationLimit,
		m.ForwardBacklog, m.ForwardDelivered, m.ForwardTotal, newSpoolCollector(m),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// SetAuditSource makes the audit gauges read from the given functions.
func (m *Metrics) SetAuditSource(depth func() int, dropped func() uint64) {
	m.auditDepth.Store(&depth)
	m.auditDropped.Store(&dropped)
}

// SetAuditWriteErrors makes dicomedge_audit_write_errors_total read from f.
func (m *Metrics) SetAuditWriteErrors(f func() uint64) { m.auditErrors.Store(&f) }

// SetCertificateSource makes the expiry gauge read from f.
func (m *Metrics) SetCertificateSource(f func() time.Time) { m.certExpiry.Store(&f) }

// SetAssociationLimit makes dicomedge_associations_limit read from f.
func (m *Metrics) SetAssociationLimit(f func() int) { m.assocLimit.Store(&f) }

// SetForwarder makes the audit forwarding metrics read from the syslog
// forwarder's backlog and last delivery.
func (m *Metrics) SetForwarder(backlog func() uint64, last func() time.Time) {
	m.fwdBacklog.Store(&backlog)
	m.fwdLast.Store(&last)
}

// Readiness says whether /readyz answers 200.
type Readiness func() bool

// AdminHandler serves /metrics, /healthz (always 200: the process is alive)
// and /readyz (200 only when ready() says the listener is up, certificates
// and policy are loaded, and the audit trail can be written).
func AdminHandler(m *Metrics, ready Readiness) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if ready == nil || !ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return mux
}

// adminServer runs the admin HTTP listener.
type adminServer struct {
	srv *http.Server
	ln  net.Listener
}

// Bounds on an admin connection: a request's headers, the whole request (a
// console form is at most 16 KiB), and a kept-alive connection waiting for
// its next request. Without the last two, a client that stops sending held
// its connection and a goroutine for ever. Writes are not bounded: an export
// of a long audit log may take minutes.
var (
	adminReadHeaderTimeout = 10 * time.Second
	adminReadTimeout       = time.Minute
	adminIdleTimeout       = 2 * time.Minute
)

func startAdmin(addr string, h http.Handler, tlsCfg *tls.Config) (*adminServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if tlsCfg != nil {
		ln = newSniffListener(ln, tlsCfg)
	}
	a := &adminServer{ln: ln, srv: &http.Server{Handler: h, ReadHeaderTimeout: adminReadHeaderTimeout,
		ReadTimeout: adminReadTimeout, IdleTimeout: adminIdleTimeout}}
	go func() {
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err // the listener was closed under us; Shutdown reports the rest
		}
	}()
	return a, nil
}

func (a *adminServer) Addr() net.Addr { return a.ln.Addr() }

func (a *adminServer) shutdown(ctx context.Context) error { return a.srv.Shutdown(ctx) }
