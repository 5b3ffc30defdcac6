package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/tlslayer"
)

// relay is the relay path: the edge stands between the client and one
// backend, forwarding raw PDUs both ways and inspecting DIMSE commands.
// The conn's goroutine pumps client→backend, one more goroutine pumps
// backend→client.
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

	contexts  map[uint8]pcInfo // accepted presentation contexts
	clientMax uint32           // largest PDU the client accepts (for the edge's own messages)

	mu      sync.Mutex
	pending map[uint16]*pendingOp // client requests awaiting the backend's final response
	subOps  map[uint16]*pendingOp // backend C-STORE-RQs (C-GET sub-operations) awaiting the client's C-STORE-RSP, by the backend's message ID
	cst     clientState           // the pumps' inspection state (finish reads them after both pumps)
	bst     backendState

	last    atomic.Int64 // unix nanos of the last PDU in either direction (idle timer)
	endOnce sync.Once
	abortMu sync.Mutex // held by end's winner while it sends the A-ABORTs it owes
	outcome endOutcome
	ended   atomic.Bool

	inBytes, outBytes prometheus.Counter
	trace             bool // PDU detail at trace level, decided once
}

type pcInfo struct {
	abstract, transfer string
}

// pendingOp is one forwarded client request, for the dimse audit record.
// bytes and scanner belong to the client pump until dataDone is set under
// relay.mu; the record is written once, by whichever pump completes the
// pair (final response, last data PDV), so it never races the data set.
type pendingOp struct {
	service, sopClass, sopInstance, moveDest string
	msgID                                    uint16
	start                                    time.Time
	bytes                                    int64
	scanner                                  *dimse.PatientIDScanner
	detail                                   string // e.g. which C-GET a sub-operation belongs to

	// Guarded by relay.mu.
	dataDone  bool   // the last data PDV was seen, or the request has none
	responded bool   // the final (non-pending) response arrived
	status    uint16 // its status
	audited   bool   // the dimse record was written
}

// run sets the association up with the backend and relays its answer; it
// returns true when the association is established and pump must follow.
func (r *relay) run(ctx context.Context, artimDeadline time.Time) bool {
	c, rq := r.c, r.c.rq
	be := r.d.Backend
	if be == nil {
		c.reject(r.d.Rule, association.RejectTransient, association.RejectSourceServiceProviderPresentation,
			association.RejectPresentationTemporaryCongestion, "")
		return false
	}
	c.log = c.log.With("backend", be.Name)
	maxLen := r.cfg.Edge.MaxPDULength

	// The RQ to the backend: its AE title, contexts the rule allows, and a
	// max length no larger than the edge's (PDUs are forwarded unchanged,
	// so what the backend sends must fit the client and the edge).
	brq := *rq
	brq.CalledAE = be.AETitle
	brq.PresentationContexts = nil
	removed := map[uint8]bool{}
	for _, pc := range rq.PresentationContexts {
		if r.d.AllowsSOPClass(pc.AbstractSyntax) {
			brq.PresentationContexts = append(brq.PresentationContexts, pc)
		} else {
			removed[pc.ID] = true
		}
	}
	brq.UserInfo.MaxLength = clampMax(rq.UserInfo.MaxLength, maxLen)
	brq.UserInfo.HasMaxLength = true
	if len(brq.PresentationContexts) == 0 {
		c.log.Info("no presentation context the rule allows")
		c.reject(r.d.Rule, association.RejectPermanent, association.RejectSourceServiceUser,
			association.RejectUserNoReason, "no-allowed-presentation-context")
		return false
	}

	b, bh, err := r.dial(ctx, be, artimDeadline)
	if err != nil {
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
	r.cw = &pduWriter{c: c.tc, timeout: r.idle()}
	r.inBytes = c.s.Metrics.RelayBytes.WithLabelValues("in")
	r.outBytes = c.s.Metrics.RelayBytes.WithLabelValues("out")

	_ = b.SetDeadline(artimDeadline.Add(r.cfg.Edge.ARTIMTimeout)) // the backend gets its own ARTIM
	if err := r.bw.write(&brq); err != nil {
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
		c.log.Warn("backend did not answer the A-ASSOCIATE-RQ", "error", err)
		c.reject(r.d.Rule, association.RejectTransient, association.RejectSourceServiceProviderPresentation,
			association.RejectPresentationTemporaryCongestion, "backend-no-answer")
		return false
	}
	switch p := p.(type) {
	case *association.AssociateAC:
		established = r.accepted(rq, p, removed)
	case *association.AssociateRJ:
		// The backend's own decision goes back unchanged.
		c.log.Info("backend rejected the association", "result", p.Result, "source", p.Source, "reason", p.ReasonName())
		c.reject(r.d.Rule, p.Result, p.Source, p.Reason, "")
	case *association.Abort:
		c.sendAbort(c.tc, p.Source, p.Reason) // carried through unchanged
		e := c.event(audit.EventAborted)
		e.Rule, e.Backend, e.AbortSource, e.AbortReason = r.d.Rule, be.Name, "backend:"+p.Source.String(), p.Reason.String()
		c.s.auditEvent(e)
		c.log.Info("backend aborted during establishment")
	default:
		c.sendAbort(b, association.AbortSourceServiceProvider, association.AbortUnexpectedPDU)
		c.sendAbort(c.tc, association.AbortSourceServiceProvider, association.AbortReasonNotSpecified)
		e := c.event(audit.EventAborted)
		e.Rule, e.Backend, e.AbortSource, e.AbortReason = r.d.Rule, be.Name, "service-provider", "unexpected-pdu-from-backend"
		c.s.auditEvent(e)
		c.log.Warn("backend answered the RQ with an unexpected PDU", "type", p.Type())
	}
	return established
}

// clampMax is the maximum PDU length to offer or use towards a peer: the
// peer's, unless it is 0 (unlimited) or above the edge's own limit.
func clampMax(peer, edge uint32) uint32 {
	if peer == 0 || peer > edge {
		return edge
	}
	return peer
}

func (r *relay) idle() time.Duration {
	if d := r.cfg.Edge.IdleTimeout; d > 0 {
		return d
	}
	return 10 * time.Minute
}

// accepted relays the backend's AC to the client; true: pump follows.
func (r *relay) accepted(rq *association.AssociateRQ, ac *association.AssociateAC, removed map[uint8]bool) bool {
	c := r.c
	maxLen := r.cfg.Edge.MaxPDULength
	cac := *ac
	// The client sees the AE titles it used, not the backend's.
	cac.CalledAE, cac.CallingAE = rq.CalledAE, rq.CallingAE
	cac.UserInfo.MaxLength = clampMax(ac.UserInfo.MaxLength, maxLen)
	cac.UserInfo.HasMaxLength = true
	cac.PresentationContexts = make([]association.PresentationContextAC, 0, len(rq.PresentationContexts))
	r.contexts = map[uint8]pcInfo{}
	var accepted []string
	for _, pc := range rq.PresentationContexts {
		if removed[pc.ID] {
			// Refused by the edge's rule: user rejection (PS3.8 9.3.3.2 result 1).
			ts := ""
			if len(pc.TransferSyntaxes) > 0 {
				ts = pc.TransferSyntaxes[0]
			}
			cac.PresentationContexts = append(cac.PresentationContexts,
				association.PresentationContextAC{ID: pc.ID, Result: association.PCUserRejection, TransferSyntax: ts})
			continue
		}
		for _, bpc := range ac.PresentationContexts {
			if bpc.ID == pc.ID {
				cac.PresentationContexts = append(cac.PresentationContexts, bpc)
				if bpc.Result == association.PCAcceptance {
					r.contexts[pc.ID] = pcInfo{abstract: pc.AbstractSyntax, transfer: bpc.TransferSyntax}
					accepted = appendUnique(accepted, pc.AbstractSyntax)
				}
			}
		}
	}
	r.clientMax = clampMax(rq.UserInfo.MaxLength, maxLen)
	r.trace = c.log.IsTrace()
	r.pending = map[uint16]*pendingOp{}
	r.subOps = map[uint16]*pendingOp{}
	r.touch()
	if !c.establish(func() { r.abortBoth("shutdown") }) {
		c.sendAbort(r.b, association.AbortSourceServiceProvider, association.AbortReasonNotSpecified)
		return false
	}
	if err := r.cw.write(&cac); err != nil {
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
	c.pre.wait = newTLSWaitHook(c.raw, func() {
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
	return true
}

// pump forwards PDUs both ways until the association ends, then writes its
// record. conn.serve calls it after run has returned, so that the client
// pump waits for input on a small stack.
func (r *relay) pump() {
	defer r.b.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.pumpBackend()
	}()
	r.pumpClient()
	<-done
	r.finish()
}

// testHookReleaseRPForwarded, when set by a test, runs right after an
// A-RELEASE-RP has been forwarded, to widen the window in which the peer
// that received it closes its connection.
var testHookReleaseRPForwarded func(*relay)

func (r *relay) touch() { r.last.Store(time.Now().UnixNano()) }

// idleExpired says whether neither direction has carried a PDU for the idle
// timeout; if not, it sets conn's next read deadline from the last activity.
func (r *relay) idleExpired(nc net.Conn) bool {
	next := time.Unix(0, r.last.Load()).Add(r.idle())
	if time.Now().After(next) {
		return true
	}
	_ = nc.SetReadDeadline(next)
	return false
}

// end records how the association ended; the first caller wins.
func (r *relay) end(o endOutcome) bool {
	won := false
	r.endOnce.Do(func() {
		r.outcome = o
		r.ended.Store(true)
		won = true
	})
	return won
}

// endWith records o if it is the first outcome and then sends the
// A-ABORTs it owes (send). A pump that loses the race waits here until the
// winner's aborts are written, so its closeBoth cannot cut them off (the
// client would see EOF instead of A-ABORT).
func (r *relay) endWith(o endOutcome, send func()) bool {
	r.abortMu.Lock()
	defer r.abortMu.Unlock()
	if !r.end(o) {
		return false
	}
	send()
	return true
}

// abortBoth sends A-ABORT (service provider) to both sides and closes them.
func (r *relay) abortBoth(why string) {
	r.endWith(endOutcome{abortSource: "service-provider", abortReason: why}, func() {
		r.abortTo(r.bw, association.AbortReasonNotSpecified)
		r.abortTo(r.cw, association.AbortReasonNotSpecified)
	})
	r.closeBoth()
}

func (r *relay) abortTo(w *pduWriter, reason association.AbortReason) {
	w.abort(association.AbortSourceServiceProvider, reason)
}

func (r *relay) closeBoth() {
	r.b.Close()
	r.c.raw.Close()
}

// nextPDU reads side's next PDU for its pump and renews the idle deadline
// on nc. A timeout between PDUs is resumed while the association is not
// idle; ok is false when the pump must stop (the association ended, or the
// side failed and both were told).
func (r *relay) nextPDU(side string, rd *association.Reader, nc net.Conn, in *countingReader, failed, other *pduWriter) (typ association.PDUType, raw []byte, ok bool) {
	for {
		at := in.n.Load()
		typ, raw, err := rd.Next()
		if err != nil {
			if r.ended.Load() {
				return 0, nil, false
			}
			// Only a timeout between PDUs may be resumed; inside one the
			// stream position is lost, and a peer stalled mid-PDU that long
			// is dead anyway.
			if isTimeout(err) && in.n.Load() == at && !r.idleExpired(nc) {
				continue
			}
			r.sideFailed(side, err, failed, other)
			return 0, nil, false
		}
		r.touch()
		_ = nc.SetReadDeadline(time.Now().Add(r.idle()))
		if r.trace {
			r.c.log.Trace("PDU", "from", side, "type", typ, "length", len(raw))
		}
		return typ, raw, true
	}
}

// pumpClient forwards client PDUs to the backend (conn's goroutine).
func (r *relay) pumpClient() {
	c := r.c
	asm := &dimse.Assembler{}
	st := &r.cst
	_ = c.tc.SetReadDeadline(time.Now().Add(r.idle()))
	for {
		typ, raw, ok := r.nextPDU("client", r.cr, c.tc, c.in, r.cw, r.bw)
		if !ok {
			return
		}
		r.inBytes.Add(float64(len(raw)))
		switch typ {
		case association.TypePDataTF:
			if err := r.clientPData(raw, asm, st); err != nil {
				if !errors.Is(err, errEnded) && !r.ended.Load() {
					r.protocolFailure("client", err)
				}
				return
			}
		case association.TypeReleaseRQ, association.TypeReleaseRP:
			c.log.Trace("release", "from", "client", "type", typ)
			if typ == association.TypeReleaseRP {
				// Recorded before the RP is forwarded: the backend closes as
				// soon as it has it, and its pump must then see an ended
				// association, not a lost connection.
				if !r.end(endOutcome{released: true}) {
					return
				}
				// The backend asked for the release and is the one to close
				// (PS3.8); give it a moment, then end both.
				_ = r.b.SetReadDeadline(time.Now().Add(2 * time.Second))
			}
			if err := r.bw.writeRaw(raw); err != nil {
				r.sideFailed("backend", err, r.bw, r.cw)
				return
			}
			if testHookReleaseRPForwarded != nil && typ == association.TypeReleaseRP {
				testHookReleaseRPForwarded(r)
			}
			if typ == association.TypeReleaseRP {
				return
			}
		case association.TypeAbort:
			ab, _ := association.Decode(typ, raw[association.HeaderLen:])
			src, reason := "service-user", ""
			if a, ok := ab.(*association.Abort); ok {
				src, reason = a.Source.String(), a.Reason.String()
			}
			r.endWith(endOutcome{abortSource: "client:" + src, abortReason: reason}, func() {
				_ = r.bw.writeRaw(raw) // A-ABORT carried through
			})
			r.closeBoth()
			return
		default:
			// PS3.8 Sta6: an A-ASSOCIATE-* PDU in an established association.
			r.protocolFailure("client", association.Unexpected(typ))
			return
		}
	}
}

// clientState is the client→backend DIMSE inspection state.
type clientState struct {
	held     []association.PDV // command fragments awaiting their last fragment (copied)
	out      []association.PDV // reused by clientPData
	dropping bool              // discarding the data set of a refused request
	current  *pendingOp        // the request whose data set is flowing
}

// clientPData forwards one client P-DATA-TF, except the command and data
// set of a request the rule refuses, which the edge answers itself.
func (r *relay) clientPData(raw []byte, asm *dimse.Assembler, st *clientState) error {
	out := st.out[:0]
	defer func() { clear(out); st.out = out[:0] }() // no reference into the reader's buffer
	modified := false
	err := association.EachPDV(raw[association.HeaderLen:], func(p association.PDV) error {
		if _, ok := r.contexts[p.ContextID]; !ok {
			return &association.ProtocolError{Reason: association.AbortInvalidPDUParameterValue,
				Msg: fmt.Sprintf("PDV on presentation context %d which was not accepted", p.ContextID)}
		}
		if !p.Command {
			if _, _, err := asm.Add(p); err != nil {
				return err
			}
			if st.dropping {
				modified = true
				if p.Last {
					st.dropping = false
				}
				return nil
			}
			if op := st.current; op != nil {
				op.bytes += int64(len(p.Data))
				if op.scanner != nil && !op.scanner.Done() {
					op.scanner.Feed(p.Data)
				}
				if p.Last {
					st.current = nil
					r.dataDone(op)
				}
			}
			out = append(out, p)
			return nil
		}
		cmd, done, err := asm.Add(p)
		if err != nil {
			return err
		}
		if !done {
			// Hold the fragment (copied: the reader's buffer is reused) until
			// the whole command is known.
			st.held = append(st.held, association.PDV{ContextID: p.ContextID, Command: true, Last: false,
				Data: append([]byte(nil), p.Data...)})
			modified = true
			return nil
		}
		held := st.held
		st.held = nil
		if !cmd.CommandField.IsRequest() {
			r.clientResponse(cmd)
		} else {
			ok, err := r.allow(p.ContextID, cmd, st)
			if err != nil {
				return err
			}
			if !ok {
				modified = true
				return nil
			}
		}
		if len(held) > 0 {
			// Send what came before, then each held fragment in a PDU of its
			// own: each came in a client PDU no larger than the backend's
			// max, but together they could exceed it.
			modified = true
			if len(out) > 0 {
				if err := r.bw.write(&association.PDataTF{PDVs: out}); err != nil {
					r.sideFailed("backend", err, r.bw, r.cw)
					return errEnded
				}
			}
			for i := range held {
				if err := r.bw.write(&association.PDataTF{PDVs: held[i : i+1]}); err != nil {
					r.sideFailed("backend", err, r.bw, r.cw)
					return errEnded
				}
			}
			out = out[:0]
		}
		out = append(out, p)
		return nil
	})
	if err != nil {
		return err
	}
	if !modified {
		if err := r.bw.writeQueued(raw); err != nil {
			r.sideFailed("backend", err, r.bw, r.cw)
			return errEnded
		}
		return nil
	}
	if len(out) == 0 {
		return nil
	}
	if err := r.bw.write(&association.PDataTF{PDVs: out}); err != nil {
		r.sideFailed("backend", err, r.bw, r.cw)
		return errEnded
	}
	return nil
}

var errEnded = errors.New("association ended")

// allow decides on a complete client request: forwarded (registered for
// the audit) or refused by the edge itself with a failure status and its
// data set dropped. An error is a protocol violation (A-ABORT).
func (r *relay) allow(ctxID uint8, cmd *dimse.Command, st *clientState) (bool, error) {
	c := r.c
	if cmd.CommandField == dimse.CCancelRQ {
		return r.allowCancel(cmd)
	}
	service := cmd.CommandField.Service()
	uid, abstract := cmd.SOPClassUID(), trimUID(r.contexts[ctxID].abstract)
	op := &pendingOp{service: service, sopClass: uid, sopInstance: cmd.AffectedSOPInstanceUID,
		moveDest: cmd.MoveDestination, msgID: cmd.MessageID, start: time.Now(), dataDone: !cmd.HasDataSet()}
	status, reason := dimse.StatusRefusedNotAuthorized, ""
	switch {
	case !r.d.AllowsService(service):
		reason = "service not allowed by rule " + r.d.Rule
	case cmd.CommandField == dimse.CMoveRQ && !r.d.AllowsMoveDestination(cmd.MoveDestination):
		reason = fmt.Sprintf("move destination %q not allowed by rule %s", cmd.MoveDestination, r.d.Rule)
	case !r.d.AllowsSOPClass(uid):
		// The rule's sop_classes bind the command, not only the context
		// it travels on.
		reason = fmt.Sprintf("SOP class %q not allowed by rule %s", uid, r.d.Rule)
	case isCService(cmd.CommandField) && uid != abstract:
		// PS3.7 9.1: a C-service's Affected SOP Class is the abstract syntax
		// of its presentation context. N-services may name a SOP class of a
		// Meta SOP Class context (PS3.4 H, print), so only the rule binds them.
		status = dimse.StatusSOPClassNotSupported
		reason = fmt.Sprintf("SOP class %q is not the abstract syntax %q of presentation context %d", uid, abstract, ctxID)
	}
	if reason == "" {
		r.mu.Lock()
		if _, dup := r.pending[cmd.MessageID]; dup {
			// PS3.7 C.5.6: a Message ID already outstanding is a duplicate
			// invocation; forwarding it would hide one operation from the audit.
			status, reason = dimse.StatusDuplicateInvocation, fmt.Sprintf("message ID %d already outstanding", cmd.MessageID)
		} else {
			r.pending[cmd.MessageID] = op
		}
		r.mu.Unlock()
	}
	if reason != "" {
		rsp := dimse.NewResponse(cmd, status)
		if cmd.CommandField == dimse.CGetRQ || cmd.CommandField == dimse.CMoveRQ {
			zero := uint16(0)
			rsp.NumberOfCompletedSuboperations, rsp.NumberOfFailedSuboperations, rsp.NumberOfWarningSuboperations = &zero, &zero, &zero
		}
		err := func() error {
			r.cw.mu.Lock()
			defer r.cw.mu.Unlock()
			before := r.cw.bytes.Load()
			err := dimse.WriteMessage(writerFunc(r.cw.writeLocked), ctxID, rsp, nil, r.clientMax)
			r.outBytes.Add(float64(r.cw.bytes.Load() - before))
			return err
		}()
		if err != nil {
			c.log.Info("write refusal failed", "error", err)
		}
		st.dropping = cmd.HasDataSet()
		c.log.Info("DIMSE request refused", "request", cmd.CommandField.String(), "message_id", cmd.MessageID,
			"status", statusHex(status), "why", reason)
		r.auditDIMSE(op, statusHex(status), dimse.ClassOf(status).String(), false)
		return false, nil
	}
	if cmd.CommandField == dimse.CStoreRQ && c.s.Audit != nil && r.cfg.Audit.PatientIDs != "omit" {
		op.scanner = dimse.NewPatientIDScanner(r.contexts[ctxID].transfer)
	}
	if cmd.HasDataSet() {
		st.current = op
	}
	c.log.Trace("DIMSE request", "request", cmd.CommandField.String(), "message_id", cmd.MessageID, "sop_class", op.sopClass)
	return true, nil
}

// allowCancel forwards a C-CANCEL-RQ only when the rule allows C-CANCEL and
// it names an operation the edge forwarded; PS3.7 9.3.2.3 gives it no data
// set and no response, so one carrying a data set is a protocol violation
// and any other is dropped silently.
func (r *relay) allowCancel(cmd *dimse.Command) (bool, error) {
	if cmd.HasDataSet() {
		return false, &association.ProtocolError{Reason: association.AbortInvalidPDUParameterValue,
			Msg: "C-CANCEL-RQ with a data set"}
	}
	why := ""
	r.mu.Lock()
	_, outstanding := r.pending[cmd.MessageIDBeingRespondedTo]
	r.mu.Unlock()
	switch {
	case !r.d.AllowsService("C-CANCEL"):
		why = "C-CANCEL not allowed by rule " + r.d.Rule
	case !outstanding:
		why = "no forwarded operation has this message ID"
	}
	if why != "" {
		r.c.log.Info("C-CANCEL-RQ dropped", "message_id_being_responded_to", cmd.MessageIDBeingRespondedTo, "why", why)
		return false, nil
	}
	return true, nil
}

func isCService(f dimse.CommandField) bool {
	switch f {
	case dimse.CStoreRQ, dimse.CFindRQ, dimse.CGetRQ, dimse.CMoveRQ, dimse.CEchoRQ:
		return true
	}
	return false
}

func trimUID(s string) string { return strings.TrimRight(s, "\x00 ") }

// dataDone marks op's data set complete; if the final response came first,
// the record is written now.
func (r *relay) dataDone(op *pendingOp) {
	r.mu.Lock()
	op.dataDone = true
	report := op.responded && !op.audited
	op.audited = op.audited || report
	r.mu.Unlock()
	if report {
		r.auditDIMSE(op, statusHex(op.status), dimse.ClassOf(op.status).String(), true)
	}
}

// auditDIMSE writes op's dimse record; status is empty for an operation
// the association ended before it completed.
func (r *relay) auditDIMSE(op *pendingOp, status, class string, allowed bool) {
	c := r.c
	c.s.Metrics.DIMSERequests.WithLabelValues(op.service, class).Inc()
	if c.s.Audit == nil {
		return
	}
	e := r.opEvent(op, allowed)
	e.Status, e.MoveDestination = status, op.moveDest
	c.s.auditEvent(e)
}

// opEvent starts op's dimse record with what every such record carries;
// c.s.Audit must be set.
func (r *relay) opEvent(op *pendingOp, allowed bool) audit.Event {
	c := r.c
	e := c.event(audit.EventDIMSE)
	e.Service, e.SOPClass, e.SOPInstance, e.MessageID = op.service, op.sopClass, op.sopInstance, int(op.msgID)
	e.Bytes, e.MS, e.Allowed = op.bytes, time.Since(op.start).Milliseconds(), audit.Bool(allowed)
	e.Detail = op.detail
	if op.scanner != nil {
		if id, ok := op.scanner.PatientID(); ok {
			e.PatientID = c.s.Audit.PatientID(id)
		}
	}
	return e
}

// pumpBackend forwards backend PDUs to the client (its own goroutine).
func (r *relay) pumpBackend() {
	c := r.c
	asm := &dimse.Assembler{}
	st := &r.bst
	_ = r.b.SetReadDeadline(time.Now().Add(r.idle()))
	for {
		typ, raw, ok := r.nextPDU("backend", r.br, r.b, r.bin, r.bw, r.cw)
		if !ok {
			return
		}
		switch typ {
		case association.TypePDataTF:
			if err := r.backendPData(raw, asm, st); err != nil {
				r.protocolFailure("backend", err)
				return
			}
		case association.TypeReleaseRQ:
			c.log.Trace("release", "from", "backend")
		case association.TypeReleaseRP:
			// Recorded before the RP is forwarded: the client closes as soon
			// as it has it, and its pump must then see an ended association,
			// not a lost connection.
			if r.end(endOutcome{released: true}) {
				// PS3.8: the requestor closes the transport after A-RELEASE-RP;
				// give the client a moment, then stop its pump.
				_ = c.tc.SetReadDeadline(time.Now().Add(2 * time.Second))
				if err := r.cw.writeRaw(raw); err == nil {
					r.outBytes.Add(float64(len(raw)))
				}
				if testHookReleaseRPForwarded != nil {
					testHookReleaseRPForwarded(r)
				}
			}
			r.b.Close()
			return
		case association.TypeAbort:
			ab, _ := association.Decode(typ, raw[association.HeaderLen:])
			src, reason := "service-provider", ""
			if a, ok := ab.(*association.Abort); ok {
				src, reason = a.Source.String(), a.Reason.String()
			}
			r.endWith(endOutcome{abortSource: "backend:" + src, abortReason: reason}, func() {
				// Carried through unchanged (as the client's is); a
				// malformed one is replaced by the edge's own.
				if _, ok := ab.(*association.Abort); ok {
					r.cw.writeAbort(raw)
				} else {
					r.abortTo(r.cw, association.AbortReasonNotSpecified)
				}
			})
			r.closeBoth()
			return
		default:
			r.protocolFailure("backend", association.Unexpected(typ))
			return
		}
		write := r.cw.writeRaw
		if typ == association.TypePDataTF {
			write = r.cw.writeQueued
		}
		if err := write(raw); err != nil {
			if !r.ended.Load() {
				r.sideFailed("client", err, r.cw, r.bw)
			}
			return
		}
		r.outBytes.Add(float64(len(raw)))
	}
}

// backendState is the backend→client DIMSE inspection state.
type backendState struct {
	current *pendingOp // the sub-operation whose data set is flowing
}

// backendPData inspects one backend P-DATA-TF (forwarded unchanged):
// responses complete the client's requests; C-STORE requests (the C-GET
// sub-operations) are registered, with their data set's size and patient
// ID, until the client answers them.
func (r *relay) backendPData(raw []byte, asm *dimse.Assembler, st *backendState) error {
	return association.EachPDV(raw[association.HeaderLen:], func(p association.PDV) error {
		cmd, done, err := asm.Add(p)
		if err != nil {
			return err
		}
		if !p.Command {
			if op := st.current; op != nil {
				op.bytes += int64(len(p.Data))
				if op.scanner != nil && !op.scanner.Done() {
					op.scanner.Feed(p.Data)
				}
				if p.Last {
					st.current = nil
					r.dataDone(op)
				}
			}
			return nil
		}
		if !done {
			return nil
		}
		if !cmd.CommandField.IsRequest() {
			r.backendResponse(cmd)
			return nil
		}
		if cmd.CommandField == dimse.CStoreRQ {
			r.subOperation(p.ContextID, cmd, st)
		}
		return nil
	})
}

// subOperation registers a C-STORE-RQ from the backend: on a relayed
// association that is a C-GET sub-operation (PS3.4 C.4.3), the instance
// the client fetches.
func (r *relay) subOperation(ctxID uint8, cmd *dimse.Command, st *backendState) {
	op := &pendingOp{service: cmd.CommandField.Service(), sopClass: cmd.SOPClassUID(), sopInstance: cmd.AffectedSOPInstanceUID,
		msgID: cmd.MessageID, start: time.Now(), dataDone: !cmd.HasDataSet()}
	if r.c.s.Audit != nil && r.cfg.Audit.PatientIDs != "omit" {
		op.scanner = dimse.NewPatientIDScanner(r.contexts[ctxID].transfer)
	}
	r.mu.Lock()
	// Which C-GET: the Move Originator Message ID when the backend gives
	// one that matches, else the C-GET(s) outstanding.
	var gets []int
	for id, p := range r.pending {
		if p.service == "C-GET" {
			gets = append(gets, int(id))
		}
	}
	if g, ok := r.pending[cmd.MoveOriginatorMessageID]; ok && cmd.MoveOriginatorMessageID != 0 && g.service == "C-GET" {
		gets = []int{int(cmd.MoveOriginatorMessageID)}
	}
	sort.Ints(gets)
	switch len(gets) {
	case 0:
		op.detail = "C-STORE request from the backend outside any C-GET"
	case 1:
		op.detail = fmt.Sprintf("C-GET sub-operation of message %d", gets[0])
	default:
		op.detail = fmt.Sprintf("C-GET sub-operation of one of messages %s", strings.Trim(strings.Join(strings.Fields(fmt.Sprint(gets)), ", "), "[]"))
	}
	if old := r.subOps[cmd.MessageID]; old != nil && !old.audited {
		old.audited = true
		// The backend reused a message ID the client has not answered:
		// record the first as unanswered rather than lose it.
		defer r.auditUnanswered(old)
	}
	if r.subOps == nil {
		r.subOps = map[uint16]*pendingOp{}
	}
	r.subOps[cmd.MessageID] = op
	r.mu.Unlock()
	if cmd.HasDataSet() {
		st.current = op
	}
	r.c.log.Trace("DIMSE sub-operation", "request", cmd.CommandField.String(), "message_id", cmd.MessageID, "detail", op.detail)
}

// clientResponse completes a backend request with the client's answer.
func (r *relay) clientResponse(cmd *dimse.Command) {
	if cmd.CommandField != dimse.CStoreRSP || dimse.ClassOf(cmd.Status) == dimse.ClassPending {
		return
	}
	// As for the client's requests: the record waits for the data set.
	r.completeOp(cmd, true)
}

// completeOp takes the operation cmd answers out of r.pending (or r.subOps
// for a sub-operation, both read under r.mu) and records the response; the
// dimse audit record is written now if its data set is complete too
// (otherwise dataDone writes it).
func (r *relay) completeOp(cmd *dimse.Command, subOp bool) {
	r.mu.Lock()
	ops := r.pending
	if subOp {
		ops = r.subOps
	}
	op := ops[cmd.MessageIDBeingRespondedTo]
	delete(ops, cmd.MessageIDBeingRespondedTo)
	report := false
	if op != nil {
		op.responded, op.status = true, cmd.Status
		report = op.dataDone && !op.audited
		op.audited = op.audited || report
	}
	r.mu.Unlock()
	if report {
		r.auditDIMSE(op, statusHex(cmd.Status), dimse.ClassOf(cmd.Status).String(), true)
	}
}

// auditUnanswered records a sub-operation whose data went to the client
// but which the client never answered: no status.
func (r *relay) auditUnanswered(op *pendingOp) {
	c := r.c
	if c.s.Audit == nil {
		return
	}
	e := r.opEvent(op, true)
	e.Detail += "; no C-STORE-RSP from the client"
	c.s.auditEvent(e)
}

// backendResponse matches a backend response to the client's request; the
// final (non-pending) one completes the dimse audit record.
func (r *relay) backendResponse(cmd *dimse.Command) {
	if dimse.ClassOf(cmd.Status) == dimse.ClassPending {
		return
	}
	r.completeOp(cmd, false)
	// Otherwise: a response to a backend request (C-GET sub-operation), an
	// unknown ID, or one whose data set is still arriving (dataDone writes it).
}

// sideFailed handles a read or write failure on one side: the other side
// hears A-ABORT (PS3.8: the connection's loss is an A-P-ABORT).
func (r *relay) sideFailed(side string, err error, failed, other *pduWriter) {
	reason := "connection-closed"
	switch {
	case isTimeout(err):
		reason = "idle-timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
	default:
		var pe *association.ProtocolError
		if errors.As(err, &pe) {
			r.protocolFailure(side, err)
			return
		}
		reason = "connection-error"
	}
	r.endWith(endOutcome{abortSource: side, abortReason: reason, err: err}, func() {
		if reason == "idle-timeout" {
			r.abortTo(failed, association.AbortReasonNotSpecified)
		}
		r.abortTo(other, association.AbortReasonNotSpecified)
	})
	r.closeBoth()
}

// protocolFailure: a malformed or unexpected PDU from one side gets the
// A-ABORT its error prescribes; the other side gets one too.
func (r *relay) protocolFailure(side string, err error) {
	ab := association.AbortFor(err)
	failed, other := r.cw, r.bw
	if side == "backend" {
		failed, other = r.bw, r.cw
	}
	r.endWith(endOutcome{abortSource: "service-provider", abortReason: side + ":" + ab.Reason.String(), err: err}, func() {
		r.abortTo(failed, ab.Reason)
		r.abortTo(other, association.AbortReasonNotSpecified)
	})
	r.closeBoth()
}

func (r *relay) finish() {
	c := r.c
	r.flushPending()
	o := r.outcome
	name := audit.EventReleased
	if !o.released {
		name = audit.EventAborted
	}
	in, out := c.bytesIn(), r.cw.bytes.Load()
	e := c.event(name)
	e.Rule, e.Backend = r.d.Rule, r.d.Backend.Name
	e.BytesIn, e.BytesOut, e.MS = in, out, time.Since(c.start).Milliseconds()
	e.AbortSource, e.AbortReason = o.abortSource, o.abortReason
	c.s.auditEvent(e)
	// c.log already carries backend (relay setup), so it is not repeated here.
	c.log.Info("association ended", o.logArgs("decision", "relay", "rule", r.d.Rule,
		"end", name, "bytes_in", in, "bytes_out", out, "duration", time.Since(c.start))...)
}

// flushPending writes the dimse record of every forwarded operation the
// association ended before completing (no final response, or a data set
// cut short), with no status: an abort must not hide what was sent.
func (r *relay) flushPending() {
	r.mu.Lock()
	ops := takeUnaudited(r.pending, r.cst.current)
	r.pending = map[uint16]*pendingOp{}
	// C-GET sub-operations the client never answered (or whose data set
	// was cut short).
	subs := takeUnaudited(r.subOps, r.bst.current)
	r.subOps = nil
	r.mu.Unlock()
	slices.SortFunc(ops, func(a, b *pendingOp) int { return a.start.Compare(b.start) })
	for _, op := range ops {
		r.auditDIMSE(op, "", "incomplete", true)
	}
	sort.Slice(subs, func(i, j int) bool { return subs[i].msgID < subs[j].msgID })
	for _, op := range subs {
		r.auditUnanswered(op)
	}
}

// takeUnaudited marks and returns the operations in m, then current, whose
// record is not yet written (the caller holds r.mu).
func takeUnaudited(m map[uint16]*pendingOp, current *pendingOp) []*pendingOp {
	var out []*pendingOp
	for _, op := range m {
		if !op.audited {
			op.audited = true
			out = append(out, op)
		}
	}
	if current != nil && !current.audited {
		current.audited = true
		out = append(out, current)
	}
	return out
}

// dial connects to the backend within the connect timeout (bounded by
// ARTIM), with TLS when the backend has a tls block.
func (r *relay) dial(ctx context.Context, be *policy.Backend, artimDeadline time.Time) (net.Conn, *hookConn, error) {
	timeout := 10 * time.Second
	if d := time.Until(artimDeadline); d > time.Second && d < timeout {
		timeout = d
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dial := r.c.s.Dialer
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	nc, err := dial(dctx, "tcp", be.Address)
	if err != nil {
		return nil, nil, err
	}
	hc := &hookConn{Conn: nc}
	if be.TLS == nil {
		return nc, hc, nil
	}
	tcfg, err := r.c.s.backendTLS.get(r.cfg, r.c.s.current(), be)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	tc := tls.Client(hc, tcfg)
	if err := tc.HandshakeContext(dctx); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("backend TLS handshake: %w", err)
	}
	return tc, hc, nil
}

// backendTLSCache holds one tls.Config per backend block of the policy in
// force. A reload makes a new *policy.Config with new *policy.Backend values:
// the first dial under it empties the cache, so the cache stays bounded by
// the current policy's backends. An entry is rebuilt when its files' size or
// modification time changed, so a rotated client certificate or CA bundle
// is used from the next dial without a SIGHUP.
type backendTLSCache struct {
	mu  sync.Mutex
	cfg *policy.Config
	m   map[*policy.Backend]backendTLSEntry
}

type backendTLSEntry struct {
	tc    *tls.Config
	files string // backendTLSFiles when tc was built
}

// backendTLSFiles is the name, size and modification time of be's CA,
// certificate and key files.
func backendTLSFiles(be *policy.Backend) string {
	var b strings.Builder
	for _, f := range append(append([]string(nil), be.TLS.CA...), be.TLS.CertFile, be.TLS.KeyFile) {
		if f == "" {
			continue
		}
		b.WriteString(f)
		if fi, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "|%d|%d", fi.Size(), fi.ModTime().UnixNano())
		}
		b.WriteByte(';')
	}
	return b.String()
}

// get returns be's tls.Config under cfg; current is the policy in force (an
// association established before a reload builds its config uncached).
func (c *backendTLSCache) get(cfg, current *policy.Config, be *policy.Backend) (*tls.Config, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cfg != c.cfg {
		if cfg != current {
			return backendTLSConfig(cfg.TLS.Profile, be)
		}
		c.cfg, c.m = cfg, map[*policy.Backend]backendTLSEntry{}
	}
	files := backendTLSFiles(be)
	if e, ok := c.m[be]; ok && e.files == files {
		return e.tc, nil
	}
	tc, err := backendTLSConfig(cfg.TLS.Profile, be)
	if err != nil {
		return nil, err
	}
	c.m[be] = backendTLSEntry{tc: tc, files: files}
	return tc, nil
}

func (c *backendTLSCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// backendTLSConfig builds the client side of the edge towards be: the
// tls.profile's versions, suites and groups (the same PS3.15 profile the
// listener enforces), be's roots, client certificate and server name.
func backendTLSConfig(profile string, be *policy.Backend) (*tls.Config, error) {
	t := be.TLS
	cfg, err := tlslayer.ClientConfig(profile)
	if err != nil {
		return nil, err
	}
	cfg.ServerName = t.ServerName
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(be.Address)
		if err != nil {
			return nil, err
		}
		cfg.ServerName = host
	}
	if len(t.CA) > 0 {
		pool := x509.NewCertPool()
		for _, f := range t.CA {
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("%s: no PEM certificate", f)
			}
		}
		cfg.RootCAs = pool
	}
	if t.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
