package proxy

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/deid"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/proxy/inspect"
	"github.com/dicomedge/dicomedge/spool"
)

// ingest is the store-and-forward side of the answer path: on a rule with
// store_and_forward (or a DICOMweb backend) the edge is the backend's
// stand-in, and each C-STORE data set streams into the spool, PDV by PDV,
// through a bounded buffer. Success is answered only once the instance is
// durable; anything that stops it from being written is 0xA700.
type ingest struct {
	a   *answerer
	sp  *spool.Spool
	d   policy.Decision
	cur *storeOp // the C-STORE whose data set is arriving
}

// storeOp is one C-STORE in progress.
type storeOp struct {
	cmd   *dimse.Command
	ctxID uint8
	w     *spool.Writer
	// deid, on a de-identified rule, rewrites the data set on its way to
	// the spool: the original PHI is never at rest in the spool.
	deid *deid.Transformer
	out  []byte // the transform's output, reused
	// scan walks the data set's top level as received: Patient ID and
	// Study Instance UID for the record, and its tag order (PS3.5 7.1),
	// refused as on a relay unless the rule allows unsorted data sets.
	scan       *dimse.PatientIDScanner
	orderNoted bool
	status     uint16
	why        string // why status is a failure, for the log and audit
	note       string // for the record, whatever the status
	start      time.Time
	bytes      int64
}

// Non-storage abstract syntaxes a store-and-forward association never
// accepts: the Query/Retrieve and Worklist information models (PS3.4 C, K)
// and the SOP classes of N-services (Storage Commitment and the like,
// PS3.4 J, under 1.2.840.10008.1.20 and 1.2.840.10008.3.1.2).
var nonStoragePrefixes = []string{"1.2.840.10008.5.1.4.1.2.", "1.2.840.10008.5.1.4.31", "1.2.840.10008.1.20.", "1.2.840.10008.3.1.2.", "1.2.840.10008.5.1.4.33"}

// acceptor is what a store-and-forward association accepts: Verification
// and every storage SOP class the rule allows, each in the first transfer
// syntax the requestor proposes (the spool keeps the data set as it came;
// the forwarder proposes the same syntax to the backend).
func (in *ingest) acceptor(rq *association.AssociateRQ) association.Acceptor {
	acc := association.Acceptor{
		AbstractSyntaxes: []string{association.VerificationSOPClass},
		Roles: map[string]association.RoleSelection{
			association.VerificationSOPClass: {SOPClassUID: association.VerificationSOPClass, SCU: true, SCP: false},
		},
	}
	seenTS := map[string]bool{}
	for _, pc := range rq.PresentationContexts {
		for _, ts := range pc.TransferSyntaxes {
			if in.d.Deidentify != nil && !deid.Supported(ts) {
				continue
			}
			if !seenTS[ts] {
				seenTS[ts] = true
				acc.TransferSyntaxes = append(acc.TransferSyntaxes, ts)
			}
		}
		as := pc.AbstractSyntax
		if as == association.VerificationSOPClass || !in.d.AllowsSOPClass(as) || nonStorage(as) {
			continue
		}
		if in.d.Deidentify != nil && !anySupported(pc.TransferSyntaxes) {
			// A data set the transform cannot read is refused in the
			// negotiation (no transfer syntax), not after it arrived.
			continue
		}
		acc.AbstractSyntaxes = append(acc.AbstractSyntaxes, as)
		// PS3.4 B.2.2: the edge is only ever the Storage SCP here.
		acc.Roles[as] = association.RoleSelection{SOPClassUID: as, SCU: true, SCP: false}
	}
	return acc
}

func anySupported(tss []string) bool {
	for _, ts := range tss {
		if deid.Supported(ts) {
			return true
		}
	}
	return false
}

func nonStorage(uid string) bool {
	for _, p := range nonStoragePrefixes {
		if strings.HasPrefix(uid, p) {
			return true
		}
	}
	return false
}

// begin starts a C-STORE: checks it, then opens its spool file. A refused
// request still has its data set read (and dropped) before the response.
func (in *ingest) begin(ctxID uint8, cmd *dimse.Command, ts string) error {
	a := in.a
	if in.cur != nil {
		return &association.ProtocolError{Reason: association.AbortUnexpectedPDUParameter, Msg: "C-STORE-RQ before the previous data set ended"}
	}
	if !cmd.HasDataSet() {
		return &association.ProtocolError{Reason: association.AbortUnexpectedPDUParameter, Msg: "C-STORE-RQ without a data set"}
	}
	op := &storeOp{cmd: cmd, ctxID: ctxID, start: time.Now(), scan: dimse.NewPatientIDScanner(ts)}
	if in.d.AllowUnsortedDataSets {
		op.scan.SetOrder(dimse.OrderAllow)
	} else {
		op.scan.SetOrder(dimse.OrderRefuse)
	}
	in.cur = op
	sopClass, sopInst := cmd.AffectedSOPClassUID, cmd.AffectedSOPInstanceUID
	switch {
	case !in.d.AllowsService("C-STORE") || !in.d.AllowsSOPClass(sopClass):
		op.status, op.why = dimse.StatusRefusedNotAuthorized, "not allowed by the rule"
		return nil
	case sopClass != a.contexts[ctxID]:
		// PS3.4 B.2.3: the SOP class must be the context's abstract syntax.
		op.status, op.why = dimse.StatusSOPClassNotSupported, "SOP class differs from the presentation context's"
		return nil
	case !validUID(sopInst) || !validUID(sopClass):
		op.status, op.why = dimse.StatusIdentifierDoesNotMatchSOP, "invalid SOP Instance or Class UID"
		return nil
	}
	m := spool.Meta{SOPClass: sopClass, SOPInstance: sopInst, TransferSyntax: ts,
		CallingAE: association.TrimAE(a.c.rq.CallingAE), CalledAE: association.TrimAE(a.c.rq.CalledAE),
		Listener: a.c.listener, Rule: in.d.Rule, Client: clientKey(a.c.identity.Fingerprint, a.c.source)}
	if dp := in.d.Deidentify; dp != nil {
		t, err := deid.New(dp.Profile, ts)
		if err != nil {
			op.status, op.why = dimse.StatusUnableToProcess, "deidentify: "+err.Error()
			return nil
		}
		op.deid = t
		// The File Meta names the instance as the de-identified data set
		// does (PS3.10 7.1: (0002,0003) equals (0008,0018)).
		m.SOPInstance = t.MapUID(sopInst)
		m.Rule = in.d.Rule
	}
	w, err := in.sp.Create(in.d.Backend.Name, m)
	if err != nil {
		op.status, op.why = dimse.StatusRefusedOutOfResources, err.Error()
		return nil
	}
	op.w = w
	return nil
}

// deidRefusalStatus is the C-STORE status for an instance the profile
// refuses, as on a de-identified relay (docs/deidentify.md): 0x0124 for
// burned-in annotation or an encapsulated document, 0xA700 over the
// transform's bounds, 0xC000 (cannot understand) otherwise.
func deidRefusalStatus(err error) uint16 {
	var r *deid.RefusedError
	if errors.As(err, &r) {
		switch r.Reason {
		case "burned-in-annotation", "encapsulated-document":
			return dimse.StatusRefusedNotAuthorized
		case "over-bound":
			return dimse.StatusRefusedOutOfResources
		}
	}
	return dimse.StatusUnableToProcess
}

// write passes data-set bytes to the spool, through the transform on a
// de-identified rule. A refusal by the transform answers its status with
// its reason; a spool error 0xA700.
func (op *storeOp) write(p []byte, last bool) {
	if op.w == nil {
		return
	}
	fail := func(status uint16, why string) {
		op.w.Abort()
		op.w = nil
		op.status, op.why = status, why
	}
	if op.deid == nil {
		if _, err := op.w.Write(p); err != nil {
			fail(dimse.StatusRefusedOutOfResources, err.Error())
		}
		return
	}
	_, err := op.deid.Write(p)
	if err == nil && last {
		err = op.deid.Close()
	}
	if err != nil {
		fail(deidRefusalStatus(err), "deidentify: "+err.Error())
		return
	}
	op.out = op.deid.Next(op.out[:0])
	if len(op.out) > 0 {
		if _, err := op.w.Write(op.out); err != nil {
			fail(dimse.StatusRefusedOutOfResources, err.Error())
		}
	}
}

// data takes one data-set PDV of the current C-STORE; on the last one it
// commits and answers.
func (in *ingest) data(pdv association.PDV) error {
	op := in.cur
	if op == nil {
		return &association.ProtocolError{Reason: association.AbortUnexpectedPDUParameter, Msg: "data-set PDV without a C-STORE-RQ"}
	}
	if pdv.ContextID != op.ctxID {
		return &association.ProtocolError{Reason: association.AbortUnexpectedPDUParameter, Msg: "data-set PDV on another presentation context than its C-STORE-RQ"}
	}
	op.bytes += int64(len(pdv.Data))
	if !op.scan.Done() {
		op.scan.Feed(pdv.Data)
	}
	if what := op.scan.DisorderText(); what != "" && !op.orderNoted {
		op.orderNoted = true
		if !in.d.AllowUnsortedDataSets {
			// As on a relay: the association is aborted before the
			// instance completes, and nothing of it is kept.
			if op.w != nil {
				op.w.Abort()
				op.w = nil
			}
			in.cur = nil
			msg := fmt.Sprintf("%s: %s in the C-STORE data set of message %d; top-level elements must be in strictly ascending tag order, each tag once (PS3.5 7.1)",
				inspect.MalformedDataSet, what, op.cmd.MessageID)
			in.record(op, "", inspect.MalformedDataSet+": "+what, false)
			return &association.ProtocolError{Reason: association.AbortInvalidPDUParameterValue, Msg: msg}
		}
		op.note = fmt.Sprintf("%s by rule %s: %s (PS3.5 7.1)", inspect.UnsortedDataSet, in.d.Rule, what)
	}
	op.write(pdv.Data, pdv.Last)
	if !pdv.Last {
		return nil
	}
	in.cur = nil
	if op.w != nil {
		if status, why := op.judge(); status != dimse.StatusSuccess {
			op.w.Abort()
			op.w = nil
			op.status, op.why = status, why
		}
	}
	if op.w != nil {
		if err := op.w.Commit(); err != nil {
			op.status, op.why = dimse.StatusRefusedOutOfResources, err.Error()
		} else {
			op.status = dimse.StatusSuccess
		}
		op.w = nil
	}
	return in.respond(op)
}

// judge is what the edge, receiving for the backend, checks of a whole
// data set before it acknowledges it: not empty, not cut inside an
// element, and naming the instance and class the command names (the C-STORE's
// Affected SOP Instance and Class UIDs are those of its data set, PS3.7
// 9.1.1; 0xA900 is C-STORE's "data set does not match SOP class", PS3.4
// B.2.3). What the scanner could not read (a syntax it does not walk) is
// left to the backend.
func (op *storeOp) judge() (status uint16, why string) {
	switch {
	case op.bytes == 0:
		return dimse.StatusDataSetMismatch, "the data set is empty"
	case op.scan.Cut():
		return dimse.StatusUnableToProcess, "the data set ends inside an element"
	}
	if uid, ok := op.scan.SOPInstanceUID(); ok && uid != op.cmd.AffectedSOPInstanceUID {
		return dimse.StatusDataSetMismatch, "(0008,0018) is not the Affected SOP Instance UID"
	} else if !ok && op.scan.Walked() {
		return dimse.StatusDataSetMismatch, "the data set has no SOP Instance UID (0008,0018)"
	}
	if uid, ok := op.scan.SOPClassUID(); ok && uid != op.cmd.AffectedSOPClassUID {
		return dimse.StatusDataSetMismatch, "(0008,0016) is not the Affected SOP Class UID"
	}
	return dimse.StatusSuccess, ""
}

func (in *ingest) respond(op *storeOp) error {
	a := in.a
	rsp := dimse.NewResponse(op.cmd, op.status)
	if op.status != dimse.StatusSuccess && op.why != "" {
		// PS3.7 C.4.2.1.2: Error Comment, at most 64 characters, no PHI.
		rsp.ErrorComment = truncate(op.why, 64)
	}
	err := a.writeMessage(op.ctxID, rsp)
	detail := ""
	if op.status != dimse.StatusSuccess {
		detail = op.why
	}
	in.record(op, statusHex(op.status), detail, op.status != dimse.StatusRefusedNotAuthorized)
	if op.status != dimse.StatusSuccess {
		a.c.log.Warn("C-STORE not spooled", "status", statusHex(op.status), "reason", op.why)
	}
	return err
}

// record writes the C-STORE's dimse record: status "" when no response
// was sent (the association was aborted).
func (in *ingest) record(op *storeOp, status, detail string, allowed bool) {
	c := in.a.c
	class := "incomplete"
	if status != "" {
		class = dimse.ClassOf(op.status).String()
	}
	c.s.Metrics.DIMSERequests.WithLabelValues("C-STORE", class).Inc()
	e := c.event(audit.EventDIMSE)
	e.Rule, e.Backend = in.d.Rule, in.d.Backend.Name
	e.Service, e.SOPClass, e.SOPInstance = "C-STORE", op.cmd.AffectedSOPClassUID, op.cmd.AffectedSOPInstanceUID
	e.MessageID, e.Status, e.Bytes = int(op.cmd.MessageID), status, op.bytes
	e.MS, e.Allowed = time.Since(op.start).Milliseconds(), audit.Bool(allowed)
	e.Detail = joinDetails(op.note, detail)
	if uid, ok := op.scan.StudyInstanceUID(); ok {
		e.StudyUID = uid
	}
	if c.s.Audit != nil {
		if id, ok := op.scan.PatientID(); ok {
			e.PatientID = c.s.Audit.PatientID(id)
		} else if why := op.scan.Undetermined(); why != "" && status != "" {
			e.Detail = joinDetails(e.Detail, "patient_id could not be determined: "+why)
		}
	}
	if op.deid != nil && op.status == dimse.StatusSuccess && status != "" {
		// The original (sop_instance, study_uid, patient_id) beside its
		// replacement: the way back from what the spool keeps, and
		// spool.stored names, to what was sent.
		r := op.deid.Result()
		e.Deidentified = &audit.Deidentified{Profile: r.Profile, StudyUID: r.StudyUID, SeriesUID: r.SeriesUID,
			SOPInstance: r.SOPInstanceUID, PatientPseudonym: r.Pseudonym, OriginalSeries: r.OriginalSeriesUID}
	}
	c.s.auditEvent(e)
}

func joinDetails(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// close drops a half-received instance when the association ends.
func (in *ingest) close() {
	if op := in.cur; op != nil {
		if op.w != nil {
			op.w.Abort()
		}
		in.record(op, "", "not stored: the association ended before the data set was complete", true)
	}
	in.cur = nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// validUID: PS3.5 9.1, digits and dots, at most 64 characters.
func validUID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, comp := range strings.Split(s, ".") {
		if comp == "" || (len(comp) > 1 && comp[0] == '0') || strings.Trim(comp, "0123456789") != "" {
			return false
		}
	}
	return true
}
