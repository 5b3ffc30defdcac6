package proxy

import (
	"errors"
	"io"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/audit"
)

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

var errEnded = errors.New("association ended")

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
