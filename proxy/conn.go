package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/tlslayer"
)

// processID distinguishes connection ids of this process from those of an
// earlier run in the same audit file.
var processID = func() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()

// conn is one client connection: TLS handshake, A-ASSOCIATE-RQ, decision,
// then the answer or relay path.
type conn struct {
	s   *Server
	raw net.Conn
	// tc is the client's DICOM stream: the tls.Conn on a TLS listener,
	// the TCP connection itself (through pre) on a plain one.
	tc       net.Conn
	listener string // the name of the listener it arrived on
	plain    bool   // that listener speaks DICOM without TLS
	id       string
	log      *connLog
	start    time.Time
	remote   string
	source   netip.Addr

	pre      *probeConn      // beneath TLS: the relay hooks its reads
	in       *countingReader // client bytes read (PDUs, after TLS)
	identity tlslayer.Identity
	client   *audit.Client
	// What the rule decided (answer or relay, and the backend) once the
	// policy was evaluated: a refusal after that (limits, the backend, the
	// negotiation) records it, so the log tells a policy reject from a
	// later one (`dicomedge policy replay` relies on it).
	ruleAction, ruleBackend string
	rule                    string // the rule that accepted it
	// out counts the bytes written to the client once the association is
	// established (OpenAssociations); set by establish.
	out *pduWriter
	rq  *association.AssociateRQ

	// state moves pre (0) → established (1) or closing (2) exactly once
	state atomic.Int32
	// abortFn aborts the established association (both sides); set by the
	// answer or relay path before it becomes established.
	abortFn atomic.Pointer[func()]

	closeOnce sync.Once
	preOnce   sync.Once // gives back the pre-association slots once
	// srcKey is the source whose pre-association slot this conn holds
	// (when srcHeld): set by Serve when the source is known at accept,
	// else by the conn's goroutine after the PROXY header.
	srcKey  netip.Prefix
	srcHeld bool
	// clientKey is the client whose association slot this conn holds
	// (when held), set by open before the association starts.
	clientKey string
	// rejectDetail, when set, is the detail of the association.rejected
	// record that reject writes.
	rejectDetail string
}

// releasePre gives back the pre-association slots taken by Serve (global)
// and serve (per source).
func (c *conn) releasePre() {
	c.preOnce.Do(func() {
		c.s.preActive.Add(-1)
		if c.srcHeld {
			c.s.releasePreSource(c.srcKey)
		}
	})
}

const (
	statePre = iota
	stateEstablished
	stateClosing
)

func (s *Server) newConn(raw net.Conn, listener string) *conn {
	n := s.connID.Add(1)
	id := fmt.Sprintf("%s-%d", processID, n)
	return &conn{s: s, raw: raw, id: id, listener: listener, start: time.Now(), log: newConnLog(s.log, s.bench.eagerLoggers.Load(), "conn", id, "listener", listener)}
}

// drain is called by Shutdown: a connection that has no association yet is
// closed now; an established one may finish.
func (c *conn) drain() {
	if c.state.CompareAndSwap(statePre, stateClosing) {
		c.raw.Close()
	}
}

// abort ends an established association with A-ABORT to both sides.
func (c *conn) abort() {
	if f := c.abortFn.Load(); f != nil {
		(*f)()
	}
	c.raw.Close()
}

func (c *conn) close() {
	c.closeOnce.Do(func() { c.raw.Close() })
}

// establish marks the association established unless Shutdown got here
// first. out is the writer to the client, whose byte count the console's
// list of open associations reads (OpenAssociations): it is set before the
// state changes, so a reader that sees the state sees it too.
func (c *conn) establish(out *pduWriter, abort func()) bool {
	c.out = out
	c.abortFn.Store(&abort)
	return c.state.CompareAndSwap(statePre, stateEstablished)
}

func (c *conn) serve(ctx context.Context) {
	defer c.close()
	defer c.releasePre()
	run, held := c.open(ctx)
	if held {
		defer func() {
			c.s.releaseClient(c.clientKey)
			c.s.release()
		}()
	}
	if run != nil {
		// The association's life runs after open's large frame (handshake,
		// decision) has returned: a goroutine waiting for its peer then
		// uses under 4 KiB of stack, which the GC can shrink to 8 KiB.
		run()
	}
}

// open takes the connection up to the decision: the TLS handshake, the
// A-ASSOCIATE-RQ, the policy and the association slot (held: the caller
// releases it). run, when not nil, is the rest of the association.
func (c *conn) open(ctx context.Context) (run func(), held bool) {
	cfg := c.s.current()
	lc := cfg.Listener(c.listener)
	if lc == nil {
		// A reload removed the listener after this connection was accepted.
		c.log.Info("listener no longer configured; closed")
		return nil, false
	}
	c.plain = lc.Plain()
	artim := cfg.Edge.ARTIM()
	// ARTIM covers the PROXY header, the TLS handshake and the A-ASSOCIATE-RQ;
	// the first two have shorter bounds of their own (docs/limits.md).
	deadline := time.Now().Add(artim)
	adm := cfg.Edge.Admission()
	_ = c.raw.SetDeadline(deadline)
	awaiting := awaitsProxyHeader(c.raw)
	if awaiting && !c.s.acquireAwaitingHeader(adm) {
		c.s.refuse(c.raw, refusal{Conn: c.id, Remote: upstreamAddr(c.raw), Listener: c.listener, Reason: RefusedTooManyConnections,
			Detail: fmt.Sprintf("%d connections awaiting a PROXY header, the limit", adm.AwaitingProxyHeader)})
		return nil, false
	}
	ap, err := clientAddr(c.raw, adm.ProxyHeader, deadline)
	if awaiting {
		c.s.releaseAwaitingHeader()
	}
	if ap.IsValid() {
		c.remote, c.source = ap.String(), ap.Addr()
	}
	c.log.with("remote", c.remote)
	if err != nil {
		if errors.Is(err, errNoBytes) {
			c.log.Debug("connection closed before its PROXY header (TCP check)")
			c.close()
			return nil, false
		}
		c.s.refuse(c.raw, refusal{Conn: c.id, Remote: ap, Listener: c.listener, Reason: RefusedProxyHeader,
			Detail: "PROXY header from a trusted load balancer: " + err.Error()})
		return nil, false
	}
	if !lc.AllowsSource(c.source) {
		// A plain listener serves its allow_cidr only (the PROXY header's
		// source where trusted): anyone else is closed at once, without a
		// byte of DICOM in answer.
		c.s.refuse(c.raw, refusal{Conn: c.id, Remote: ap, Listener: c.listener, Reason: RefusedSourceNotAllowed,
			Detail: fmt.Sprintf("not in listener %q's allow_cidr", c.listener)})
		return nil, false
	}
	// Behind a trusted balancer the source is known only now (after the
	// PROXY header): one source may hold only part of the pre-association
	// slots. (Serve took the share of a source known at accept.)
	if !c.srcHeld {
		c.srcKey = sourceKey(c.source)
		if !c.s.acquirePreSource(c.srcKey, adm) {
			c.s.refuse(c.raw, refusal{Conn: c.id, Remote: ap, Listener: c.listener, Reason: RefusedTooManyConnections,
				Detail: fmt.Sprintf("%d connections before association from this source, its share", adm.PerSource)})
			return nil, false
		}
		c.srcHeld = true
	}

	pre := &probeConn{Conn: c.raw}
	c.pre = pre
	var id tlslayer.Identity
	if c.plain {
		// No certificate: the client is its source address (policy
		// source_cidr, per-client limits), and client_* never match.
		c.tc = pre
	} else {
		var ok bool
		if id, ok = c.handshake(ctx, pre, deadline, ap, adm.Handshake); !ok {
			return nil, false
		}
	}
	c.in = &countingReader{r: c.tc}
	r := association.NewReader(c.in, cfg.Edge.MaxPDULength)
	typ, raw, err := r.Next()
	if err != nil {
		c.preAssociationError(err)
		return nil, false
	}
	if typ != association.TypeAssociateRQ {
		// PS3.8 state Sta2: any PDU but A-ASSOCIATE-RQ is unexpected (AA-1),
		// except A-ABORT, which just closes (AA-2).
		if typ != association.TypeAbort {
			c.sendAbort(c.tc, association.AbortSourceServiceProvider, association.AbortUnexpectedPDU)
			c.log.Info("unexpected PDU before A-ASSOCIATE-RQ; aborted", "type", typ)
			c.waitPeerClose(c.tc)
		}
		return nil, false
	}
	p, err := association.Decode(typ, raw[association.HeaderLen:])
	if err != nil {
		c.preAssociationError(err)
		return nil, false
	}
	rq := p.(*association.AssociateRQ)
	c.rq = rq
	c.log.with("calling_ae", rq.CallingAE, "called_ae", rq.CalledAE)
	c.log.Trace("A-ASSOCIATE-RQ", "contexts", len(rq.PresentationContexts), "max_length", rq.UserInfo.MaxLength,
		"implementation", rq.UserInfo.ImplementationClassUID)

	in := policy.Input{
		Listener: c.listener,
		CN:       id.CN, DNS: id.DNS, URI: id.URI, Email: id.Email, Fingerprint: id.Fingerprint,
		SourceIP: c.source, CallingAE: association.TrimAE(rq.CallingAE), CalledAE: association.TrimAE(rq.CalledAE),
	}
	d := cfg.Policy.Evaluate(&in)
	switch d.Action {
	case policy.ActionReject:
		c.reject(d.Rule, association.RejectResult(d.Reject.Result), association.RejectSource(d.Reject.Source),
			association.RejectReason(d.Reject.Reason), d.Reject.ReasonName)
		return nil, false
	case policy.ActionAnswer, policy.ActionRelay:
		if d.StoreAndForward && c.s.Spool == nil {
			// A policy that needs the spool is only served with one open;
			// a reload that added the first such rule needs a restart.
			c.rejectDetail = "store-and-forward rule, but the edge has no spool open (restart the edge to open it)"
			c.reject(d.Rule, association.RejectTransient, association.RejectSourceServiceUser, association.RejectUserNoReason, "")
			return nil, false
		}
		c.ruleAction = d.Action.String()
		c.rule = d.Rule
		if d.Backend != nil {
			c.ruleBackend = d.Backend.Name
		}
	default:
		c.reject(d.Rule, association.RejectPermanent, association.RejectSourceServiceUser, association.RejectUserNoReason, "")
		return nil, false
	}
	// PS3.8 7.1.1.9: a local limit is a transient rejection by the
	// service provider (presentation related function), 2/3/2.
	key := clientKey(id.Fingerprint, c.source)
	if perClient := cfg.Edge.PerClient(); !c.s.acquireClient(key, perClient) {
		c.rejectDetail = fmt.Sprintf("max_associations_per_client: this client (%s) holds %d associations", key, perClient)
		c.reject(d.Rule, association.RejectTransient, association.RejectSourceServiceProviderPresentation, association.RejectPresentationLocalLimitExceeded, "")
		return nil, false
	}
	if !c.s.tryAcquire(cfg.Edge.MaxAssociations) {
		c.s.releaseClient(key)
		c.rejectDetail = fmt.Sprintf("max_associations: %d associations are held", cfg.Edge.MaxAssociations)
		c.reject(d.Rule, association.RejectTransient, association.RejectSourceServiceProviderPresentation, association.RejectPresentationLocalLimitExceeded, "")
		return nil, false
	}
	c.clientKey = key
	c.releasePre() // now counted against max_associations instead
	_ = c.raw.SetDeadline(time.Time{})
	if d.Action == policy.ActionAnswer || d.StoreAndForward {
		a := &answerer{c: c, cfg: cfg, r: r, rule: d.Rule}
		if d.StoreAndForward {
			a.in = &ingest{a: a, sp: c.s.Spool, d: d}
		}
		return a.run, true
	}
	rl := &relay{c: c, cfg: cfg, d: d, cr: r}
	if !rl.run(ctx, deadline) {
		return nil, true
	}
	return rl.pump, true
}

// handshake runs the TLS handshake of a TLS listener and takes the
// client's identity from its verified certificate; a failure is metered and
// audited (rate limited per source) and ends the connection.
func (c *conn) handshake(ctx context.Context, pre *probeConn, deadline time.Time, ap netip.AddrPort, bound time.Duration) (tlslayer.Identity, bool) {
	tc := tls.Server(pre, c.s.TLS.ServerConfig())
	c.tc = tc
	// The handshake has a shorter bound of its own (docs/limits.md).
	// The socket's deadline alone bounds it: a context with a deadline would
	// cost crypto/tls a watcher goroutine, a timer and a hand-off per
	// handshake.
	_ = c.raw.SetDeadline(minTime(time.Now().Add(bound), deadline))
	id, err := c.s.TLS.Handshake(ctx, tc)
	_ = c.raw.SetDeadline(deadline)
	if err != nil {
		reason := tlslayer.Classify(err)
		if proxyHeaderRefused(err) {
			c.s.refuse(c.raw, refusal{Conn: c.id, Remote: ap, Listener: c.listener, Reason: RefusedProxyHeader,
				Detail: untrustedHeaderDetail(err)})
			return id, false
		}
		switch handshakeEnd(err, pre.read.Load()) {
		case endProbe:
			// Closed without sending a byte: a load balancer's or monitor's
			// TCP check, not a failed handshake; not worth an audit record.
			c.log.Debug("connection closed before any byte (TCP check)")
			return id, false
		case endACMEValidation:
			// An ACME CA's TLS-ALPN-01 validation (RFC 8737) got its
			// challenge certificate: not a client, not a failure.
			c.log.Debug("ACME TLS-ALPN-01 validation connection served")
			return id, false
		}
		c.s.Metrics.TLSFailures.WithLabelValues(reason).Inc() // every one is metered
		if he, ok := errors.AsType[*tlslayer.HandshakeError](err); ok && he.Issued {
			// One of the CA's own clients refused for what its certificate
			// says (expired, revoked, ...): the expiry metric names it, so
			// an alert tells it from a flood of strangers.
			c.s.Metrics.clientCerts.seen(tlslayer.PresentedIdentity(he.Presented), 0)
		}
		if !c.s.tlsFail.allow(c.source, reason) {
			c.log.Debug("tls handshake failed; record suppressed (rate limit)", "reason", reason, "error", err)
			return id, false
		}
		e := audit.Event{Event: audit.EventTLSFailed, Conn: c.id, Remote: c.remote, Listener: c.listener, Reason: reason}
		if he, ok := errors.AsType[*tlslayer.HandshakeError](err); ok && he.Presented != nil {
			// Whose certificate it was: the operator's first question.
			// Unverified, so bounded and shown escaped like any claim.
			e.Client = auditClient(tlslayer.PresentedIdentity(he.Presented))
		}
		c.log.Info("tls handshake failed", "reason", reason, "error", err)
		c.s.auditEvent(e)
		return id, false
	}
	c.identity = id
	c.client = auditClient(id)
	c.log.with("client_cn", id.CN)
	c.clientSeen(id)
	return id, true
}

// auditClient is the audit record's view of a certificate.
func auditClient(id tlslayer.Identity) *audit.Client {
	return &audit.Client{Subject: id.Subject, CN: id.CN, DNS: id.DNS, URI: id.URI, Email: id.Email,
		Fingerprint: id.Fingerprint, Issuer: id.Issuer, Serial: id.Serial, NotBefore: id.NotBefore, NotAfter: id.NotAfter}
}

// clientSeen counts a certificate issued by a client CA as seen (the
// expiry metric) and writes tls.expiring when it is due.
func (c *conn) clientSeen(id tlslayer.Identity) {
	warn := c.s.current().TLS.WarnExpiry
	if !c.s.Metrics.clientCerts.seen(id, warn) {
		return
	}
	left := time.Until(id.NotAfter)
	days := int(left / (24 * time.Hour))
	c.log.Warn("client certificate expires soon", "fingerprint", id.Fingerprint, "not_after", id.NotAfter, "days_left", days)
	c.s.auditEvent(audit.Event{Event: audit.EventTLSExpiring, Conn: c.id, Remote: c.remote, Listener: c.listener,
		Client: auditClient(id),
		Detail: fmt.Sprintf("%d days left: the client certificate expires at %s (tls.warn_expiry %s)", days,
			id.NotAfter.UTC().Format(time.RFC3339), policy.FormatDays(warn))})
}

// How a handshake that returned an error ended.
const (
	endFailed         = iota // a failed handshake: metered and audited as tls.failed
	endProbe                 // closed before any byte: a TCP health check
	endACMEValidation        // an ACME CA's TLS-ALPN-01 validation connection
)

// handshakeEnd classifies a handshake error; sentAny: the peer sent a byte.
func handshakeEnd(err error, sentAny bool) int {
	switch {
	case errors.Is(err, tlslayer.ErrACMEChallenge):
		return endACMEValidation
	case !sentAny && tlslayer.Classify(err) == tlslayer.ReasonEOF:
		return endProbe
	}
	return endFailed
}

// preAssociationError handles a failure to read the A-ASSOCIATE-RQ: a
// protocol error gets the A-ABORT PS3.8 prescribes; a timeout (ARTIM) or a
// closed connection just closes.
func (c *conn) preAssociationError(err error) {
	var pe *association.ProtocolError
	switch {
	case c.plain && proxyHeaderRefused(err):
		// On a plain listener the PDU reader meets the PROXY header an
		// address outside proxy_protocol sent.
		c.s.refuse(c.raw, refusal{Conn: c.id, Remote: upstreamAddr(c.raw), Listener: c.listener, Reason: RefusedProxyHeader,
			Detail: untrustedHeaderDetail(err)})
	case errors.As(err, &pe):
		ab := association.AbortFor(err)
		c.writePDU(c.tc, ab)
		c.log.Info("malformed PDU before association; aborted", "error", err, "reason", ab.Reason)
		c.waitPeerClose(c.tc) // PS3.8 Sta13: wait (ARTIM) for the peer to close
	case isTimeout(err):
		c.log.Info("ARTIM expired before A-ASSOCIATE-RQ; closed")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		c.log.Debug("closed before A-ASSOCIATE-RQ")
	default:
		c.log.Debug("read A-ASSOCIATE-RQ failed", "error", err)
	}
}

// reject sends A-ASSOCIATE-RJ, audits it, and waits briefly for the peer to
// close first (PS3.8 AA-... : the requestor closes the transport after an
// RJ; closing at once could lose the RJ in a TCP reset).
func (c *conn) reject(rule string, result association.RejectResult, source association.RejectSource, reason association.RejectReason, name string) {
	if name == "" {
		name = association.RejectReasonName(source, reason)
	}
	rj := &association.AssociateRJ{Result: result, Source: source, Reason: reason}
	c.writePDU(c.tc, rj)
	c.s.Metrics.Associations.WithLabelValues("reject", rule).Inc()
	e := c.event(audit.EventRejected)
	e.Rule, e.Action, e.Backend = rule, c.ruleAction, c.ruleBackend
	e.Result, e.Source, e.ReasonCode = int(result), int(source), int(reason)
	e.Reason = name
	e.ResultName, e.SourceName = result.String(), source.String()
	e.Detail = c.rejectDetail
	c.s.auditEvent(e)
	c.log.Info("association rejected", "decision", "reject", "rule", rule, "result", int(result),
		"source", int(source), "reason", name, "duration", time.Since(c.start))
	c.waitPeerClose(c.tc)
}

// waitPeerClose reads (and discards, bounded) until the peer closes or a
// short timer expires.
func (c *conn) waitPeerClose(r net.Conn) {
	_ = r.SetReadDeadline(time.Now().Add(c.s.current().Edge.PeerCloseWait()))
	_, _ = io.Copy(io.Discard, io.LimitReader(r, 1<<20))
}

// event starts an audit record with what is known about the connection.
func (c *conn) event(name string) audit.Event {
	e := audit.Event{Event: name, Conn: c.id, Remote: c.remote, Client: c.client, Listener: c.listener}
	if c.rq != nil {
		e.Assoc = c.id
		e.CallingAE = association.TrimAE(c.rq.CallingAE)
		e.CalledAE = association.TrimAE(c.rq.CalledAE)
	}
	return e
}

// writePDU writes one PDU with a short write deadline (so a peer that does
// not read cannot hold the goroutine) and ignores the error: it is only used
// for final PDUs (RJ, A-ABORT) before closing.
func (c *conn) writePDU(w net.Conn, p association.PDU) {
	b, err := association.Append(nil, p)
	if err != nil {
		c.log.Error("encode PDU", "error", err)
		return
	}
	_ = w.SetWriteDeadline(time.Now().Add(policy.FinalWriteTimeout))
	_, _ = w.Write(b)
}

func (c *conn) sendAbort(w net.Conn, src association.AbortSource, reason association.AbortReason) {
	c.writePDU(w, &association.Abort{Source: src, Reason: reason})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (c *conn) bytesIn() int64 {
	if c.in == nil {
		return 0
	}
	return c.in.n.Load()
}
