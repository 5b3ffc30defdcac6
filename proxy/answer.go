package proxy

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/proxy/inspect"
)

// answerer is the answer path: the edge is the SCP (Verification only).
type answerer struct {
	c    *conn
	cfg  *policy.Config
	r    *association.Reader
	rule string

	w        *pduWriter
	contexts map[uint8]string // accepted context id → abstract syntax
	syntaxes map[uint8]string // accepted context id → transfer syntax
	// in is the store-and-forward side (C-STORE into the spool); nil on a
	// plain answer rule, which serves Verification only.
	in      *ingest
	peerMax uint32
	stopped atomic.Bool // aborted by Shutdown
}

// run is the association's life. Negotiation and the A-ASSOCIATE-AC run
// in accept's frame, which has returned before the association waits for
// its first request: the goroutine then waits on a shallow stack, which the
// GC shrinks, so an idle answered association holds less.
func (a *answerer) run() {
	if a.accept() {
		a.serveAndFinish()
	}
}

// accept negotiates, sends the A-ASSOCIATE-AC (or refuses) and audits it;
// false: the association did not come up.
func (a *answerer) accept() bool {
	c, rq := a.c, a.c.rq
	if rj := association.CheckRQ(rq); rj != nil {
		c.reject(a.rule, rj.Result, rj.Source, rj.Reason, "")
		return false
	}
	acc := association.Acceptor{
		AbstractSyntaxes: []string{association.VerificationSOPClass},
		// Explicit VR LE first: it carries VRs, so nothing depends on a data dictionary.
		TransferSyntaxes: []string{association.ExplicitVRLittleEndian, association.ImplicitVRLittleEndian},
		// PS3.7 D.3.3.4: the edge may be the SCP of Verification; it never
		// acts as SCU, so a proposed SCP role for the requestor is refused.
		Roles: map[string]association.RoleSelection{
			association.VerificationSOPClass: {SOPClassUID: association.VerificationSOPClass, SCU: true, SCP: false},
		},
	}
	if a.in != nil {
		acc = a.in.acceptor(rq)
	}
	pcs, roles := acc.Negotiate(rq)
	ac := &association.AssociateAC{
		ProtocolVersion: 1,
		// PS3.8 9.3.3: the AC's AE title fields echo the RQ's (the edge may
		// answer under any called AE title a rule matched, not only its own).
		CalledAE:             rq.CalledAE,
		CallingAE:            rq.CallingAE,
		ApplicationContext:   association.DICOMApplicationContext,
		PresentationContexts: pcs,
		UserInfo: association.UserInfo{
			MaxLength:                 a.cfg.Edge.MaxPDULength,
			HasMaxLength:              true,
			ImplementationClassUID:    association.ImplementationClassUID,
			ImplementationVersionName: association.ImplementationVersionName,
			RoleSelections:            roles,
		},
	}
	if rq.UserInfo.AsyncOps != nil {
		// PS3.7 D.3.3.3: operations are performed one at a time.
		ac.UserInfo.AsyncOps = &association.AsyncOpsWindow{MaxInvoked: 1, MaxPerformed: 1}
	}
	a.contexts = map[uint8]string{}
	a.syntaxes = map[uint8]string{}
	var accepted []string
	for _, pc := range pcs {
		if pc.Result == association.PCAcceptance {
			for _, p := range rq.PresentationContexts {
				if p.ID == pc.ID {
					a.contexts[pc.ID] = p.AbstractSyntax
					a.syntaxes[pc.ID] = pc.TransferSyntax
					accepted = appendUnique(accepted, p.AbstractSyntax)
				}
			}
		}
	}
	a.peerMax = rq.UserInfo.MaxLength
	a.w = &pduWriter{c: c.tc, timeout: a.idle()}
	if !c.establish(a.w, func() {
		a.stopped.Store(true)
		a.abort(association.AbortSourceServiceProvider, association.AbortReasonNotSpecified)
	}) {
		return false // shutting down
	}
	if err := a.w.write(ac); err != nil {
		c.log.Info("write A-ASSOCIATE-AC failed", "error", err)
		return false
	}
	action := "answer"
	e := c.event(audit.EventAccepted)
	if a.in != nil {
		// A store-and-forward rule is a relay rule whose association the
		// edge receives itself.
		action, e.Backend = "relay", a.in.d.Backend.Name
	}
	c.s.Metrics.Associations.WithLabelValues(action, a.rule).Inc()
	e.Rule, e.Action, e.Contexts, e.UserIdentity = a.rule, action, accepted, userIdentity(rq)
	c.s.auditEvent(e)
	c.log.Trace("A-ASSOCIATE-AC", "accepted", len(accepted), "proposed", len(rq.PresentationContexts))
	return true
}

func (a *answerer) serveAndFinish() {
	c := a.c
	outcome := a.serve()
	if a.stopped.Load() && !outcome.released {
		// Shutdown aborted it: a failed read or a write cut short is only
		// the consequence.
		outcome.abortSource, outcome.abortReason = sourceEdge, reasonShutdown
	}
	if outcome.abortSource == sourceEdge && !a.stopped.Load() {
		// PS3.8 AA-1/Sta13: after our A-ABORT, wait (bounded) for the peer
		// to close, so it reads the A-ABORT rather than a reset.
		c.waitPeerClose(c.tc)
	}
	a.finish(outcome)
}

func (a *answerer) idle() time.Duration { return a.cfg.Edge.Idle() }

// serve runs the established association until release or abort.
func (a *answerer) serve() endOutcome {
	c := a.c
	asm := &dimse.Assembler{}
	// inData: a request announced a data set whose last fragment has not
	// come yet (on a plain answer rule its PDVs are read and dropped).
	var inData bool
	for {
		_ = c.tc.SetReadDeadline(time.Now().Add(a.idle()))
		a.r.Release() // nothing of the last PDU is used now: an idle association holds no PDU buffer
		typ, raw, err := a.r.Next()
		if err != nil {
			if a.stopped.Load() {
				return endOutcome{abortSource: sourceEdge, abortReason: reasonShutdown, err: err}
			}
			return a.readFailed(err)
		}
		if typ == association.TypePDataTF {
			if n := lastCommandFragments(raw[association.HeaderLen:]); n > inspect.MaxOutstanding {
				// Every message of a PDU is sent before the requestor can
				// have read an answer to the first, where one operation at a
				// time was negotiated (PS3.7 D.3.3.3). Bounded as on a relay,
				// one PDU of requests cannot make the edge build, write and
				// audit thousands of answers (each in one-byte PDVs to a
				// requestor that announced 7 bytes): A-ABORT (2, 5) before
				// any is answered.
				return a.protocolAbort(&association.ProtocolError{Reason: association.AbortUnexpectedPDUParameter,
					Msg: fmt.Sprintf("more than %d messages in one PDU", inspect.MaxOutstanding)})
			}
			// Walk the PDVs in place: decoding them into a slice would cost a
			// 32-byte PDV per 6-byte item of a hostile PDU.
			var end endOutcome
			var ended bool
			err := association.EachPDV(raw[association.HeaderLen:], func(pdv association.PDV) error {
				if end, ended = a.onPDV(pdv, asm, &inData); ended {
					return errStopPDVs
				}
				return nil
			})
			if ended {
				return end
			}
			if err != nil {
				return a.readFailed(err) // malformed PDV items: a ProtocolError, so an A-ABORT
			}
			continue
		}
		p, err := association.Decode(typ, raw[association.HeaderLen:])
		if err != nil {
			return a.readFailed(err)
		}
		switch p := p.(type) {
		case *association.ReleaseRQ:
			if asm.Pending() || inData || (a.in != nil && a.in.cur != nil) {
				// PS3.8 Sta6: releasing in the middle of a DIMSE message would
				// truncate it; a normal release would tell the requestor the
				// association ended cleanly while its message (a C-STORE data
				// set that is then dropped) never completed. A-ABORT (2, 2),
				// as on a relay.
				return a.protocolAbort(&association.ProtocolError{Reason: association.AbortUnexpectedPDU,
					Msg: "A-RELEASE-RQ in the middle of a DIMSE message"})
			}
			if err := a.w.write(&association.ReleaseRP{}); err != nil {
				return endOutcome{abortSource: "client", abortReason: reasonConnError, err: err}
			}
			c.waitPeerClose(c.tc)
			return endOutcome{released: true}
		case *association.Abort:
			return endOutcome{abortSource: peerAborted("client", p.Source), abortReason: abortReason(p.Reason.String())}
		default:
			// PS3.8 state machine, Sta6: A-ASSOCIATE-RQ/AC/RJ or A-RELEASE-RP
			// from the requestor are unexpected (AA-8: A-ABORT source 2).
			a.abort(association.AbortSourceServiceProvider, association.AbortUnexpectedPDU)
			return endOutcome{abortSource: sourceEdge, abortReason: protocolReason("client", association.AbortUnexpectedPDU),
				err: fmt.Errorf("unexpected %v in an established association", p.Type())}
		}
	}
}

var errStopPDVs = errors.New("stop")

// lastCommandFragments counts the PDVs of a P-DATA-TF body that end a
// command set: the messages it carries. Malformed items stop the count;
// the walk that follows reports them.
func lastCommandFragments(body []byte) int {
	n := 0
	_ = association.EachPDV(body, func(pdv association.PDV) error {
		if pdv.Command && pdv.Last {
			n++
		}
		return nil
	})
	return n
}

// onPDV handles one PDV of a P-DATA-TF; stop reports that the association
// ended with out.
func (a *answerer) onPDV(pdv association.PDV, asm *dimse.Assembler, inData *bool) (out endOutcome, stop bool) {
	c := a.c
	if _, ok := a.contexts[pdv.ContextID]; !ok {
		// PS3.8 9.3.5: PDVs must use an accepted presentation context.
		a.abort(association.AbortSourceServiceProvider, association.AbortInvalidPDUParameterValue)
		return endOutcome{abortSource: sourceEdge, abortReason: protocolReason("client", association.AbortInvalidPDUParameterValue),
			err: fmt.Errorf("PDV on presentation context %d which was not accepted", pdv.ContextID)}, true
	}
	if !pdv.Command && a.in != nil {
		if _, _, err := asm.Add(pdv); err != nil {
			return a.protocolAbort(err), true
		}
		if err := a.in.data(pdv); err != nil {
			return a.protocolAbort(err), true
		}
		if pdv.Last {
			*inData = false
		}
		return endOutcome{}, false
	}
	if !pdv.Command {
		if !*inData && c.log.IsTrace() { // the call's arguments allocate even when not logged
			c.log.Trace("data PDV without a request that takes one; ignored", "context", pdv.ContextID)
		}
		if pdv.Last {
			*inData = false
		}
		return endOutcome{}, false
	}
	if *inData || (a.in != nil && a.in.cur != nil) {
		// PS3.8 E.2, PS3.7 6.3.1: a message's data set follows its command
		// to its last fragment before the next command. Answering a request
		// sent inside a C-STORE data set would interleave two operations
		// where one at a time was negotiated, and a data set that then
		// "continues" could be another message's. A-ABORT (2, 5), as on a
		// relay.
		return a.protocolAbort(&association.ProtocolError{Reason: association.AbortUnexpectedPDUParameter,
			Msg: "command PDV before the data set in progress has its last fragment"}), true
	}
	cmd, done, err := asm.Add(pdv)
	if err != nil {
		// A command set we cannot parse: the peer must hear about it.
		a.abort(association.AbortSourceServiceProvider, association.AbortInvalidPDUParameterValue)
		return endOutcome{abortSource: sourceEdge, abortReason: protocolReason("client", association.AbortInvalidPDUParameterValue), err: err}, true
	}
	if !done {
		return endOutcome{}, false
	}
	*inData = cmd.HasDataSet()
	if a.in != nil && cmd.CommandField == dimse.CStoreRQ {
		if err := a.in.begin(pdv.ContextID, cmd, a.syntaxes[pdv.ContextID]); err != nil {
			return a.protocolAbort(err), true
		}
		return endOutcome{}, false
	}
	if err := a.handle(pdv.ContextID, cmd); err != nil {
		return endOutcome{abortSource: "client", abortReason: reasonConnError, err: err}, true
	}
	return endOutcome{}, false
}

// protocolAbort ends the association for a protocol error of the
// requestor's (A-ABORT, source 2, the error's reason); a write error
// returned by a response ends it as a connection error.
func (a *answerer) protocolAbort(err error) endOutcome {
	var pe *association.ProtocolError
	if !errors.As(err, &pe) {
		return endOutcome{abortSource: "client", abortReason: reasonConnError, err: err}
	}
	a.abort(association.AbortSourceServiceProvider, pe.Reason)
	return endOutcome{abortSource: sourceEdge, abortReason: protocolReason("client", pe.Reason), detail: err.Error(), err: err}
}

// handle answers one complete DIMSE request.
func (a *answerer) handle(ctxID uint8, cmd *dimse.Command) error {
	c := a.c
	if !cmd.CommandField.IsRequest() {
		c.log.Debug("DIMSE response from the requestor ignored", "command", cmd.CommandField.String())
		return nil
	}
	if cmd.CommandField == dimse.CCancelRQ {
		// PS3.7 9.3.2.3: C-CANCEL has no response; a C-ECHO is answered at
		// once, so there is never an operation left to cancel.
		c.log.Debug("C-CANCEL-RQ ignored: no operation outstanding", "message_id", cmd.MessageIDBeingRespondedTo)
		return nil
	}
	start := time.Now()
	var rsp *dimse.Command
	if cmd.CommandField == dimse.CEchoRQ {
		rsp = dimse.VerificationResponse(cmd)
	} else {
		rsp = dimse.NewResponse(cmd, dimse.StatusUnrecognizedOperation)
	}
	if err := a.writeMessage(ctxID, rsp); err != nil {
		return err
	}
	service := cmd.CommandField.Service()
	c.s.Metrics.DIMSERequests.WithLabelValues(service, dimse.ClassOf(rsp.Status).String()).Inc()
	e := c.event(audit.EventDIMSE)
	e.Service, e.SOPClass, e.SOPInstance = service, cmd.SOPClassUID(), cmd.AffectedSOPInstanceUID
	e.MessageID, e.Status = int(cmd.MessageID), statusHex(rsp.Status)
	e.MS, e.Allowed = time.Since(start).Milliseconds(), audit.Bool(cmd.CommandField == dimse.CEchoRQ)
	c.s.auditEvent(e)
	c.log.Trace("DIMSE", "request", cmd.CommandField.String(), "status", statusHex(rsp.Status))
	return nil
}

func (a *answerer) writeMessage(ctxID uint8, cmd *dimse.Command) error {
	_, err := a.w.writeMessage(ctxID, cmd, clampMax(a.peerMax, a.cfg.Edge.MaxPDULength))
	return err
}

// readFailed maps a read error in an established association to the PS3.8
// action: a protocol error gets the codec's A-ABORT, the idle timer an
// A-ABORT (reason not specified), a dropped connection nothing.
func (a *answerer) readFailed(err error) endOutcome {
	var pe *association.ProtocolError
	switch {
	case errors.As(err, &pe):
		ab := association.AbortFor(err)
		a.abort(ab.Source, ab.Reason)
		return endOutcome{abortSource: sourceEdge, abortReason: protocolReason("client", ab.Reason), err: err}
	case isTimeout(err):
		a.abort(association.AbortSourceServiceProvider, association.AbortReasonNotSpecified)
		return endOutcome{abortSource: sourceEdge, abortReason: reasonIdle, err: err}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return endOutcome{abortSource: "client", abortReason: reasonClosed, err: err}
	default:
		return endOutcome{abortSource: "client", abortReason: reasonConnError, err: err}
	}
}

func (a *answerer) abort(src association.AbortSource, reason association.AbortReason) {
	a.w.abort(src, reason)
}

func (a *answerer) finish(o endOutcome) {
	c := a.c
	if a.in != nil {
		a.in.close()
	}
	name := audit.EventReleased
	if !o.released {
		name = audit.EventAborted
	}
	in, out := c.bytesIn(), a.w.bytes.Load()
	c.s.Metrics.RelayBytes.WithLabelValues("in").Add(float64(in))
	c.s.Metrics.RelayBytes.WithLabelValues("out").Add(float64(out))
	e := c.event(name)
	e.Rule = a.rule
	if a.in != nil {
		e.Backend = a.in.d.Backend.Name
	}
	e.BytesIn, e.BytesOut, e.MS = in, out, time.Since(c.start).Milliseconds()
	e.AbortSource, e.AbortReason, e.Detail = string(o.abortSource), string(o.abortReason), o.detail
	c.s.auditEvent(e)
	decision := "answer"
	if a.in != nil {
		decision = "store-and-forward"
	}
	c.log.Info("association ended", o.logArgs("decision", decision, "rule", a.rule, "end", name,
		"bytes_in", in, "bytes_out", out, "duration", time.Since(c.start))...)
}

func statusHex(s uint16) string { return fmt.Sprintf("0x%04X", s) }

func userIdentity(rq *association.AssociateRQ) *audit.UserIdentity {
	u := rq.UserInfo.UserIdentityRQ
	if u == nil {
		return nil
	}
	// PS3.7 D.3.3.7: 1 username, 2 username+passcode, 3 Kerberos, 4 SAML, 5 JWT.
	// Only a user name is recorded; never the passcode, ticket or token.
	ui := &audit.UserIdentity{}
	ui.Type = u.Type.String()
	if u.Type == association.UserIdentityUsername || u.Type == association.UserIdentityUsernamePasscode {
		ui.User = audit.Clip(string(u.Primary), maxAuditUser, "...")
	}
	return ui
}

// maxAuditUser bounds the user name an association's record carries: the
// client writes it (up to 65,535 bytes, PS3.7 D.3.3.7), and every one of
// its associations would otherwise put that much in the trail. No rule
// matches on it.
const maxAuditUser = 512

// appendUnique adds s to the audit's list of accepted abstract syntaxes
// once: callers such as storescu propose each SOP class in several
// presentation contexts (one per transfer syntax), and the audit's
// `contexts` lists abstract syntaxes, not context IDs (docs/audit.md).
func appendUnique(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}
