package proxy

import (
	"errors"
	"net"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
)

// pump forwards PDUs both ways until the association ends, then writes its
// record. conn.serve calls it after run has returned, so that the client
// pump waits for input on a small stack.
func (r *relay) pump() {
	defer r.b.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.pumpBackend()
	}()
	r.pumpClient()
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

// nextPDU reads side's next PDU for its pump and renews the idle deadline
// on nc. A timeout between PDUs is resumed while the association is not
// idle; ok is false when the pump must stop (the association ended, or the
// side failed and both were told).
func (r *relay) nextPDU(side string, rd *association.Reader, nc net.Conn, in *countingReader, failed, other *pduWriter) (typ association.PDUType, raw []byte, ok bool) {
	for {
		at := in.n.Load()
		typ, raw, err := rd.Next()
		if err != nil {
			if r.ended.Load() {
				return 0, nil, false
			}
			// Only a timeout between PDUs may be resumed; inside one the
			// stream position is lost, and a peer stalled mid-PDU that long
			// is dead anyway.
			if isTimeout(err) && in.n.Load() == at && !r.idleExpired(nc) {
				continue
			}
			r.sideFailed(side, err, failed, other)
			return 0, nil, false
		}
		r.touch()
		_ = nc.SetReadDeadline(time.Now().Add(r.idle()))
		if r.trace {
			r.c.log.Trace("PDU", "from", side, "type", typ, "length", len(raw))
		}
		return typ, raw, true
	}
}

// pumpClient forwards client PDUs to the backend (conn's goroutine).
func (r *relay) pumpClient() {
	c := r.c
	asm := &dimse.Assembler{}
	st := &r.cst
	_ = c.tc.SetReadDeadline(time.Now().Add(r.idle()))
	for {
		typ, raw, ok := r.nextPDU("client", r.cr, c.tc, c.in, r.cw, r.bw)
		if !ok {
			return
		}
		r.inBytes.Add(float64(len(raw)))
		switch typ {
		case association.TypePDataTF:
			if err := r.clientPData(raw, asm, st); err != nil {
				if !errors.Is(err, errEnded) && !r.ended.Load() {
					r.protocolFailure("client", err)
				}
				return
			}
		case association.TypeReleaseRQ, association.TypeReleaseRP:
			c.log.Trace("release", "from", "client", "type", typ)
			if typ == association.TypeReleaseRP {
				// Recorded before the RP is forwarded: the backend closes as
				// soon as it has it, and its pump must then see an ended
				// association, not a lost connection.
				if !r.end(endOutcome{released: true}) {
					return
				}
				// The backend asked for the release and is the one to close
				// (PS3.8); give it a moment, then end both.
				_ = r.b.SetReadDeadline(time.Now().Add(2 * time.Second))
			}
			if err := r.bw.writeRaw(raw); err != nil {
				r.sideFailed("backend", err, r.bw, r.cw)
				return
			}
			if testHookReleaseRPForwarded != nil && typ == association.TypeReleaseRP {
				testHookReleaseRPForwarded(r)
			}
			if typ == association.TypeReleaseRP {
				return
			}
		case association.TypeAbort:
			ab, _ := association.Decode(typ, raw[association.HeaderLen:])
			src, reason := "service-user", ""
			if a, ok := ab.(*association.Abort); ok {
				src, reason = a.Source.String(), a.Reason.String()
			}
			r.endWith(endOutcome{abortSource: "client:" + src, abortReason: reason}, func() {
				_ = r.bw.writeRaw(raw) // A-ABORT carried through
			})
			r.closeBoth()
			return
		default:
			// PS3.8 Sta6: an A-ASSOCIATE-* PDU in an established association.
			r.protocolFailure("client", association.Unexpected(typ))
			return
		}
	}
}

// pumpBackend forwards backend PDUs to the client (its own goroutine).
func (r *relay) pumpBackend() {
	c := r.c
	asm := &dimse.Assembler{}
	st := &r.bst
	_ = r.b.SetReadDeadline(time.Now().Add(r.idle()))
	for {
		typ, raw, ok := r.nextPDU("backend", r.br, r.b, r.bin, r.bw, r.cw)
		if !ok {
			return
		}
		switch typ {
		case association.TypePDataTF:
			if err := r.backendPData(raw, asm, st); err != nil {
				r.protocolFailure("backend", err)
				return
			}
			if r.rae != nil {
				out, replaced, err := r.rae.PData(nil, raw)
				if err != nil {
					r.protocolFailure("backend", err)
					return
				}
				if replaced {
					if len(out) == 0 {
						continue // an identifier's fragment, held until its last
					}
					raw = out
				}
			}
		case association.TypeReleaseRQ:
			c.log.Trace("release", "from", "backend")
		case association.TypeReleaseRP:
			// Recorded before the RP is forwarded: the client closes as soon
			// as it has it, and its pump must then see an ended association,
			// not a lost connection.
			if r.end(endOutcome{released: true}) {
				// PS3.8: the requestor closes the transport after A-RELEASE-RP;
				// give the client a moment, then stop its pump.
				_ = c.tc.SetReadDeadline(time.Now().Add(2 * time.Second))
				if err := r.cw.writeRaw(raw); err == nil {
					r.outBytes.Add(float64(len(raw)))
				}
				if testHookReleaseRPForwarded != nil {
					testHookReleaseRPForwarded(r)
				}
			}
			r.b.Close()
			return
		case association.TypeAbort:
			ab, _ := association.Decode(typ, raw[association.HeaderLen:])
			src, reason := "service-provider", ""
			if a, ok := ab.(*association.Abort); ok {
				src, reason = a.Source.String(), a.Reason.String()
			}
			r.endWith(endOutcome{abortSource: "backend:" + src, abortReason: reason}, func() {
				// Carried through unchanged (as the client's is); a
				// malformed one is replaced by the edge's own.
				if _, ok := ab.(*association.Abort); ok {
					r.cw.writeAbort(raw)
				} else {
					r.abortTo(r.cw, association.AbortReasonNotSpecified)
				}
			})
			r.closeBoth()
			return
		default:
			r.protocolFailure("backend", association.Unexpected(typ))
			return
		}
		write := r.cw.writeRaw
		if typ == association.TypePDataTF {
			write = r.cw.writeQueued
		}
		if err := write(raw); err != nil {
			if !r.ended.Load() {
				r.sideFailed("client", err, r.cw, r.bw)
			}
			return
		}
		r.outBytes.Add(float64(len(raw)))
	}
}
