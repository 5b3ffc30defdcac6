package proxy

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
)

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
		n, err := r.cw.writeMessage(ctxID, rsp, r.clientMax)
		r.outBytes.Add(float64(n))
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
