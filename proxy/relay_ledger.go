package proxy

import (
	"slices"
	"sort"
	"time"

	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/audit"
)

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
