package proxy

import (
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/proxy/inspect"
)

// peer is one side of the relay as the pumps see it. The pump that reads
// a side owns its reader; its writer is shared (pduWriter has its own lock).
type peer struct {
	name string       // "client" or "backend", in the audit and the log
	side inspect.Side // the client is the association requestor
	conn net.Conn     // read deadlines
	raw  net.Conn     // closed when the side is done
	rd   *association.Reader
	in   *countingReader // bytes read, to tell a PDU boundary
	w    *pduWriter      // to this side
	// read and wrote count the relay's bytes from and to the client
	// (nil for the backend).
	read, wrote prometheus.Counter
}

func (p *peer) close() { p.raw.Close() }

func (p *peer) count(c prometheus.Counter, n int) {
	if c != nil {
		c.Add(float64(n))
	}
}

// pump forwards PDUs both ways until the association ends, then writes its
// record. conn.serve calls it after run has returned, so that the client
// pump waits for input on a small stack.
func (r *relay) pump() {
	defer r.b.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.pumpFrom(&r.backend, &r.client)
	}()
	r.pumpFrom(&r.client, &r.backend)
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

// nextPDU reads x's next PDU and renews the idle deadline. A timeout
// between PDUs is resumed while the association is not idle; ok is false
// when the pump must stop (the association ended, or x failed and both
// sides were told).
func (r *relay) nextPDU(x, y *peer) (typ association.PDUType, raw []byte, ok bool) {
	for {
		at := x.in.n.Load()
		typ, raw, err := x.rd.Next()
		if err != nil {
			if r.end.ended() {
				return 0, nil, false
			}
			// Only a timeout between PDUs may be resumed; inside one the
			// stream position is lost, and a peer stalled mid-PDU that long
			// is dead anyway.
			if isTimeout(err) && x.in.n.Load() == at && !r.idleExpired(x.conn) {
				continue
			}
			r.sideFailed(x, y, err)
			return 0, nil, false
		}
		r.touch()
		_ = x.conn.SetReadDeadline(time.Now().Add(r.idle()))
		if r.trace {
			r.c.log.Trace("PDU", "from", x.name, "type", typ, "length", len(raw))
		}
		x.count(x.read, len(raw))
		return typ, raw, true
	}
}

// pumpFrom forwards x's PDUs to y until the association ends: P-DATA-TF
// as the inspection decides, release and abort carried through (PS3.8).
func (r *relay) pumpFrom(x, y *peer) {
	_ = x.conn.SetReadDeadline(time.Now().Add(r.idle()))
	for {
		typ, raw, ok := r.nextPDU(x, y)
		if !ok {
			return
		}
		if typ == association.TypeReleaseRQ || typ == association.TypeReleaseRP {
			// Relayed as they came: a malformed one (PS3.8 9.3.6, 9.3.7:
			// 4 bytes after the header) would reach the peer, however long
			// the reader let it be.
			if _, err := association.Decode(typ, raw[association.HeaderLen:]); err != nil {
				r.protocolFailure(x, y, err, "")
				return
			}
		}
		switch typ {
		case association.TypePDataTF:
			if r.rel.requested(x.side) {
				r.protocolFailure(x, y, association.Unexpected(typ), "P-DATA-TF from the "+x.name+" after its A-RELEASE-RQ")
				return
			}
			if !r.pdata(x, y, raw) {
				return
			}
		case association.TypeReleaseRQ:
			r.c.log.Trace("release", "from", x.name)
			if st := r.insp.State(x.side); st != inspect.AwaitCommand {
				// The sender's last message is incomplete (PS3.7 6.3.1: a
				// command set, then its announced data set); passing the
				// release on would hand the peer a truncated message.
				r.protocolFailure(x, y, association.Unexpected(typ), "A-RELEASE-RQ from the "+x.name+" in the middle of a DIMSE message ("+st.String()+")")
				return
			}
			if !r.rel.request(x.side) {
				r.protocolFailure(x, y, association.Unexpected(typ), "a second A-RELEASE-RQ from the "+x.name)
				return
			}
			if !r.send(x, y, y.w.writeRaw, raw) {
				return
			}
		case association.TypeReleaseRP:
			ok, done := r.rel.respond(x.side)
			switch {
			case !ok:
				r.protocolFailure(x, y, association.Unexpected(typ), "A-RELEASE-RP from the "+x.name+" answering no A-RELEASE-RQ")
				return
			case !done:
				// A release collision: x answered y's request and now
				// awaits the answer to its own (PS3.8 Sta11, Sta12).
				if !r.send(x, y, y.w.writeRaw, raw) {
					return
				}
				continue
			}
			r.releaseRP(x, y, raw)
			return
		case association.TypeAbort:
			r.carryAbort(x, y, raw)
			return
		default:
			// PS3.8 Sta6: an A-ASSOCIATE-* PDU in an established association.
			r.protocolFailure(x, y, association.Unexpected(typ), "")
			return
		}
	}
}

// pdata applies the inspection's verdict on one P-DATA-TF of x: the
// edge's own answers back to x, what may pass on to y.
func (r *relay) pdata(x, y *peer, raw []byte) bool {
	v := r.insp.Feed(x.side, raw)
	defer r.insp.Release(x.side)
	for _, n := range v.Notes {
		r.c.log.Info(n.Msg, n.Args...)
	}
	r.auditOps(v.Records)
	if v := v.Violation; v != nil {
		// The side at fault may be y: its pump found the violation and has
		// not yet acted on it when this PDU of x was fed.
		if v.From != x.side {
			x, y = y, x
		}
		r.protocolFailure(x, y, v.ProtocolError(), v.Msg)
		return false
	}
	if len(v.Reply) > 0 {
		// x has stopped reading (or is gone): it cannot be answered any
		// more, and its stream may end inside a PDU.
		if !r.send(y, x, x.w.writeRaw, v.Reply) {
			return false
		}
	}
	out := v.Forward
	if v.Pass {
		out = raw
	}
	if len(out) == 0 {
		return true
	}
	return r.send(x, y, y.w.writeQueued, out)
}

// send writes b to y; a failure ends the association (y failed).
func (r *relay) send(x, y *peer, write func([]byte) error, b []byte) bool {
	if err := write(b); err != nil {
		if !r.end.ended() {
			r.sideFailed(y, x, err)
		}
		return false
	}
	y.count(y.wrote, len(b))
	return true
}

// releaseRP forwards x's A-RELEASE-RP. The outcome is recorded first: y,
// which asked for the release, closes as soon as it has the RP (PS3.8), and
// its pump must then see an ended association, not a lost connection.
func (r *relay) releaseRP(x, y *peer, raw []byte) {
	defer x.close()
	if !r.end.end(endOutcome{released: true}) {
		return
	}
	r.c.log.Trace("release", "from", x.name, "type", "A-RELEASE-RP")
	// y closes the transport (PS3.8); give it a moment, then stop its pump.
	_ = y.conn.SetReadDeadline(time.Now().Add(policy.PeerCloseWait))
	if err := y.w.writeRaw(raw); err == nil {
		y.count(y.wrote, len(raw))
	}
	if testHookReleaseRPForwarded != nil {
		testHookReleaseRPForwarded(r)
	}
}

// carryAbort carries x's A-ABORT to y unchanged; a malformed one is
// replaced by the edge's own.
func (r *relay) carryAbort(x, y *peer, raw []byte) {
	o := endOutcome{abortSource: peerAborted(x.name, association.AbortSourceServiceUser)}
	ab, _ := association.Decode(association.TypeAbort, raw[association.HeaderLen:])
	a, ok := ab.(*association.Abort)
	if ok {
		o.abortSource, o.abortReason = peerAborted(x.name, a.Source), abortReason(a.Reason.String())
	}
	r.end.endWith(o, func() {
		if ok {
			y.w.writeAbort(raw)
		} else {
			y.w.abort(association.AbortSourceServiceProvider, association.AbortReasonNotSpecified)
		}
	})
	r.closeBoth()
}
