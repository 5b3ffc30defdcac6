package proxy

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/proxy/inspect"
)

// assocEnd is how a relayed association ends, shared by its two pumps and
// Shutdown: the first outcome recorded wins, and the one that records an
// abort sends the A-ABORTs it owes before anyone closes the connections.
type assocEnd struct {
	mu      sync.Mutex // held by the winner while it sends its A-ABORTs
	done    atomic.Bool
	outcome endOutcome // set once, under mu
}

// end records o if it is the first outcome.
func (e *assocEnd) end(o endOutcome) bool { return e.endWith(o, nil) }

// endWith records o if it is the first outcome and then runs send (the
// A-ABORTs it owes). A caller that loses the race waits here until the
// winner's aborts are written, so its closeBoth cannot cut them off (the
// peer would see EOF instead of A-ABORT).
func (e *assocEnd) endWith(o endOutcome, send func()) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.done.Load() {
		return false
	}
	e.outcome = o
	e.done.Store(true)
	if send != nil {
		send()
	}
	return true
}

// ended says whether an outcome is recorded.
func (e *assocEnd) ended() bool { return e.done.Load() }

// result is the recorded outcome.
func (e *assocEnd) result() endOutcome {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.outcome
}

// release follows the A-RELEASE exchange (PS3.8 7.2; Sta7-Sta12 for a
// release collision), shared by the two pumps: which side has sent its
// A-RELEASE-RQ, and which of those requests has had its A-RELEASE-RP.
type release struct {
	mu       sync.Mutex
	asked    [2]bool // by inspect.Side
	answered [2]bool
}

// request notes side's A-RELEASE-RQ; false when it already sent one.
func (rl *release) request(side inspect.Side) bool {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if rl.asked[side] {
		return false
	}
	rl.asked[side] = true
	return true
}

// requested says whether side has sent its A-RELEASE-RQ: it may send no
// P-DATA-TF after it (PS3.8 Sta7; its peer, in Sta8, would take one as
// AA-8).
func (rl *release) requested(side inspect.Side) bool {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return rl.asked[side]
}

// respond notes side's A-RELEASE-RP. ok is false when it answers no
// A-RELEASE-RQ of the other side (PS3.8 Sta6: AA-8); done is true when
// every request is now answered, so the association is released.
func (rl *release) respond(side inspect.Side) (ok, done bool) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	o := side.Other()
	if !rl.asked[o] || rl.answered[o] {
		return false, false
	}
	rl.answered[o] = true
	return true, !rl.asked[side] || rl.answered[side]
}

// abortBoth sends A-ABORT (service provider) to both sides and closes them.
func (r *relay) abortBoth(why abortReason) {
	r.end.endWith(endOutcome{abortSource: sourceEdge, abortReason: why}, func() {
		r.backend.w.abort(association.AbortSourceServiceProvider, association.AbortReasonNotSpecified)
		r.client.w.abort(association.AbortSourceServiceProvider, association.AbortReasonNotSpecified)
	})
	r.closeBoth()
}

func (r *relay) closeBoth() {
	r.b.Close()
	r.c.raw.Close()
}

var errEnded = errors.New("association ended")

// sideFailed handles a read or write failure on x: y hears A-ABORT (PS3.8:
// the connection's loss is an A-P-ABORT); on the idle timeout, x too.
func (r *relay) sideFailed(x, y *peer, err error) {
	o := endOutcome{abortSource: abortSource(x.name), abortReason: reasonClosed, err: err}
	switch {
	case isTimeout(err):
		o.abortSource, o.abortReason = sourceEdge, reasonIdle
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
	default:
		var pe *association.ProtocolError
		if errors.As(err, &pe) {
			r.protocolFailure(x, y, err, "")
			return
		}
		o.abortReason = reasonConnError
	}
	r.end.endWith(o, func() {
		if o.abortReason == reasonIdle {
			x.w.abort(association.AbortSourceServiceProvider, association.AbortReasonNotSpecified)
		}
		y.w.abort(association.AbortSourceServiceProvider, association.AbortReasonNotSpecified)
	})
	r.closeBoth()
}

// protocolFailure: a malformed or unexpected PDU, or a DIMSE conversation
// the inspection does not allow (detail), from x: x gets the A-ABORT its
// error prescribes, y one with no reason.
func (r *relay) protocolFailure(x, y *peer, err error, detail string) {
	ab := association.AbortFor(err)
	if detail == "" {
		detail = err.Error() // the codec's account: what was malformed or unexpected
	}
	o := endOutcome{abortSource: sourceEdge, abortReason: protocolReason(x.name, ab.Reason), detail: detail, err: err}
	r.end.endWith(o, func() {
		x.w.abort(association.AbortSourceServiceProvider, ab.Reason)
		y.w.abort(association.AbortSourceServiceProvider, association.AbortReasonNotSpecified)
	})
	r.closeBoth()
}

func (r *relay) finish() {
	c := r.c
	// What the association ended before completing is recorded too, with
	// no status: an abort must not hide what was sent.
	r.auditOps(r.insp.Finish())
	o := r.end.result()
	name := audit.EventReleased
	if !o.released {
		name = audit.EventAborted
	}
	in, out := c.bytesIn(), r.cw.bytes.Load()
	e := c.event(name)
	e.Rule, e.Backend = r.d.Rule, r.d.Backend.Name
	e.BytesIn, e.BytesOut, e.MS = in, out, time.Since(c.start).Milliseconds()
	e.AbortSource, e.AbortReason, e.Detail = string(o.abortSource), string(o.abortReason), o.detail
	c.s.auditEvent(e)
	// c.log already carries backend (relay setup), so it is not repeated here.
	c.log.Info("association ended", o.logArgs("decision", "relay", "rule", r.d.Rule,
		"end", name, "bytes_in", in, "bytes_out", out, "duration", time.Since(c.start))...)
}

// auditOps writes the dimse records the inspection completed, and meters
// them.
func (r *relay) auditOps(recs []inspect.Record) {
	c := r.c
	for i := range recs {
		rec := &recs[i]
		c.s.Metrics.DIMSERequests.WithLabelValues(rec.Service, rec.Class()).Inc()
		if c.s.Audit == nil {
			continue
		}
		e := c.event(audit.EventDIMSE)
		e.Service, e.SOPClass, e.SOPInstance, e.MessageID = rec.Service, rec.SOPClass, rec.SOPInstance, int(rec.MessageID)
		e.Status, e.MoveDestination, e.Detail = rec.StatusHex(), rec.MoveDestination, rec.Detail
		e.Bytes, e.MS, e.Allowed = rec.Bytes, rec.Duration.Milliseconds(), audit.Bool(rec.Allowed)
		if rec.HasPatientID {
			e.PatientID = c.s.Audit.PatientID(rec.PatientID) // "" with patient_ids = "omit"
		}
		e.StudyUID = rec.StudyUID
		if d := rec.Deidentified; d != nil {
			e.Deidentified = &audit.Deidentified{Profile: d.Profile, StudyUID: d.StudyUID, SeriesUID: d.SeriesUID,
				SOPInstance: d.SOPInstance, PatientPseudonym: d.Pseudonym, OriginalSeries: d.OriginalSeriesUID}
		}
		c.s.auditEvent(e)
	}
}
