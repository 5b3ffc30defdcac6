package inspect

import (
	"fmt"
	"slices"
	"strings"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/deid"
)

// decision is what becomes of a whole command's message.
type decision struct {
	forward bool
	next    State      // the stream's state after the command
	op      *op        // the request whose data set follows, if any
	filter  DataFilter // rewrites the data set that follows, if any
	deid    *deidOp    // de-identifies the data set that follows, if any
	command []byte     // the command set to send instead of the one received
}

// decide judges a complete command from st's side on ctx.
func (in *Inspector) decide(st *stream, ctx *Context, cmd *dimse.Command) (decision, *Violation) {
	f := cmd.CommandField
	switch {
	case f == dimse.CCancelRQ:
		return in.cancel(st, cmd)
	case !f.IsRequest():
		return in.response(st, ctx, cmd)
	case st.side == Requestor:
		return in.request(st, ctx, cmd)
	default:
		return in.reverseRequest(st, ctx, cmd)
	}
}

// dataSetAsDefined checks, for a message about to be forwarded, that it
// announces a data set exactly when its service has one: a data set the
// service does not define would reach the peer as bytes no request
// announced, a missing one leaves the peer waiting for it.
func dataSetAsDefined(st *stream, cmd *dimse.Command) *Violation {
	required, allowed := cmd.CommandField.DataSet()
	switch {
	case cmd.HasDataSet() && !allowed:
		return violation(st, association.AbortUnexpectedPDUParameter, "%s with a data set, which it does not have (PS3.7)", cmd.CommandField)
	case !cmd.HasDataSet() && required:
		return violation(st, association.AbortUnexpectedPDUParameter, "%s without the data set it requires (PS3.7)", cmd.CommandField)
	}
	return nil
}

// next is the state after a message's command: its data set, if it has one.
func next(cmd *dimse.Command, data State) State {
	if cmd.HasDataSet() {
		return data
	}
	return AwaitCommand
}

func (in *Inspector) filterFor(st *stream, cmd *dimse.Command, ctx *Context) DataFilter {
	if in.cfg.Filter == nil || !cmd.HasDataSet() {
		return nil
	}
	return in.cfg.Filter(st.side, cmd, *ctx)
}

// nService reports whether f acts on the Requested SOP Class and Instance
// (PS3.7 10.1: N-GET, N-SET, N-ACTION, N-DELETE).
func nService(f dimse.CommandField) bool {
	switch f {
	case dimse.NGetRQ, dimse.NSetRQ, dimse.NActionRQ, dimse.NDeleteRQ:
		return true
	}
	return false
}

func isCService(f dimse.CommandField) bool {
	switch f {
	case dimse.CStoreRQ, dimse.CFindRQ, dimse.CGetRQ, dimse.CMoveRQ, dimse.CEchoRQ:
		return true
	}
	return false
}

// names is the SOP class and instance a request's audit record names.
func names(cmd *dimse.Command) (class, instance string) {
	if nService(cmd.CommandField) {
		class, instance = cmd.RequestedSOPClassUID, cmd.RequestedSOPInstanceUID
		if class == "" {
			class = cmd.AffectedSOPClassUID
		}
		return class, instance
	}
	return cmd.SOPClassUID(), cmd.SOPInstanceUID()
}

// request judges a request of the requestor side against the policy:
// forwarded (and entered in the ledger), or refused by the edge with a
// failure status, its data set swallowed.
func (in *Inspector) request(st *stream, ctx *Context, cmd *dimse.Command) (decision, *Violation) {
	now := in.cfg.Now()
	o := in.ledger.newOp(st.side, ctx.ID, cmd, now)
	pol, rule := in.cfg.Policy, in.cfg.Rule
	status, why := dimse.StatusRefusedNotAuthorized, ""
	switch {
	case pol == nil:
		why = "no policy"
	case !pol.AllowsService(o.rec.Service):
		why = "service not allowed by rule " + rule
	case cmd.CommandField == dimse.CMoveRQ && !pol.AllowsMoveDestination(cmd.MoveDestination):
		why = fmt.Sprintf("move destination %q not allowed by rule %s", cmd.MoveDestination, rule)
	case cmd.AffectedSOPClassUID != "" && !pol.AllowsSOPClass(cmd.AffectedSOPClassUID):
		// The rule's sop_classes bind the command, not only the context
		// it travels on.
		why = fmt.Sprintf("SOP class %q not allowed by rule %s", cmd.AffectedSOPClassUID, rule)
	case cmd.RequestedSOPClassUID != "" && !pol.AllowsSOPClass(cmd.RequestedSOPClassUID):
		// N-GET, N-SET, N-ACTION and N-DELETE act on the Requested SOP
		// Class (PS3.7 10.1): it is bound as the Affected one is.
		why = fmt.Sprintf("requested SOP class %q not allowed by rule %s", cmd.RequestedSOPClassUID, rule)
	case isCService(cmd.CommandField) && cmd.AffectedSOPClassUID != ctx.AbstractSyntax:
		// PS3.7 9.1: a C-service's Affected SOP Class is the abstract syntax
		// of its presentation context. N-services may name a SOP class of a
		// Meta SOP Class context (PS3.4 H, print), so only the rule binds them.
		status = dimse.StatusSOPClassNotSupported
		why = fmt.Sprintf("SOP class %q is not the abstract syntax %q of presentation context %d",
			cmd.AffectedSOPClassUID, ctx.AbstractSyntax, ctx.ID)
	case in.cfg.Deidentify != nil && cmd.CommandField == dimse.CStoreRQ && !deid.Supported(ctx.TransferSyntax):
		status, why = statusCannotUnderstand, fmt.Sprintf("data sets in transfer syntax %s cannot be de-identified", ctx.TransferSyntax)
	case in.ledger.outstanding(Requestor, cmd.MessageID):
		// PS3.7 C.5.6: a Message ID already outstanding is a duplicate
		// invocation; forwarding it would hide one operation from the audit.
		status, why = dimse.StatusDuplicateInvocation, fmt.Sprintf("message ID %d already outstanding", cmd.MessageID)
	case in.ledger.count(Requestor) >= MaxOutstanding:
		status, why = dimse.StatusResourceLimitation, fmt.Sprintf("more than %d operations outstanding", MaxOutstanding)
	}
	if why != "" {
		if st.refused >= MaxOutstanding {
			// Refusals are answered once their PDU is judged: until then
			// they are outstanding too (PS3.7 D.3.3.3), and their answers,
			// built for the requestor's maximum length (as small as 7
			// bytes a PDU), are what the edge holds for them. Bounded
			// here, one PDU cannot make the edge build megabytes of replies.
			return decision{}, violation(st, association.AbortUnexpectedPDUParameter,
				"more than %d requests refused in one PDU", MaxOutstanding)
		}
		st.refused++
		in.refuse(st, ctx, cmd, o, status, why)
		return decision{next: next(cmd, DiscardDataSet)}, nil
	}
	if v := dataSetAsDefined(st, cmd); v != nil {
		return decision{}, v
	}
	if cmd.CommandField == dimse.CStoreRQ {
		in.scan(o, ctx)
	}
	in.ledger.add(o)
	st.added = append(st.added, o)
	d := decision{forward: true, next: next(cmd, InDataSet), filter: in.filterFor(st, cmd, ctx)}
	if cmd.HasDataSet() {
		d.op = o
	}
	if in.cfg.Deidentify != nil && cmd.CommandField == dimse.CStoreRQ && cmd.HasDataSet() {
		// Held until the transform has judged the data set's header.
		d.forward, d.filter = false, nil
		d.deid, _ = in.deidStart(st, ctx, cmd, o)
	}
	return d, nil
}

// refuse answers cmd with status in the edge's name; nothing of the
// request goes across.
func (in *Inspector) refuse(st *stream, ctx *Context, cmd *dimse.Command, o *op, status uint16, why string) {
	rsp := dimse.NewResponse(cmd, status)
	if cmd.CommandField == dimse.CGetRQ || cmd.CommandField == dimse.CMoveRQ {
		zero := uint16(0)
		rsp.NumberOfCompletedSuboperations, rsp.NumberOfFailedSuboperations, rsp.NumberOfWarningSuboperations = &zero, &zero, &zero
	}
	st.reply.close()
	_ = dimse.WriteMessage(appendWriter{&st.reply}, ctx.ID, rsp, nil, st.reply.max) // appending cannot fail
	o.status, o.responded, o.dataDone = status, true, true
	in.ledger.record(st, o, false, in.cfg.Now())
	st.notes = append(st.notes, Note{Msg: "DIMSE request refused", Args: []any{"request", cmd.CommandField.String(),
		"message_id", cmd.MessageID, "status", fmt.Sprintf("0x%04X", status), "why", why}})
}

// reverseRequest judges a request of the acceptor side: allowed when the
// negotiated roles let the acceptor invoke it (PS3.7 D.3.3.4: by default
// the requestor is the SCU; C-GET's C-STORE sub-operations need the
// requestor to have taken the SCP role), and N-EVENT-REPORT, which the SCP
// of a SOP class sends (PS3.4 J, storage commitment).
func (in *Inspector) reverseRequest(st *stream, ctx *Context, cmd *dimse.Command) (decision, *Violation) {
	f := cmd.CommandField
	switch {
	case !f.Known():
		return decision{}, violation(st, association.AbortUnexpectedPDUParameter, "unknown DIMSE command %s", f)
	case f != dimse.NEventReportRQ && !in.scp[ctx.AbstractSyntax]:
		return decision{}, violation(st, association.AbortUnexpectedPDUParameter,
			"%s on presentation context %d (%s), for which the requestor did not take the SCP role", f, ctx.ID, ctx.AbstractSyntax)
	case isCService(f) && cmd.AffectedSOPClassUID != ctx.AbstractSyntax:
		return decision{}, violation(st, association.AbortUnexpectedPDUParameter,
			"%s for SOP class %q on presentation context %d (%s)", f, cmd.AffectedSOPClassUID, ctx.ID, ctx.AbstractSyntax)
	case f == dimse.CStoreRQ && !in.ledger.has(Requestor, dimse.CGetRQ):
		// The acceptor stores on this association only as a C-GET's
		// sub-operation (PS3.4 C.4.3); the SCP role the requestor took for
		// it does not let the acceptor push instances at any other time.
		return decision{}, violation(st, association.AbortUnexpectedPDUParameter,
			"C-STORE-RQ (message %d) from the association acceptor with no C-GET outstanding", cmd.MessageID)
	case in.ledger.count(Acceptor) >= MaxOutstanding:
		return decision{}, violation(st, association.AbortUnexpectedPDUParameter, "more than %d operations outstanding", MaxOutstanding)
	}
	if v := dataSetAsDefined(st, cmd); v != nil {
		return decision{}, v
	}
	o := in.ledger.newOp(st.side, ctx.ID, cmd, in.cfg.Now())
	if f == dimse.CStoreRQ {
		o.rec.Detail = in.ledger.subOperationOf(cmd)
	}
	if f == dimse.CStoreRQ {
		in.scan(o, ctx)
	}
	if old := in.ledger.take(Acceptor, cmd.MessageID); old != nil {
		// The acceptor reused a message ID the requestor has not answered:
		// record the first as unanswered rather than lose it.
		in.ledger.unanswered(st, old, in.cfg.Now())
	}
	in.ledger.add(o)
	st.added = append(st.added, o)
	d := decision{forward: true, next: next(cmd, InDataSet), filter: in.filterFor(st, cmd, ctx)}
	if cmd.HasDataSet() {
		d.op = o
	}
	return d, nil
}

// cancel forwards a C-CANCEL-RQ only when it names an operation its sender
// has outstanding and, from the requestor, the rule allows C-CANCEL;
// PS3.7 9.3.2.3 gives it no data set and no response, so one carrying a
// data set is a violation and any other is dropped silently.
func (in *Inspector) cancel(st *stream, cmd *dimse.Command) (decision, *Violation) {
	if cmd.HasDataSet() {
		return decision{}, violation(st, association.AbortInvalidPDUParameterValue, "C-CANCEL-RQ with a data set")
	}
	why := ""
	switch {
	case st.side == Requestor && (in.cfg.Policy == nil || !in.cfg.Policy.AllowsService("C-CANCEL")):
		why = "C-CANCEL not allowed by rule " + in.cfg.Rule
	case !in.ledger.outstanding(st.side, cmd.MessageIDBeingRespondedTo):
		why = "no forwarded operation has this message ID"
	}
	if why != "" {
		st.notes = append(st.notes, Note{Msg: "C-CANCEL-RQ dropped",
			Args: []any{"message_id_being_responded_to", cmd.MessageIDBeingRespondedTo, "why", why}})
		return decision{next: AwaitCommand}, nil
	}
	return decision{forward: true, next: AwaitCommand}, nil
}

// response forwards a response only to a request the other side sent on
// this association and has not had its final response to, of the same
// service and on the same presentation context (PS3.7 9.3, 10.3).
func (in *Inspector) response(st *stream, ctx *Context, cmd *dimse.Command) (decision, *Violation) {
	o := in.ledger.get(st.side.Other(), cmd.MessageIDBeingRespondedTo)
	switch {
	case o == nil:
		return decision{}, violation(st, association.AbortUnexpectedPDUParameter,
			"%s answers message %d, which the other side has not sent or had answered", cmd.CommandField, cmd.MessageIDBeingRespondedTo)
	case cmd.CommandField != o.field.Response():
		return decision{}, violation(st, association.AbortUnexpectedPDUParameter,
			"%s answers message %d, a %s", cmd.CommandField, cmd.MessageIDBeingRespondedTo, o.field)
	case ctx.ID != o.ctx:
		return decision{}, violation(st, association.AbortUnexpectedPDUParameter,
			"%s on presentation context %d; its request came on %d", cmd.CommandField, ctx.ID, o.ctx)
	case dimse.ClassOf(cmd.Status) == dimse.ClassPending && !o.field.HasPending():
		// A pending response would keep the request open for any number
		// of answers.
		return decision{}, violation(st, association.AbortUnexpectedPDUParameter,
			"%s with pending status 0x%04X: %s has no pending responses", cmd.CommandField, cmd.Status, o.field.Service())
	}
	if v := dataSetAsDefined(st, cmd); v != nil {
		return decision{}, v
	}
	var rewritten []byte
	if o.field == dimse.CStoreRQ {
		rewritten = restoreUID(o, cmd)
	}
	if dimse.ClassOf(cmd.Status) != dimse.ClassPending {
		in.ledger.take(o.from, o.rec.MessageID)
		o.responded, o.status = true, cmd.Status
		if o.dataDone {
			in.ledger.record(st, o, true, in.cfg.Now())
		}
	}
	return decision{forward: true, next: next(cmd, InDataSet), filter: in.filterFor(st, cmd, ctx), command: rewritten}, nil
}

// subOperationOf says which C-GET a C-STORE-RQ of the acceptor belongs
// to (PS3.4 C.4.3): the Move Originator Message ID when it names one, else
// the C-GETs outstanding.
func (l *ledger) subOperationOf(cmd *dimse.Command) string {
	var gets []int
	for id, p := range l.ops[Requestor] {
		if p.field == dimse.CGetRQ {
			gets = append(gets, int(id))
		}
	}
	if g := l.ops[Requestor][cmd.MoveOriginatorMessageID]; g != nil && cmd.MoveOriginatorMessageID != 0 && g.field == dimse.CGetRQ {
		gets = []int{int(cmd.MoveOriginatorMessageID)}
	}
	slices.Sort(gets)
	switch len(gets) {
	case 1:
		return fmt.Sprintf("C-GET sub-operation of message %d", gets[0])
	}
	s := make([]string, len(gets))
	for i, g := range gets {
		s[i] = fmt.Sprint(g)
	}
	return "C-GET sub-operation of one of messages " + strings.Join(s, ", ")
}

// scan sets up the walk of a C-STORE data set's top level: its order is
// checked (PS3.5 7.1) whatever the audit wants; Patient ID and Study
// Instance UID are kept for the record when ScanPatientID is set.
func (in *Inspector) scan(o *op, ctx *Context) {
	o.scanner = dimse.NewPatientIDScanner(ctx.TransferSyntax)
	o.scanPatient = in.cfg.ScanPatientID
	if in.cfg.AllowUnsortedDataSets {
		o.scanner.SetOrder(dimse.OrderAllow)
	} else {
		o.scanner.SetOrder(dimse.OrderRefuse)
	}
}

// MalformedDataSet begins the account of a data set refused for its
// element order, in the association's abort record and the request's.
const MalformedDataSet = "malformed-data-set"

// UnsortedDataSet begins the note in the record of a data set a rule's
// allow_unsorted_data_sets let through out of order.
const UnsortedDataSet = "unsorted-data-set allowed"

// checkOrder acts on the order of o's data set once its scanner has met a
// pair of tags out of order: refused (the violation that aborts the
// association, before this fragment goes across), or, where the rule
// allows it, noted once in o's record.
func (in *Inspector) checkOrder(st *stream, o *op) *Violation {
	if o.orderNoted {
		return nil
	}
	what := o.scanner.DisorderText()
	if what == "" {
		return nil
	}
	o.orderNoted = true
	if in.cfg.AllowUnsortedDataSets {
		o.rec.Detail = joinDetail(o.rec.Detail, fmt.Sprintf("%s by rule %s: %s (PS3.5 7.1)", UnsortedDataSet, in.cfg.Rule, what))
		st.notes = append(st.notes, Note{Msg: "C-STORE data set out of tag order, allowed by the rule",
			Args: []any{"message_id", o.rec.MessageID, "tags", what}})
		return nil
	}
	msg := fmt.Sprintf("%s: %s in the C-STORE data set of message %d; top-level elements must be in strictly ascending tag order, each tag once (PS3.5 7.1)",
		MalformedDataSet, what, o.rec.MessageID)
	o.rec.Detail = joinDetail(o.rec.Detail, MalformedDataSet+": "+what)
	in.ledger.record(st, o, false, in.cfg.Now())
	return violation(st, association.AbortInvalidPDUParameterValue, "%s", msg)
}
