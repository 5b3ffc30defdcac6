package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/proxy/inspect"
	"github.com/dicomedge/dicomedge/tlslayer"
)

// relay is the relay path: the edge stands between the client and one
// backend and pumps PDUs both ways (relay_pump.go); what may pass is the
// inspection's to judge (package inspect), how it ends assocEnd's
// (relay_end.go). The conn's goroutine pumps client→backend, one more
// goroutine pumps backend→client.
type relay struct {
	c   *conn
	cfg *policy.Config
	d   policy.Decision
	cr  *association.Reader // client side (already read the RQ)

	b   net.Conn
	bh  *hookConn // beneath the backend's TLS, if any: its reads flush cw
	br  *association.Reader
	bin *countingReader // backend bytes read, to tell a PDU boundary
	cw  *pduWriter      // to the client
	bw  *pduWriter      // to the backend

	// What the two pumps share, each with its own lock or atomic: insp
	// judges the DIMSE conversation (the client is the association
	// requestor, the backend the acceptor) and keeps the dimse ledger; end
	// is how the association ends, rel the release exchange before it;
	// the writers (cw, bw); last.
	client, backend peer
	insp            *inspect.Inspector
	end             assocEnd
	rel             release
	last            atomic.Int64 // unix nanos of the last PDU in either direction (idle timer)

	inBytes, outBytes prometheus.Counter
	trace             bool // PDU detail at trace level, decided once
}

// run sets the association up with the backend and relays its answer; it
// returns true when the association is established and pump must follow.
func (r *relay) run(ctx context.Context, artimDeadline time.Time) bool {
	c, rq := r.c, r.c.rq
	be := r.d.Backend
	if rj := association.CheckRQ(rq); rj != nil {
		// What the edge cannot take it does not rebuild into an RQ the
		// backend could (a foreign application context, say).
		c.reject(r.d.Rule, rj.Result, rj.Source, rj.Reason, "")
		return false
	}
	if be == nil {
		c.reject(r.d.Rule, association.RejectTransient, association.RejectSourceServiceProviderPresentation,
			association.RejectPresentationTemporaryCongestion, "")
		return false
	}
	c.log.with("backend", be.Name)
	maxLen := r.cfg.Edge.MaxPDULength

	brq, removed := backendRQ(rq, &r.d, be.AETitle, maxLen)
	if len(brq.PresentationContexts) == 0 {
		c.log.Info("no presentation context the rule allows")
		c.reject(r.d.Rule, association.RejectPermanent, association.RejectSourceServiceUser,
			association.RejectUserNoReason, "no-allowed-presentation-context")
		return false
	}

	b, bh, err := r.dial(ctx, be, artimDeadline)
	if err != nil {
		if reason := backendTLSFailure(be, err); reason != "" {
			r.backendTLSRefused(reason, err)
			return false
		}
		c.log.Warn("backend unreachable", "address", be.Address, "error", err)
		c.reject(r.d.Rule, association.RejectTransient, association.RejectSourceServiceProviderPresentation,
			association.RejectPresentationTemporaryCongestion, "backend-unreachable")
		return false
	}
	r.b, r.bh = b, bh
	established := false
	defer func() {
		if !established {
			b.Close()
		}
	}()
	var rd io.Reader = b
	if be.TLS == nil {
		rd = bh
	}
	r.bin = &countingReader{r: rd}
	r.br = association.NewReader(r.bin, maxLen)
	r.bw = &pduWriter{c: b, timeout: r.idle()}
	if be.TLS != nil && !c.s.bench.oneWritePerRecord.Load() {
		r.bw.g = bh
	}
	r.cw = &pduWriter{c: c.tc, timeout: r.idle()}
	r.inBytes = c.s.Metrics.RelayBytes.WithLabelValues("in")
	r.outBytes = c.s.Metrics.RelayBytes.WithLabelValues("out")
	r.client = peer{name: "client", side: inspect.Requestor, conn: c.tc, raw: c.raw, rd: r.cr, in: c.in, w: r.cw,
		read: r.inBytes, wrote: r.outBytes}
	r.backend = peer{name: "backend", side: inspect.Acceptor, conn: b, raw: b, rd: r.br, in: r.bin, w: r.bw}

	_ = b.SetDeadline(artimDeadline.Add(r.cfg.Edge.ARTIMTimeout)) // the backend gets its own ARTIM
	if err := r.bw.write(brq); err != nil {
		if reason := backendTLSFailure(be, err); reason != "" {
			r.backendTLSRefused(reason, err)
			return false
		}
		c.log.Warn("backend write failed", "error", err)
		c.reject(r.d.Rule, association.RejectTransient, association.RejectSourceServiceProviderPresentation,
			association.RejectPresentationTemporaryCongestion, "backend-unreachable")
		return false
	}
	p, err := r.br.ReadPDU()
	_ = b.SetDeadline(time.Time{})
	if err != nil {
		var pe *association.ProtocolError
		if errors.As(err, &pe) {
			c.writePDU(b, association.AbortFor(err))
		}
		// Under TLS 1.3 the backend judges the edge's certificate after
		// the edge's side of the handshake is done: its refusal (an alert)
		// arrives in answer to the A-ASSOCIATE-RQ.
		if reason := backendTLSFailure(be, err); reason != "" {
			r.backendTLSRefused(reason, err)
			return false
		}
		c.log.Warn("backend did not answer the A-ASSOCIATE-RQ", "error", err)
		c.reject(r.d.Rule, association.RejectTransient, association.RejectSourceServiceProviderPresentation,
			association.RejectPresentationTemporaryCongestion, "backend-no-answer")
		return false
	}
	switch p := p.(type) {
	case *association.AssociateAC:
		if n := p.UserInfo.MaxLength; n != 0 && n < association.MinMaxLength {
			// No P-DATA-TF fits a maximum below 7 (PS3.8 9.3.5.1: a PDV
			// item header is 6 bytes); relayed PDUs would exceed what the
			// backend announced (PS3.8 D.1.1). An answer the edge cannot use.
			c.sendAbort(b, association.AbortSourceServiceProvider, association.AbortInvalidPDUParameterValue)
			c.log.Warn("backend announced a maximum length no P-DATA-TF fits", "max_length", n)
			c.reject(r.d.Rule, association.RejectTransient, association.RejectSourceServiceProviderPresentation,
				association.RejectPresentationTemporaryCongestion, "backend-no-answer")
			return false
		}
		established = r.accepted(rq, p, removed)
	case *association.AssociateRJ:
		if !p.Valid() {
			// Codes PS3.8 Table 9-21 does not define: a client could read
			// them as neither permanent nor transient. A malformed answer.
			c.log.Warn("backend rejected with codes PS3.8 does not define", "result", uint8(p.Result),
				"source", uint8(p.Source), "reason", uint8(p.Reason))
			c.rejectDetail = fmt.Sprintf("the backend's A-ASSOCIATE-RJ %d/%d/%d is not a combination PS3.8 Table 9-21 defines",
				p.Result, p.Source, p.Reason)
			c.reject(r.d.Rule, association.RejectTransient, association.RejectSourceServiceProviderPresentation,
				association.RejectPresentationTemporaryCongestion, "backend-no-answer")
			break
		}
		// The backend's own decision goes back unchanged.
		c.log.Info("backend rejected the association", "result", p.Result, "source", p.Source, "reason", p.ReasonName())
		c.reject(r.d.Rule, p.Result, p.Source, p.Reason, "")
	case *association.Abort:
		c.sendAbort(c.tc, p.Source, p.Reason) // carried through unchanged
		e := c.event(audit.EventAborted)
		e.Rule, e.Backend, e.AbortSource, e.AbortReason = r.d.Rule, be.Name, string(peerAborted("backend", p.Source)), p.Reason.String()
		c.s.auditEvent(e)
		c.log.Info("backend aborted during establishment")
	default:
		c.sendAbort(b, association.AbortSourceServiceProvider, association.AbortUnexpectedPDU)
		c.sendAbort(c.tc, association.AbortSourceServiceProvider, association.AbortReasonNotSpecified)
		e := c.event(audit.EventAborted)
		e.Rule, e.Backend = r.d.Rule, be.Name
		e.AbortSource, e.AbortReason = string(sourceEdge), string(protocolReason("backend", association.AbortUnexpectedPDU))
		c.s.auditEvent(e)
		c.log.Warn("backend answered the RQ with an unexpected PDU", "type", p.Type())
	}
	return established
}

// retrieveAEFilter is the inspection's data filter that rewrites Retrieve
// AE Title (0008,0054) in the identifiers of the backend's (the acceptor's)
// C-FIND responses from backendAE to called.
func retrieveAEFilter(backendAE, called string) func(inspect.Side, *dimse.Command, inspect.Context) inspect.DataFilter {
	return func(side inspect.Side, cmd *dimse.Command, ctx inspect.Context) inspect.DataFilter {
		if side != inspect.Acceptor || cmd.CommandField != dimse.CFindRSP {
			return nil
		}
		return &dimse.RetrieveAEFilter{From: backendAE, To: called, TransferSyntax: ctx.TransferSyntax}
	}
}

// backendTLSRefused rejects the client's association because TLS to the
// backend failed: A-ASSOCIATE-RJ 2/3/1 (transient, service provider
// presentation, temporary congestion: PS3.8 9.3.4), as for an unreachable
// backend, with the TLS reason in the record (e.g.
// backend-tls-bad-certificate when the backend refused the edge's client
// certificate, backend-tls-unknown-ca when the edge did not trust the
// backend's).
func (r *relay) backendTLSRefused(reason string, err error) {
	c, be := r.c, r.d.Backend
	c.log.Warn("TLS to the backend failed", "address", be.Address, "reason", reason, "error", err)
	c.rejectDetail = fmt.Sprintf("backend %s (%s): %v", be.Name, be.Address, err)
	c.reject(r.d.Rule, association.RejectTransient, association.RejectSourceServiceProviderPresentation,
		association.RejectPresentationTemporaryCongestion, reason)
}

// backendTLSFailure names a failure of TLS to be, "" when err is not one:
// "backend-tls-" and the alert the backend sent (bad-certificate,
// unknown-certificate-authority, certificate-required, ...) or, when the
// edge refused the backend, tlslayer's class of the verification failure.
func backendTLSFailure(be *policy.Backend, err error) string {
	if be.TLS == nil || err == nil {
		return ""
	}
	if oe, ok := errors.AsType[*net.OpError](err); ok && oe.Op == "remote error" {
		return "backend-tls-" + alertName(oe.Err.Error())
	}
	if errors.Is(err, errBackendHandshake) {
		return "backend-tls-" + tlslayer.Classify(err)
	}
	return ""
}

// alertName turns crypto/tls's "tls: bad certificate" into
// "bad-certificate", keeping only lower-case letters, digits and '-' so
// that the record's reason is a plain token whatever the text.
func alertName(msg string) string {
	msg = strings.TrimPrefix(msg, "tls: ")
	var b strings.Builder
	for _, r := range msg {
		switch {
		case b.Len() >= 48:
			return b.String()
		case 'a' <= r && r <= 'z', '0' <= r && r <= '9':
			b.WriteRune(r)
		case 'A' <= r && r <= 'Z':
			b.WriteRune(r + 'a' - 'A')
		case r == ' ' || r == '-' || r == '_':
			b.WriteByte('-')
		}
	}
	if b.Len() == 0 {
		return "alert"
	}
	return b.String()
}

// clampMax is the maximum PDU length to offer or use towards a peer: the
// peer's, unless it is 0 (unlimited) or above the edge's own limit.
func clampMax(peer, edge uint32) uint32 {
	if peer == 0 || peer > edge {
		return edge
	}
	return peer
}

func (r *relay) idle() time.Duration { return r.cfg.Edge.Idle() }

// accepted relays the backend's AC to the client; true: pump follows.
func (r *relay) accepted(rq *association.AssociateRQ, ac *association.AssociateAC, removed map[uint8]bool) bool {
	c := r.c
	cac, icfg, accepted := clientAC(rq, ac, removed, r.cfg.Edge.MaxPDULength)
	if c.s.bench.backendMaxOffered.Load() {
		cac.UserInfo.MaxLength = icfg.MaxPDU[inspect.Acceptor]
	}
	icfg.Policy, icfg.Rule = &r.d, r.d.Rule
	// Each side is held to the maximum length the edge announced to it
	// (PS3.8 D.1.1): the client to the AC's, the backend to the RQ's. The
	// client may have been offered more than the backend takes: its
	// longer PDUs are cut to the backend's maximum by the inspection.
	r.cr.SetLimit(cac.UserInfo.MaxLength)
	r.br.SetLimit(icfg.MaxPDU[inspect.Requestor])
	// Scanned with patient_ids = "omit" too: the record names the study.
	icfg.ScanPatientID = c.s.Audit != nil
	icfg.AllowUnsortedDataSets = r.d.AllowUnsortedDataSets
	if called := association.TrimAE(rq.CalledAE); r.d.AllowsService("C-FIND") && called != r.d.Backend.AETitle {
		// A client that follows Retrieve AE Title (0008,0054) in a C-FIND
		// answer must reach the edge again, not the backend it cannot call.
		icfg.Filter = retrieveAEFilter(r.d.Backend.AETitle, called)
	}
	if d := r.d.Deidentify; d != nil {
		icfg.Deidentify = d.Profile
	}
	r.insp = inspect.New(icfg)
	r.trace = c.log.IsTrace()
	r.touch()
	if !c.establish(r.cw, func() { r.abortBoth(reasonShutdown) }) {
		c.sendAbort(r.b, association.AbortSourceServiceProvider, association.AbortReasonNotSpecified)
		return false
	}
	if err := r.cw.write(cac); err != nil {
		c.sendAbort(r.b, association.AbortSourceServiceProvider, association.AbortReasonNotSpecified)
		c.log.Info("write A-ASSOCIATE-AC to the client failed", "error", err)
		return false
	}
	r.outBytes.Add(float64(r.cw.bytes.Load()))
	c.s.Metrics.Associations.WithLabelValues("relay", r.d.Rule).Inc()
	e := c.event(audit.EventAccepted)
	e.Rule, e.Action, e.Backend, e.Contexts, e.UserIdentity = r.d.Rule, "relay", r.d.Backend.Name, accepted, userIdentity(rq)
	c.s.auditEvent(e)
	c.log.Trace("A-ASSOCIATE-AC relayed", "accepted", len(accepted), "proposed", len(rq.PresentationContexts),
		"removed", len(removed), "client_max", cac.UserInfo.MaxLength, "backend_max", ac.UserInfo.MaxLength)

	// Each pump, before it waits for its side, sends what it queued for
	// the other side and gives its PDU buffer back (an idle association
	// holds neither).
	clientHook := newTLSWaitHook
	if c.plain {
		clientHook = newWaitHook
	}
	c.pre.wait = clientHook(c.raw, func() {
		_ = r.bw.flush() // a failure is sticky: the next write reports it
		r.cr.Release()
	})
	newHook := newWaitHook
	if r.d.Backend.TLS != nil {
		newHook = newTLSWaitHook
	}
	r.bh.wait = newHook(r.bh.Conn, func() {
		_ = r.cw.flush()
		r.br.Release()
	})
	if c.s.bench.plainReadsAsAsked.Load() {
		c.pre.wait.noReadAhead, r.bh.wait.noReadAhead = true, true
	}
	return true
}
