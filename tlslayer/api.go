package tlslayer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Profile names (DICOM PS3.15 Annex B; DCMTK 3.6.8 --tls-profile uses the same set).
const (
	ProfileBCP195RFC8996         = "bcp195-rfc8996" // default
	ProfileBCP195RFC8996Modified = "bcp195-rfc8996-modified"
	ProfileBCP195ND              = "bcp195-nd"
	ProfileBCP195                = "bcp195"
	ProfileBCP195Extended        = "bcp195-extended"
)

// Config is everything the layer needs; tlslayer takes its own Config so that
// it does not depend on the policy package.
type Config struct {
	Profile       string   // one of the Profile* names; empty means ProfileBCP195RFC8996
	ClientCAFiles []string // PEM bundles; every client must chain to one of these (required)
	CRLFiles      []string // PEM or DER CRLs, each signed by a CA in ClientCAFiles
	// AllowExpiredCRL keeps using a CRL whose NextUpdate has passed; by
	// default such a CRL fails closed: handshakes of certificates from that
	// issuer fail with reason "crl-expired" until a fresh CRL is loaded.
	AllowExpiredCRL bool
	CertFile        string // the edge's certificate chain (PEM) ...
	KeyFile         string // ... and its key; or ACME instead of both
	ACME            *ACMEConfig
	// PollInterval is how often CertFile/KeyFile/CA/CRL mtimes are checked;
	// 0 means 2s, negative disables polling.
	PollInterval time.Duration
	Logger       hclog.Logger
	// OnCertRenewed, if set, is called (possibly from a background goroutine; keep it quick) when the
	// edge certificate served changes: files rotated on disk, Reload with a
	// new pair, or an ACME certificate obtained or renewed. detail says which.
	OnCertRenewed func(detail string)
	// VerifyEachHandshake has crypto/tls verify every client chain itself,
	// without the cache of chains already verified (chaincache.go): the
	// benchmark's before. Its alerts are then crypto/tls's own
	// (unknown_ca, certificate_expired) rather than bad_certificate.
	VerifyEachHandshake bool
}

// ACMEConfig obtains and renews the edge certificate from an ACME CA through
// certmagic. TLS-ALPN-01 is answered on the DICOM listener itself (its
// ServerConfig advertises acme-tls/1); HTTP-01 is served on HTTPPort when set.
type ACMEConfig struct {
	Domains     []string
	Email       string
	Directory   string
	CARootFiles []string // roots that sign the ACME server's HTTPS certificate (private ACME CAs)
	Storage     string   // certmagic FileStorage path
	HTTPPort    int      // HTTP-01 challenge port; 0 disables HTTP-01
	// DisableTLSALPN turns TLS-ALPN-01 off (HTTP-01 only), for sites where
	// the ACME CA cannot reach the DICOM port.
	DisableTLSALPN bool
	// TLSALPNPort is the local port where TLS-ALPN-01 is answered: set it to
	// the DICOM listener's port. RFC 8737 has the CA connect to port 443, so
	// 443 must reach that listener (forwarding, or listen on 443); otherwise
	// use HTTP-01. 0 means 443. While the DICOM listener is not up yet (the
	// first order in New) certmagic briefly serves the challenge on this port
	// itself; afterwards the listener's ServerConfig does.
	TLSALPNPort int
	// ListenHost is the address certmagic's own challenge listeners bind
	// (HTTP-01 on HTTPPort; TLS-ALPN-01 on TLSALPNPort while the DICOM
	// listener is not up yet, e.g. the first order at start). "" = all.
	ListenHost string
	// RenewalWindowRatio overrides certmagic's renewal window (fraction of the
	// lifetime left when renewal starts); 0 keeps certmagic's default (1/3).
	RenewalWindowRatio float64
	// RenewCheckInterval is how often certmagic looks for certificates to
	// renew; 0 keeps its default (10 minutes).
	RenewCheckInterval time.Duration
	// DNS, when set, validates by DNS-01 only (RFC 8555 section 8.4): the
	// challenge's TXT record is written through the DNS provider, so neither
	// port 443 nor HTTPPort need reach the edge, and "*." domains can be had.
	DNS *DNSConfig
}

// DNSConfig is DNS-01 by RFC 2136 dynamic update signed with a TSIG key
// (RFC 8945), which BIND, PowerDNS, Knot and Windows DNS accept.
type DNSConfig struct {
	Server    string // host:port of the primary server that takes updates for Zone
	KeyName   string // TSIG key name ("dicomedge-acme.")
	KeyAlg    string // "hmac-sha256", "hmac-sha512", ...
	KeySecret string // base64; never logged
	Zone      string // the zone the records are written in ("example.org.")
	// Resolvers answer certmagic's zone lookup and its check that the record
	// is served before the CA is told to look; empty means Server itself,
	// the primary that took the update.
	Resolvers []string
	// PropagationTimeout bounds that check (0: certmagic's 2 minutes);
	// PropagationDelay waits before it starts (secondaries catching up).
	PropagationTimeout time.Duration
	PropagationDelay   time.Duration
}

// String and GoString leave the secret out, wherever a DNSConfig is printed.
func (d DNSConfig) String() string {
	return fmt.Sprintf("rfc2136 server=%s zone=%s key=%s alg=%s", d.Server, d.Zone, d.KeyName, d.KeyAlg)
}

func (d DNSConfig) GoString() string { return "tlslayer.DNSConfig{" + d.String() + "}" }

// Handshake failure reasons (Classify's results; label values of
// dicomedge_tls_handshake_failures_total{reason}).
const (
	ReasonNoClientCertificate = "no-client-certificate"
	ReasonUnknownCA           = "unknown-ca"
	ReasonExpired             = "expired"
	ReasonNotYetValid         = "not-yet-valid"
	ReasonRevoked             = "revoked"
	ReasonBadKeyUsage         = "bad-key-usage"
	ReasonProtocolVersion     = "protocol-version"
	ReasonNoCipherSuite       = "no-cipher-suite"
	ReasonBadCertificate      = "bad-certificate"
	ReasonTimeout             = "timeout"
	ReasonEOF                 = "eof"
	ReasonCRLExpired          = "crl-expired"    // the issuer's CRL is past NextUpdate (fail closed)
	ReasonACMEChallenge       = "acme-challenge" // a TLS-ALPN-01 validation connection, not a client
	ReasonPeerAlert           = "peer-alert"     // the client aborted with an alert, e.g. it does not trust the edge
	ReasonNotTLS              = "not-tls"        // the first bytes are no TLS record: e.g. plain DICOM on the TLS port
	ReasonMultipleCN          = "multiple-cn"    // the client certificate's subject has more than one CN
	ReasonOther               = "other"
)

// ErrACMEChallenge is returned (wrapped in a *HandshakeError) by Handshake for
// an ACME CA's TLS-ALPN-01 validation connection: the handshake served the
// challenge certificate and the connection must simply be closed; it is not
// a client and not a failure worth auditing.
var ErrACMEChallenge = errors.New("tls-alpn-01 challenge connection")

// HandshakeError is a failed handshake with its classification.
type HandshakeError struct {
	Reason string
	Err    error
	// Presented is the leaf certificate the client sent, when it sent one
	// (nil otherwise). It did not verify: every field of it is the
	// client's claim, to be shown escaped and never trusted.
	Presented *x509.Certificate
	// Issued reports that Presented was issued by one of the client CAs:
	// its chain verifies but for the failure named by Reason (it expired,
	// was revoked, has two CNs or the wrong key usage). A certificate from
	// an unknown CA is not Issued: anyone can make one.
	Issued bool
	chain  []*x509.Certificate // what the client sent, leaf first (intermediates for the Issued check)
}

func (e *HandshakeError) Error() string {
	if e.Err == nil {
		return "tls handshake failed: " + e.Reason
	}
	return "tls handshake failed (" + e.Reason + "): " + e.Err.Error()
}

func (e *HandshakeError) Unwrap() error { return e.Err }

// Layer is the listener's TLS state; it is safe for concurrent use.
type Layer struct {
	log     hclog.Logger
	st      atomic.Pointer[state]
	base    *tls.Config
	acme    *acmeManager // nil without ACME
	tickets *ticketKeys  // session ticket keys of base
	mu      sync.Mutex   // serialises loads (Reload, the file watcher)
	stop    chan struct{}
	done    chan struct{}
	closeMu sync.Once
}

// New loads everything cfg names (and, with ACME, obtains a certificate or
// loads it from storage) and starts the file watcher.
func New(ctx context.Context, cfg Config) (*Layer, error) { return newLayer(ctx, cfg) }

// Handshake is like the package function Handshake, and on a failure
// also judges the certificate the client presented against the current
// client CAs (HandshakeError.Issued).
func (l *Layer) Handshake(ctx context.Context, c *tls.Conn) (Identity, error) {
	id, err := handshake(ctx, c, func(certs []*x509.Certificate) ([][]*x509.Certificate, error) {
		// The chain VerifyConnection verified moments ago, from the cache
		// (verified again only if a reload came in between).
		return l.st.Load().verifyClient(certs, time.Now())
	}, func(leaf *x509.Certificate) Identity { return l.st.Load().identity(leaf) })
	if he, ok := errors.AsType[*HandshakeError](err); ok && he.Presented != nil && !he.Issued {
		he.Issued = l.st.Load().issuedDespite(he)
	}
	return id, err
}

// Handshake runs the server handshake under ctx (its deadline is the ARTIM
// bound: it is set on the connection and left in place, so that the same
// bound covers the A-ASSOCIATE-RQ that follows; clear it when the RQ is read)
// and returns the verified client's Identity. Errors are *HandshakeError.
// It is for configs whose client chains crypto/tls verifies itself
// (RequireAndVerifyClientCert); a Layer's configs verify them in
// VerifyConnection: use Layer.Handshake for those.
func Handshake(ctx context.Context, c *tls.Conn) (Identity, error) {
	return handshake(ctx, c, nil, nil)
}

// ServerConfig returns the tls.Config for tls.NewListener / tls.Server. Its
// callbacks read the current state, so Reload needs no new listener.
func (l *Layer) ServerConfig() *tls.Config { return l.serverConfig() }

// Reload re-reads certificates, CAs and CRLs and swaps them in atomically; on
// error the old state stays in force. With ACME, the profile, CAs and CRLs
// reload; the acme block itself (domains, directory...) needs a restart.
func (l *Layer) Reload(cfg Config) error { return l.reload(cfg) }

// CertificateNotAfter is the NotAfter of the edge certificate now served.
func (l *Layer) CertificateNotAfter() time.Time { return l.notAfter() }

// Close stops the file watcher and ACME maintenance.
func (l *Layer) Close() error { return l.close() }
