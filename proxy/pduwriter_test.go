package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
)

// discardConn is a net.Conn that swallows writes and counts the PDUs.
type discardConn struct {
	net.Conn
	writes int
	last   []byte
}

func (d *discardConn) Write(b []byte) (int, error) {
	d.writes++
	d.last = append(d.last[:0], b...)
	return len(b), nil
}
func (d *discardConn) Close() error                     { return nil }
func (d *discardConn) SetWriteDeadline(time.Time) error { return nil }
func (d *discardConn) SetReadDeadline(time.Time) error  { return nil }
func (d *discardConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

func pdvItem(ctx uint8, mch byte, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(data)+2))
	return append(append(b, ctx, mch), data...)
}

func pdataPDU(body []byte) []byte {
	b := []byte{byte(association.TypePDataTF), 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[2:], uint32(len(body)))
	return append(b, body...)
}

// recordConn records every write.
type recordConn struct {
	discardConn
	all [][]byte
}

func (r *recordConn) Write(b []byte) (int, error) {
	r.all = append(r.all, append([]byte(nil), b...))
	return r.discardConn.Write(b)
}

// The queue of forwarded PDUs: consecutive PDUs go out in one write at the
// flush, in order and byte for byte; a PDU the edge re-encodes (held
// command fragments) first sends what is queued; the queue never grows past
// queueMax, and a PDU of more than half of it is written without a copy.
func TestPDUWriterQueue(t *testing.T) {
	pdu := func(n int, fill byte) []byte {
		return pdataPDU(pdvItem(1, 2, bytes.Repeat([]byte{fill}, n)))
	}
	cases := []struct {
		name       string
		ops        func(w *pduWriter) error
		wantWrites [][]byte
	}{
		{"two PDUs, one flush", func(w *pduWriter) error {
			_ = w.writeQueued(pdu(100, 'a'))
			_ = w.writeQueued(pdu(200, 'b'))
			return w.flush()
		}, [][]byte{append(pdu(100, 'a'), pdu(200, 'b')...)}},
		{"flush with nothing queued writes nothing", func(w *pduWriter) error { return w.flush() }, nil},
		{"an unqueued write sends the queue first", func(w *pduWriter) error {
			_ = w.writeQueued(pdu(10, 'a'))
			return w.writeRaw(pdu(20, 'b'))
		}, [][]byte{pdu(10, 'a'), pdu(20, 'b')}},
		{"full queue goes out before the PDU that would overflow it", func(w *pduWriter) error {
			for range 3 {
				_ = w.writeQueued(pdu(100<<10, 'x'))
			}
			return w.flush()
		}, [][]byte{append(pdu(100<<10, 'x'), pdu(100<<10, 'x')...), pdu(100<<10, 'x')}},
		{"large PDU written directly after the queue", func(w *pduWriter) error {
			_ = w.writeQueued(pdu(10, 'a'))
			_ = w.writeQueued(pdu(queueMax/2+1, 'L'))
			return w.flush()
		}, [][]byte{pdu(10, 'a'), pdu(queueMax/2+1, 'L')}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc := &recordConn{}
			w := &pduWriter{c: rc}
			if err := tc.ops(w); err != nil {
				t.Fatal(err)
			}
			if len(rc.all) != len(tc.wantWrites) {
				t.Fatalf("%d writes, want %d", len(rc.all), len(tc.wantWrites))
			}
			for i := range rc.all {
				if !bytes.Equal(rc.all[i], tc.wantWrites[i]) {
					t.Errorf("write %d: %d bytes, want %d", i, len(rc.all[i]), len(tc.wantWrites[i]))
				}
			}
			if w.qbox != nil || int(w.bytes.Load()) != func() (n int) {
				for _, b := range tc.wantWrites {
					n += len(b)
				}
				return n
			}() {
				t.Errorf("after flush: queue held %v, bytes %d", w.qbox != nil, w.bytes.Load())
			}
		})
	}
}

// An A-ABORT discards what is queued and nothing is written after it.
func TestPDUWriterAbortDropsQueue(t *testing.T) {
	toBackend := &discardConn{}
	w := &pduWriter{c: toBackend}
	_ = w.writeQueued(pdataPDU(pdvItem(1, 2, []byte{1, 2, 3})))
	w.abort(association.AbortSourceServiceProvider, association.AbortReasonNotSpecified)
	if err := w.writeQueued(pdataPDU(pdvItem(1, 2, []byte{4}))); !errors.Is(err, errEnded) {
		t.Fatalf("write after abort: %v", err)
	}
	_ = w.flush()
	if toBackend.writes != 1 || association.PDUType(toBackend.last[0]) != association.TypeAbort {
		t.Fatalf("%d writes, last % x", toBackend.writes, toBackend.last)
	}
}
