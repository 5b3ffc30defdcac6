package inspect

import (
	"errors"
	"fmt"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/deid"
)

// Deidentified is what a de-identified instance became, for its `dimse`
// record (docs/audit.md): the replacements beside the originals the
// record already names.
type Deidentified struct {
	Profile     string
	StudyUID    string
	SeriesUID   string
	SOPInstance string
	Pseudonym   string
	// The originals the data set carried (the record's SOPInstance is the
	// command's, which is the same UID).
	OriginalStudyUID, OriginalSeriesUID string
}

// deidOp is a C-STORE being de-identified: its command is held until the
// transform passes the verdict point, so that an instance the profile
// refuses reaches nobody; it then goes across with its Affected SOP
// Instance UID replaced as the data set's (0008,0018) is.
type deidOp struct {
	tr      *deid.Transformer
	cmd     []byte // the rewritten command set, until it is sent
	origUID string
	newUID  string
}

// C-STORE statuses for an instance the profile refuses (PS3.4 Annex
// C.4.2.1.5 and PS3.7 C): not authorized by the rule, out of resources,
// or cannot understand.
const (
	statusRefusedByProfile = dimse.StatusRefusedNotAuthorized
	statusOverBound        = 0xA700
	statusCannotUnderstand = 0xC000
)

// deidStart begins de-identifying the C-STORE cmd: nothing of it goes
// across until the transform has judged the data set's header.
func (in *Inspector) deidStart(st *stream, ctx *Context, cmd *dimse.Command, o *op) (*deidOp, *Violation) {
	tr, err := deid.New(in.cfg.Deidentify, ctx.TransferSyntax)
	if err != nil {
		return nil, nil // cannot happen: the relay proposes only syntaxes deid reads; refused below
	}
	d := &deidOp{tr: tr, origUID: cmd.AffectedSOPInstanceUID}
	d.newUID = tr.MapUID(cmd.AffectedSOPInstanceUID)
	rw := *cmd
	rw.AffectedSOPInstanceUID = d.newUID
	d.cmd = rw.Encode()
	o.deid = d
	return d, nil
}

// deidData runs one data set PDV through the transform.
func (in *Inspector) deidData(st *stream, p association.PDV) *Violation {
	d, o := st.deid, st.op
	st.change()
	_, err := d.tr.Write(p.Data)
	if err == nil && p.Last {
		err = d.tr.Close()
	}
	if err != nil {
		if d.tr.Started() {
			// Part of the instance has gone across: only an abort keeps the
			// backend from storing it.
			return violation(st, association.AbortInvalidPDUParameterValue, "de-identification of %s failed after it began: %v", d.origUID, err)
		}
		in.deidRefuse(st, p, err)
		return nil
	}
	if !d.tr.Started() {
		return nil // still judging the header
	}
	ctx := p.ContextID
	if d.cmd != nil {
		st.fwd.command(ctx, d.cmd)
		d.cmd = nil
		r := d.tr.Result()
		o.rec.Deidentified = &Deidentified{Profile: r.Profile, StudyUID: r.StudyUID, SeriesUID: r.SeriesUID,
			SOPInstance: d.newUID, Pseudonym: r.Pseudonym, OriginalStudyUID: r.OriginalStudyUID, OriginalSeriesUID: r.OriginalSeriesUID}
	}
	if out := d.tr.Take(); len(out) > 0 || p.Last {
		st.fwd.data(ctx, out, p.Last)
	}
	return nil
}

// deidRefuse answers the C-STORE whose data set the profile refused with a
// failure status in the edge's name; the rest of the data set is
// swallowed and nothing of it went across.
func (in *Inspector) deidRefuse(st *stream, p association.PDV, err error) {
	o := st.op
	status := uint16(statusCannotUnderstand)
	var r *deid.RefusedError
	if errors.As(err, &r) {
		switch r.Reason {
		case "burned-in-annotation", "encapsulated-document":
			status = statusRefusedByProfile
		case "over-bound":
			status = statusOverBound
		}
	}
	cmd := &dimse.Command{CommandField: dimse.CStoreRQ, MessageID: o.rec.MessageID,
		AffectedSOPClassUID: o.rec.SOPClass, AffectedSOPInstanceUID: o.rec.SOPInstance}
	rsp := dimse.NewResponse(cmd, status)
	st.reply.close()
	_ = dimse.WriteMessage(appendWriter{&st.reply}, p.ContextID, rsp, nil, st.reply.max) // appending cannot fail
	in.ledger.take(Requestor, o.rec.MessageID)
	o.rec.Detail = joinDetail(o.rec.Detail, fmt.Sprintf("refused by de-identification profile %s: %v", in.cfg.Deidentify.Name, err))
	o.status, o.responded, o.dataDone = status, true, true
	in.ledger.record(st, o, false, in.cfg.Now())
	st.deid, st.op, st.state = nil, nil, AwaitCommand
	if !p.Last {
		st.state = DiscardDataSet // the rest of the data set is swallowed
	}
	st.notes = append(st.notes, Note{Msg: "C-STORE refused by de-identification", Args: []any{
		"message_id", o.rec.MessageID, "status", fmt.Sprintf("0x%04X", status), "why", err.Error()}})
}

// restoreUID gives the sender its own SOP Instance UID back in the
// backend's C-STORE response (its send queue matches on it).
func restoreUID(o *op, cmd *dimse.Command) []byte {
	if o.deid == nil || cmd.AffectedSOPInstanceUID != o.deid.newUID || o.deid.newUID == o.deid.origUID {
		return nil
	}
	rw := *cmd
	rw.AffectedSOPInstanceUID = o.deid.origUID
	return rw.Encode()
}
