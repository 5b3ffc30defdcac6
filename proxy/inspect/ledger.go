package inspect

import (
	"fmt"
	"slices"
	"time"

	"github.com/dicomedge/dicomedge/association/dimse"
)

// Record is one `dimse` audit record (docs/audit.md).
type Record struct {
	Service         string // e.g. "C-STORE"
	SOPClass        string // Affected SOP Class UID; for N-GET/N-SET/N-ACTION/N-DELETE the Requested one
	SOPInstance     string // likewise
	MoveDestination string
	MessageID       uint16
	From            Side // the side that sent the request
	Status          uint16
	HasStatus       bool // false: the association ended before the final response
	Bytes           int64
	Duration        time.Duration
	PatientID       string
	HasPatientID    bool
	StudyUID        string // C-STORE: the data set's Study Instance UID (0020,000D)
	Allowed         bool
	Detail          string // e.g. which C-GET a sub-operation belongs to
	Unanswered      bool   // a request of the acceptor side the requestor never answered
	// Deidentified: what the instance became on a de-identifying rule.
	Deidentified *Deidentified
}

// StatusHex is Status as the audit writes it (0x%04X), empty without one.
func (r *Record) StatusHex() string {
	if !r.HasStatus {
		return ""
	}
	return fmt.Sprintf("0x%04X", r.Status)
}

// Class is the status class for metrics ("success", ...), or "incomplete".
func (r *Record) Class() string {
	if !r.HasStatus {
		return "incomplete"
	}
	return dimse.ClassOf(r.Status).String()
}

// op is one request in the ledger, from its command until both its final
// response and the end of its data set are seen.
type op struct {
	rec     Record
	from    Side
	field   dimse.CommandField
	ctx     uint8
	start   time.Time
	scanner *dimse.PatientIDScanner
	// scanPatient: the record takes the scanner's Patient ID and study.
	scanPatient bool
	orderNoted  bool // the data set's order was found wrong and acted on
	dataDone    bool // the last data PDV was seen, or the request has none
	// responded and status: the final (non-pending) response.
	responded bool
	status    uint16
	audited   bool // its record is written
	deid      *deidOp
}

// ledger holds the requests each side has outstanding, by message ID
// (bounded by MaxOutstanding), and the ones whose response came before the
// end of their data set (the stream's op).
type ledger struct {
	ops [2]map[uint16]*op
}

func (l *ledger) init() {
	l.ops[Requestor] = map[uint16]*op{}
	l.ops[Acceptor] = map[uint16]*op{}
}

func (l *ledger) newOp(from Side, ctx uint8, cmd *dimse.Command, now time.Time) *op {
	class, instance := names(cmd)
	return &op{from: from, field: cmd.CommandField, ctx: ctx, start: now, dataDone: !cmd.HasDataSet(),
		rec: Record{Service: cmd.CommandField.Service(), SOPClass: class, SOPInstance: instance,
			MoveDestination: cmd.MoveDestination, MessageID: cmd.MessageID, From: from}}
}

func (l *ledger) add(o *op)                             { l.ops[o.from][o.rec.MessageID] = o }
func (l *ledger) get(from Side, id uint16) *op          { return l.ops[from][id] }
func (l *ledger) outstanding(from Side, id uint16) bool { return l.ops[from][id] != nil }
func (l *ledger) count(from Side) int                   { return len(l.ops[from]) }

// has reports whether from has a request of field f outstanding.
func (l *ledger) has(from Side, f dimse.CommandField) bool {
	for _, o := range l.ops[from] {
		if o.field == f {
			return true
		}
	}
	return false
}

func (l *ledger) take(from Side, id uint16) *op {
	o := l.ops[from][id]
	delete(l.ops[from], id)
	return o
}

// dataDone marks o's data set complete; if its final response came first,
// the record is written now.
func (l *ledger) dataDone(st *stream, o *op, now time.Time) {
	o.dataDone = true
	if o.responded {
		l.record(st, o, true, now)
	}
}

// record adds o's record to st's verdict, once.
func (l *ledger) record(st *stream, o *op, allowed bool, now time.Time) {
	if o.audited {
		return
	}
	o.audited = true
	st.records = append(st.records, o.finish(allowed, o.responded, now))
}

// unsent records the requests st's PDU entered in the ledger, now that a
// violation later in that PDU keeps all of it from going across: not
// allowed through, whatever the rule said.
func (l *ledger) unsent(st *stream, now time.Time) {
	for _, o := range st.added {
		if o.audited {
			continue
		}
		if l.ops[o.from][o.rec.MessageID] == o {
			delete(l.ops[o.from], o.rec.MessageID)
		}
		if st.op == o {
			st.op = nil
		}
		o.audited = true
		r := o.finish(false, false, now)
		r.Detail = joinDetail(r.Detail, "not forwarded: its PDU broke the protocol")
		st.records = append(st.records, r)
	}
}

func (l *ledger) unanswered(st *stream, o *op, now time.Time) {
	if o.audited {
		return
	}
	o.audited = true
	r := o.finish(true, false, now)
	r.Unanswered = true
	r.Detail += "; no response"
	st.records = append(st.records, r)
}

func (o *op) finish(allowed, withStatus bool, now time.Time) Record {
	r := o.rec
	r.Allowed, r.Duration = allowed, now.Sub(o.start)
	if withStatus {
		r.Status, r.HasStatus = o.status, true
	}
	if o.scanner != nil && o.scanPatient {
		r.PatientID, r.HasPatientID = o.scanner.PatientID()
		r.StudyUID, _ = o.scanner.StudyInstanceUID()
		if why := o.scanner.Undetermined(); why != "" {
			// The record must not read as "no patient": say it is unknown.
			r.Detail = joinDetail(r.Detail, "patient_id could not be determined: "+why)
		}
	}
	return r
}

// finish returns the records of the operations not yet recorded: the
// requestor's (no status) in the order they began, then the acceptor's
// (unanswered) by message ID.
func (l *ledger) finish(streams *[2]stream, now time.Time) []Record {
	var pend [2][]*op
	seen := map[*op]bool{}
	add := func(o *op) {
		if o != nil && !o.audited && !seen[o] {
			seen[o] = true
			pend[o.from] = append(pend[o.from], o)
		}
	}
	for s := range l.ops {
		for _, o := range l.ops[s] {
			add(o)
		}
		add(streams[s].op)
	}
	slices.SortFunc(pend[Requestor], func(a, b *op) int {
		if c := a.start.Compare(b.start); c != 0 {
			return c
		}
		return int(a.rec.MessageID) - int(b.rec.MessageID)
	})
	slices.SortFunc(pend[Acceptor], func(a, b *op) int { return int(a.rec.MessageID) - int(b.rec.MessageID) })
	var out []Record
	for _, o := range pend[Requestor] {
		o.audited = true
		out = append(out, o.finish(true, false, now))
	}
	for _, o := range pend[Acceptor] {
		o.audited = true
		r := o.finish(true, false, now)
		r.Unanswered = true
		if o.responded {
			r.Detail += "; data set cut short"
		} else {
			r.Detail += "; no response"
		}
		out = append(out, r)
	}
	l.init()
	return out
}

// joinDetail appends note to a record's detail.
func joinDetail(detail, note string) string {
	if detail == "" {
		return note
	}
	return detail + "; " + note
}
