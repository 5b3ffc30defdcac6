package tlslayer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"time"
)

// handshake runs c's server handshake; verify, when crypto/tls did not
// verify the client's chain itself (the Layer's configs verify it in
// VerifyConnection), gives the verified chains of the presented
// certificates, and describe (nil: IdentityFromCertificate) the verified
// leaf.
func handshake(ctx context.Context, c *tls.Conn, verify func([]*x509.Certificate) ([][]*x509.Certificate, error), describe func(*x509.Certificate) Identity) (Identity, error) {
	if dl, ok := ctx.Deadline(); ok {
		if err := c.SetDeadline(dl); err != nil {
			return Identity{}, &HandshakeError{Reason: ReasonOther, Err: err}
		}
	}
	if err := c.HandshakeContext(ctx); err != nil {
		reason := Classify(err)
		if ctx.Err() != nil && reason != ReasonEOF {
			reason = ReasonTimeout
		}
		if he, ok := err.(*HandshakeError); ok {
			// From VerifyConnection (checkChain): already classified
			// and carrying the certificate.
			he.Reason = reason
			return Identity{}, he
		}
		he := &HandshakeError{Reason: reason, Err: err}
		he.Presented, he.Issued, he.chain = presented(err)
		return Identity{}, he
	}
	cs := c.ConnectionState()
	if cs.NegotiatedProtocol == acmeTLSALPN {
		return Identity{}, &HandshakeError{Reason: ReasonACMEChallenge, Err: ErrACMEChallenge}
	}
	chains := cs.VerifiedChains
	if len(chains) == 0 && verify != nil && len(cs.PeerCertificates) > 0 {
		var err error
		if chains, err = verify(cs.PeerCertificates); err != nil {
			he := &HandshakeError{Reason: Classify(err), Err: err}
			he.Presented, he.Issued, he.chain = presented(err)
			return Identity{}, he
		}
	}
	if len(chains) == 0 || len(chains[0]) == 0 {
		// Only reachable with a tls.Config that does not verify clients:
		// refuse rather than hand out an empty identity.
		return Identity{}, &HandshakeError{Reason: ReasonNoClientCertificate, Err: errors.New("connection has no verified client certificate")}
	}
	if describe == nil {
		describe = IdentityFromCertificate
	}
	return describe(chains[0][0]), nil
}

// presented finds the certificate the client sent in a handshake error:
// crypto/tls's own verification failure carries the unverified chain, and
// the checks of VerifyConnection (checkChain) attach the verified leaf.
func presented(err error) (leaf *x509.Certificate, issued bool, chain []*x509.Certificate) {
	if he, ok := errors.AsType[*HandshakeError](err); ok && he.Presented != nil {
		return he.Presented, he.Issued, he.chain
	}
	if cve, ok := errors.AsType[*tls.CertificateVerificationError](err); ok && len(cve.UnverifiedCertificates) > 0 {
		return cve.UnverifiedCertificates[0], false, cve.UnverifiedCertificates
	}
	return nil, false, nil
}

// Classify maps an error from a server-side handshake to one of the Reason*
// values (never empty).
func Classify(err error) string {
	if err == nil {
		return ""
	}
	if he, ok := errors.AsType[*HandshakeError](err); ok && he.Reason != "" {
		return he.Reason
	}
	if cve, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return classifyX509(cve.Err, cve.UnverifiedCertificates)
	}
	if r := classifyX509(err, nil); r != ReasonBadCertificate {
		return r
	}
	// Not TLS at all (plain DICOM's A-ASSOCIATE-RQ starts with 0x01, HTTP
	// with a letter): crypto/tls names the first record's header.
	if rh, ok := errors.AsType[tls.RecordHeaderError](err); ok && strings.Contains(rh.Msg, "first record does not look like a TLS handshake") {
		return ReasonNotTLS
	}
	// The client aborted with an alert of its own, typically because it does
	// not trust the edge's certificate: not a fault of the client's certificate.
	if oe, ok := errors.AsType[*net.OpError](err); ok && oe.Op == "remote error" {
		return ReasonPeerAlert
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return ReasonTimeout
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return ReasonTimeout
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) {
		return ReasonEOF
	}
	// crypto/tls reports these as plain errors; its messages are stable
	// across releases (they are matched by its own tests).
	msg := err.Error()
	switch {
	case strings.Contains(msg, "didn't provide a certificate"):
		return ReasonNoClientCertificate
	case strings.Contains(msg, "unsupported versions"), strings.Contains(msg, "protocol version"),
		strings.Contains(msg, "client offered only"):
		return ReasonProtocolVersion
	case strings.Contains(msg, "no cipher suite supported"), strings.Contains(msg, "no ECDHE curve supported"),
		strings.Contains(msg, "no mutually supported group"):
		return ReasonNoCipherSuite
	case strings.Contains(msg, "bad certificate"), strings.Contains(msg, "client certificate contains an unsupported public key"):
		return ReasonBadCertificate
	}
	return ReasonOther
}

// classifyX509 names an x509 verification failure; certs are the client's
// unverified certificates (leaf first), used to tell expired from not yet
// valid, which x509 reports with the same Reason.
func classifyX509(err error, certs []*x509.Certificate) string {
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return ReasonUnknownCA
	}
	if ci, ok := errors.AsType[x509.CertificateInvalidError](err); ok {
		switch ci.Reason {
		case x509.Expired:
			c := ci.Cert
			if c == nil && len(certs) > 0 {
				c = certs[0]
			}
			if c != nil && time.Now().Before(c.NotBefore) {
				return ReasonNotYetValid
			}
			if strings.Contains(ci.Detail, "before") {
				return ReasonNotYetValid
			}
			return ReasonExpired
		case x509.IncompatibleUsage:
			return ReasonBadKeyUsage
		}
		return ReasonBadCertificate
	}
	if _, ok := errors.AsType[x509.HostnameError](err); ok {
		return ReasonBadCertificate
	}
	if _, ok := errors.AsType[x509.SystemRootsError](err); ok {
		return ReasonUnknownCA
	}
	return ReasonBadCertificate
}
