package association

import (
	"errors"
	"fmt"
	"io"
)

// DefaultMaxPDULength is the Reader's limit on a PDU's length field when
// NewReader is given 0. It bounds what a peer can make us hold.
const DefaultMaxPDULength = 4 << 20

// growStep bounds how far ahead of the bytes actually received the buffer
// grows, so a peer that announces a large PDU and then stalls does not make
// us allocate the whole announced length.
const growStep = 64 << 10

// Reader reads whole PDUs from a stream. It checks the length field against
// its limit before allocating, and reuses one buffer for every PDU.
type Reader struct {
	r   io.Reader
	max uint32
	buf []byte
}

// NewReader returns a Reader that refuses PDUs whose length field (the bytes
// after the 6-byte header) exceeds maxPDULength; 0 means DefaultMaxPDULength.
func NewReader(r io.Reader, maxPDULength uint32) *Reader {
	rd := &Reader{r: r}
	rd.SetLimit(maxPDULength)
	return rd
}

// SetLimit changes the length limit, e.g. once the association has
// negotiated its maximum PDU length.
func (r *Reader) SetLimit(maxPDULength uint32) {
	if maxPDULength == 0 {
		maxPDULength = DefaultMaxPDULength
	}
	r.max = maxPDULength
}

// Limit returns the current limit on a PDU's length field.
func (r *Reader) Limit() uint32 { return r.max }

// Next reads the next PDU and returns its type and raw bytes (header and
// body), valid until the next call. At a clean end of stream between PDUs it
// returns io.EOF; a stream that ends inside a PDU gives io.ErrUnexpectedEOF.
// An unknown PDU type or a length over the limit gives a *ProtocolError
// before the body is read.
func (r *Reader) Next() (PDUType, []byte, error) {
	if cap(r.buf) < HeaderLen {
		r.buf = make([]byte, HeaderLen, 1024)
	}
	hdr := r.buf[:HeaderLen]
	if _, err := io.ReadFull(r.r, hdr); err != nil {
		return 0, nil, err // io.EOF only when no byte of the header came
	}
	typ := PDUType(hdr[0])
	n := uint32(hdr[2])<<24 | uint32(hdr[3])<<16 | uint32(hdr[4])<<8 | uint32(hdr[5])
	if !typ.Known() {
		return typ, nil, protoErr(AbortUnrecognizedPDU, "PDU type 0x%02x", uint8(typ))
	}
	if n > r.max {
		return typ, nil, protoErr(AbortInvalidPDUParameterValue, "%v length %d exceeds the limit %d", typ, n, r.max)
	}
	need := HeaderLen + int(n)
	buf := r.buf[:HeaderLen]
	for len(buf) < need {
		if len(buf) == cap(buf) {
			c := min(need, max(2*cap(buf), len(buf)+growStep))
			nb := make([]byte, len(buf), c)
			copy(nb, buf)
			buf = nb
			r.buf = nb
		}
		end := min(need, cap(buf))
		m, err := io.ReadFull(r.r, buf[len(buf):end])
		buf = buf[:len(buf)+m]
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return typ, nil, fmt.Errorf("reading %v body: %w", typ, err)
		}
	}
	return typ, buf, nil
}

// ReadPDU reads and decodes the next PDU. A P-DATA-TF's PDV data alias the
// Reader's buffer and are valid until the next call.
func (r *Reader) ReadPDU() (PDU, error) {
	typ, raw, err := r.Next()
	if err != nil {
		return nil, err
	}
	return Decode(typ, raw[HeaderLen:])
}

// Release drops the Reader's buffer (the last raw PDU becomes invalid), so
// an association that goes idle after large PDUs holds no more than a small
// header buffer; the next Next allocates again as bytes arrive.
func (r *Reader) Release() { r.buf = nil }
