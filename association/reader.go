package association

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"
)

// DefaultMaxPDULength is the Reader's limit on a PDU's length field when
// NewReader is given 0. It bounds what a peer can make us hold.
const DefaultMaxPDULength = 4 << 20

// growStep bounds how far ahead of the bytes actually received the buffer
// grows, so a peer that announces a large PDU and then stalls does not make
// us allocate the whole announced length.
const growStep = 64 << 10

// Buffers of 64 KiB (class 16) up to 16 MiB (class 24) are pooled by power
// of two, so that a Reader released between PDUs (an association about to
// wait for its peer) gets one back without allocating.
const (
	minPoolClass = 16
	maxPoolClass = 24
)

var bufPools [maxPoolClass + 1]sync.Pool

// getBuf returns a pooled buffer of capacity at least n, or nil. The
// buffer travels in its box (*[]byte), which putBuf reuses so that pooling
// allocates nothing.
func getBuf(n int) *[]byte {
	k := max(bits.Len(uint(n-1)), minPoolClass) // smallest k with 1<<k >= n
	if k > maxPoolClass {
		return nil
	}
	p, _ := bufPools[k].Get().(*[]byte)
	return p
}

// putBuf pools b by the largest class its capacity covers; box may be nil.
func putBuf(box *[]byte, b []byte) {
	k := bits.Len(uint(cap(b))) - 1 // 1<<k <= cap
	if k < minPoolClass {
		return
	}
	if box == nil {
		box = new([]byte)
	}
	*box = b[:0]
	bufPools[min(k, maxPoolClass)].Put(box)
}

// Reader reads whole PDUs from a stream. It checks the length field against
// its limit before allocating, and reuses one buffer for every PDU.
type Reader struct {
	r      io.Reader
	max    uint32
	hdr    [HeaderLen]byte // between PDUs nothing else is needed
	buf    []byte
	box    *[]byte // buf's box when it came from the pool
	inBody bool    // Release must not take the buffer a body is read into
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
// body), valid until the next call (or Release). At a clean end of stream
// between PDUs it returns io.EOF; a stream that ends inside a PDU gives
// io.ErrUnexpectedEOF. An unknown PDU type or a length over the limit gives
// a *ProtocolError before the body is read.
func (r *Reader) Next() (PDUType, []byte, error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		return 0, nil, err // io.EOF only when no byte of the header came
	}
	hdr := r.hdr[:]
	typ := PDUType(hdr[0])
	n := uint32(hdr[2])<<24 | uint32(hdr[3])<<16 | uint32(hdr[4])<<8 | uint32(hdr[5])
	if !typ.Known() {
		return typ, nil, protoErr(AbortUnrecognizedPDU, "PDU type 0x%02x", uint8(typ))
	}
	if n > r.max {
		return typ, nil, protoErr(AbortInvalidPDUParameterValue, "%v length %d exceeds the limit %d", typ, n, r.max)
	}
	if (typ == TypeAssociateRQ || typ == TypeAssociateAC) && n > MaxAssociateLength {
		return typ, nil, protoErr(AbortInvalidPDUParameterValue, "%v length %d exceeds %d", typ, n, MaxAssociateLength)
	}
	need := HeaderLen + int(n)
	if cap(r.buf) < need {
		// A pooled buffer is memory already held, so taking one as large as
		// the announced length costs nothing; only fresh allocations grow
		// with the bytes received.
		if box := getBuf(need); box != nil {
			r.dropBuf()
			r.buf, r.box = *box, box
		}
	}
	switch {
	case cap(r.buf) >= need:
	case need <= 1024:
		r.buf = make([]byte, 0, 1024)
	case need <= 1<<minPoolClass:
		// Within one growStep anyway, and of a size the pool keeps.
		r.buf = make([]byte, 0, 1<<minPoolClass)
	}
	buf := append(r.buf[:0], hdr...)
	r.inBody = true
	defer func() { r.inBody = false }()
	for len(buf) < need {
		if len(buf) == cap(buf) {
			c := min(need, max(2*cap(buf), len(buf)+growStep))
			nb := make([]byte, len(buf), c)
			copy(nb, buf)
			r.dropBuf()
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

// Release gives the Reader's buffer back (the last raw PDU becomes invalid),
// so an association waiting for its peer after large PDUs holds no PDU
// buffer at all; the next Next takes one again. Called while a PDU body is
// being read (e.g. from a hook of the underlying reader), it does nothing.
func (r *Reader) Release() {
	if r.inBody {
		return
	}
	r.dropBuf()
}

func (r *Reader) dropBuf() {
	if r.buf != nil {
		putBuf(r.box, r.buf)
		r.buf, r.box = nil, nil
	}
}
