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

	last    atomic.Int64 // unix nanos of the last PDU in either direction (idle timer)
	endOnce sync.Once
	outcome endOutcome
	ended   atomic.Bool

	inBytes, outBytes prometheus.Counter
	trace             bool // PDU detail at trace level, decided once
}

type pcInfo struct {
	abstract, transfer string
}

// pendingOp is one forwarded client request, for the dimse audit record.
type pendingOp struct {
	service, sopClass, sopInstance, moveDest string
	msgID                                    uint16
	start                                    time.Time
	bytes                                    int64
	scanner                                  *dimse.PatientIDScanner
	detail                                   string // e.g. which C-GET a sub-operation belongs to
}

func (r *relay) run(ctx context.Context, artimDeadline time.Time) {
	c, rq := r.c, r.c.rq
	be := r.d.Backend
	if be == nil {
		c.reject(r.d.Rule, association.RejectTransient, association.RejectSourceServiceProviderPresentation,
			association.RejectPresentationTemporaryCongestion, "")
		return
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
		return
	}

	b, bh, err := r.dial(ctx, be, artimDeadline)
	if err != nil {
		c.log.Warn("backend unreachable", "address", be.Address, "error", err)
		c.reject(r.d.Rule, association.RejectTransient, association.RejectSourceServiceProviderPresentation,
			association.RejectPresentationTemporaryCongestion, "backend-unreachable")
		return
	}
	r.b, r.bh = b, bh
	defer b.Close()
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
		return
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
		return
	}
	switch p := p.(type) {
	case *association.AssociateAC:
		r.accepted(rq, p, removed)
	case *association.AssociateRJ:
		// The backend's own decision goes back unchanged.
		c.log.Info("backend rejected the association", "result", p.Result, "source", p.Source, "reason", p.ReasonName())
		c.reject(r.d.Rule, p.Result, p.Source, p.Reason, "")
	case *association.Abort:
		c.sendAbort(c.tc, association.AbortSourceServiceProvider, association.AbortReasonNotSpecified)
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
}

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

// accepted relays the backend's AC to the client and pumps PDUs until the
// association ends.
func (r *relay) accepted(rq *association.AssociateRQ, ac *association.AssociateAC, removed map[uint8]bool) {
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
		return
	}
	if err := r.cw.write(&cac); err != nil {
		c.sendAbort(r.b, association.AbortSourceServiceProvider, association.AbortReasonNotSpecified)
		c.log.Info("write A-ASSOCIATE-AC to the client failed", "error", err)
		return
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
	c.pre.wait = newWaitHook(c.raw, func() {
		_ = r.bw.flush() // a failure is sticky: the next write reports it
		r.cr.Release()
	})
	r.bh.wait = newWaitHook(r.bh.Conn, func() {
		_ = r.cw.flush()
		r.br.Release()
	})
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

// abortBoth sends A-ABORT (service provider) to both sides and closes them.
func (r *relay) abortBoth(why string) {
	if r.end(endOutcome{abortSource: "service-provider", abortReason: why}) {
		r.abortTo(r.bw, association.AbortReasonNotSpecified)
		r.abortTo(r.cw, association.AbortReasonNotSpecified)
	}
	r.closeBoth()
}

func (r *relay) abortTo(w *pduWriter, reason association.AbortReason) {
	w.abort(association.AbortSourceServiceProvider, reason)
}

func (r *relay) closeBoth() {
	r.b.Close()
	r.c.raw.Close()
}

// pumpClient forwards client PDUs to the backend (conn's goroutine).
func (r *relay) pumpClient() {
	c := r.c
	asm := &dimse.Assembler{}
	st := &clientState{}
	_ = c.tc.SetReadDeadline(time.Now().Add(r.idle()))
	for {
		at := c.in.n.Load()
		typ, raw, err := r.cr.Next()
		if err != nil {
			if r.ended.Load() {
				return
			}
			// Only a timeout between PDUs may be resumed; inside one the
			// stream position is lost, and a peer stalled mid-PDU that long
			// is dead anyway.
			if isTimeout(err) && c.in.n.Load() == at && !r.idleExpired(c.tc) {
				continue
			}
			r.sideFailed("client", err, r.cw, r.bw)
			return
		}
		r.touch()
		_ = c.tc.SetReadDeadline(time.Now().Add(r.idle()))
		r.inBytes.Add(float64(len(raw)))
		if r.trace {
			c.log.Trace("PDU", "from", "client", "type", typ, "length", len(raw))
		}
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
			if r.end(endOutcome{abortSource: "client:" + src, abortReason: reason}) {
				_ = r.bw.writeRaw(raw) // A-ABORT carried through
			}
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
		} else if !r.allow(p.ContextID, cmd, st) {
			modified = true
			return nil
		}
		if len(held) > 0 {
			// Send what came before, then the held fragments in their own
			// PDU (together they could exceed what the backend accepts).
			modified = true
			for _, pdvs := range [][]association.PDV{out, held} {
				if len(pdvs) == 0 {
					continue
				}
				if err := r.bw.write(&association.PDataTF{PDVs: pdvs}); err != nil {
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
// the audit) or refused with 0x0124 by the edge itself.
func (r *relay) allow(ctxID uint8, cmd *dimse.Command, st *clientState) bool {
	c := r.c
	service := cmd.CommandField.Service()
	if cmd.CommandField == dimse.CCancelRQ {
		return true // cancels a request already allowed
	}
	reason := ""
	switch {
	case !r.d.AllowsService(service):
		reason = "service not allowed by rule " + r.d.Rule
	case cmd.CommandField == dimse.CMoveRQ && !r.d.AllowsMoveDestination(cmd.MoveDestination):
		reason = fmt.Sprintf("move destination %q not allowed by rule %s", cmd.MoveDestination, r.d.Rule)
	}
	op := &pendingOp{service: service, sopClass: cmd.SOPClassUID(), sopInstance: cmd.AffectedSOPInstanceUID,
		moveDest: cmd.MoveDestination, msgID: cmd.MessageID, start: time.Now()}
	if reason != "" {
		rsp := dimse.NewResponse(cmd, dimse.StatusRefusedNotAuthorized)
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
		c.log.Info("DIMSE request refused", "request", cmd.CommandField.String(), "message_id", cmd.MessageID, "why", reason)
		r.auditDIMSE(op, dimse.StatusRefusedNotAuthorized, false)
		return false
	}
	if cmd.CommandField == dimse.CStoreRQ && c.s.Audit != nil && r.cfg.Audit.PatientIDs != "omit" {
		op.scanner = dimse.NewPatientIDScanner(r.contexts[ctxID].transfer)
	}
	if cmd.HasDataSet() {
		st.current = op
	}
	r.mu.Lock()
	r.pending[cmd.MessageID] = op
	r.mu.Unlock()
	c.log.Trace("DIMSE request", "request", cmd.CommandField.String(), "message_id", cmd.MessageID, "sop_class", op.sopClass)
	return true
}

func (r *relay) auditDIMSE(op *pendingOp, status uint16, allowed bool) {
	c := r.c
	c.s.Metrics.DIMSERequests.WithLabelValues(op.service, dimse.ClassOf(status).String()).Inc()
	if c.s.Audit == nil {
		return
	}
	e := c.event(audit.EventDIMSE)
	e.Service, e.SOPClass, e.SOPInstance, e.MessageID = op.service, op.sopClass, op.sopInstance, int(op.msgID)
	e.Status, e.MoveDestination, e.Bytes, e.MS = statusHex(status), op.moveDest, op.bytes, time.Since(op.start).Milliseconds()
	e.Allowed = audit.Bool(allowed)
	e.Detail = op.detail
	if op.scanner != nil {
		if id, ok := op.scanner.PatientID(); ok {
			e.PatientID = c.s.Audit.PatientID(id)
		}
	}
	c.s.auditEvent(e)
}

// pumpBackend forwards backend PDUs to the client (its own goroutine).
func (r *relay) pumpBackend() {
	c := r.c
	asm := &dimse.Assembler{}
	st := &backendState{}
	_ = r.b.SetReadDeadline(time.Now().Add(r.idle()))
	for {
		at := r.bin.n.Load()
		typ, raw, err := r.br.Next()
		if err != nil {
			if r.ended.Load() {
				return
			}
			if isTimeout(err) && r.bin.n.Load() == at && !r.idleExpired(r.b) {
				continue
			}
			r.sideFailed("backend", err, r.bw, r.cw)
			return
		}
		r.touch()
		_ = r.b.SetReadDeadline(time.Now().Add(r.idle()))
		if r.trace {
			c.log.Trace("PDU", "from", "backend", "type", typ, "length", len(raw))
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
			if r.end(endOutcome{abortSource: "backend:" + src, abortReason: reason}) {
				// The backend's abort reaches the client from the edge, the
				// client's UL provider.
				r.abortTo(r.cw, association.AbortReasonNotSpecified)
			}
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
		msgID: cmd.MessageID, start: time.Now()}
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
	if old := r.subOps[cmd.MessageID]; old != nil {
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
	r.mu.Lock()
	op := r.subOps[cmd.MessageIDBeingRespondedTo]
	delete(r.subOps, cmd.MessageIDBeingRespondedTo)
	r.mu.Unlock()
	if op != nil {
		r.auditDIMSE(op, cmd.Status, true)
	}
}

// auditUnanswered records a sub-operation whose data went to the client
// but which the client never answered: no status.
func (r *relay) auditUnanswered(op *pendingOp) {
	c := r.c
	if c.s.Audit == nil {
		return
	}
	e := c.event(audit.EventDIMSE)
	e.Service, e.SOPClass, e.SOPInstance, e.MessageID = op.service, op.sopClass, op.sopInstance, int(op.msgID)
	e.Bytes, e.MS, e.Allowed = op.bytes, time.Since(op.start).Milliseconds(), audit.Bool(true)
	e.Detail = op.detail + "; no C-STORE-RSP from the client"
	if op.scanner != nil {
		if id, ok := op.scanner.PatientID(); ok {
			e.PatientID = c.s.Audit.PatientID(id)
		}
	}
	c.s.auditEvent(e)
}

// backendResponse matches a backend response to the client's request; the
// final (non-pending) one completes the dimse audit record.
func (r *relay) backendResponse(cmd *dimse.Command) {
	cls := dimse.ClassOf(cmd.Status)
	if cls == dimse.ClassPending {
		return
	}
	r.mu.Lock()
	op := r.pending[cmd.MessageIDBeingRespondedTo]
	delete(r.pending, cmd.MessageIDBeingRespondedTo)
	r.mu.Unlock()
	if op == nil {
		return // a response to a backend request (C-GET sub-operation) or unknown
	}
	r.auditDIMSE(op, cmd.Status, true)
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
	if r.end(endOutcome{abortSource: side, abortReason: reason, err: err}) {
		if reason == "idle-timeout" {
			r.abortTo(failed, association.AbortReasonNotSpecified)
		}
		r.abortTo(other, association.AbortReasonNotSpecified)
	}
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
	if r.end(endOutcome{abortSource: "service-provider", abortReason: side + ":" + ab.Reason.String(), err: err}) {
		r.abortTo(failed, ab.Reason)
		r.abortTo(other, association.AbortReasonNotSpecified)
	}
	r.closeBoth()
}

func (r *relay) finish() {
	c := r.c
	o := r.outcome
	r.mu.Lock()
	left := make([]*pendingOp, 0, len(r.subOps))
	for _, op := range r.subOps {
		left = append(left, op)
	}
	r.subOps = nil
	r.mu.Unlock()
	sort.Slice(left, func(i, j int) bool { return left[i].msgID < left[j].msgID })
	for _, op := range left {
		r.auditUnanswered(op)
	}
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
	tcfg, err := backendTLSConfig(be)
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

// backendTLSConfigs caches one tls.Config per backend block; a reload makes
// new *policy.Backend values, so the cache never serves a stale block.
var backendTLSConfigs sync.Map // *policy.Backend → *tls.Config

func backendTLSConfig(be *policy.Backend) (*tls.Config, error) {
	if v, ok := backendTLSConfigs.Load(be); ok {
		return v.(*tls.Config), nil
	}
	t := be.TLS
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
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
	v, _ := backendTLSConfigs.LoadOrStore(be, cfg)
	return v.(*tls.Config), nil
}
