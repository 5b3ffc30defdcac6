package deid

import (
	"encoding/binary"
	"fmt"
)

// Tags of the item structure (PS3.5 7.5): they carry no VR in either
// encoding.
const (
	tagItem          = 0xFFFEE000
	tagItemDelim     = 0xFFFEE00D
	tagSequenceDelim = 0xFFFEE0DD
	undefinedLength  = 0xFFFFFFFF
	// Pixel Data is the one element whose value may be encapsulated in
	// fragments (PS3.5 A.4).
	tagPixelData = 0x7FE00010
)

// maxDepth bounds how deep sequences are followed (frames: items and
// sequences each count one).
const maxDepth = 64

// MalformedError is a data set the transform cannot read as PS3.5 encodes
// one: the caller refuses it.
type MalformedError struct {
	Offset int64
	Msg    string
	// Tags, for an ordering violation (PS3.5 7.1): the element before and
	// the one that broke the order.
	Prev, Tag uint32
	Order     bool
}

func (e *MalformedError) Error() string {
	return fmt.Sprintf("malformed data set at byte %d: %s", e.Offset, e.Msg)
}

type frameKind uint8

const (
	fData  frameKind = iota // a data set: the top level or an item's content
	fSeq                    // a sequence: items until its end
	fFrags                  // encapsulated pixel data: fragment items (PS3.5 A.4)
)

type frame struct {
	kind     frameKind
	end      int64 // absolute end offset, -1 for undefined length
	explicit bool
	lastTag  uint32 // fData: the last element's tag, for the order check
	seen     bool
	tag      uint32 // fSeq/fFrags: the element's tag
}

// elem is one element header as read.
type elem struct {
	tag uint32
	vr  vr // as written: the header's VR, what a rewritten header carries
	// as is the VR the value is read as: the attribute's VR in PS3.6 when
	// the dictionary knows the tag, so that a value sent with VR UN
	// (PS3.5 6.2.2) or under another VR is still cleaned as its attribute.
	as       vr
	seq      bool // a sequence: items follow (SQ, or UN holding one)
	length   uint32
	explicit bool
	raw      []byte // the header's bytes as they came
	depth    int    // 0 at the top level
}

// sink receives what the walker reads, in order.
type sink interface {
	// element decides what becomes of an element's value; for undefined
	// lengths and sequences the walker then reports items.
	element(w *walker, e *elem) error
	value(chunk []byte) error
	valueEnd() error
	// item is an item header (in a sequence, or a fragment of
	// encapsulated pixel data, whose value follows as value chunks).
	item(w *walker, e *elem) error
	itemEnd(raw []byte) error // an item's end (raw: its delimiter, nil for a defined length)
	seqEnd(raw []byte) error  // a sequence's or fragments' end
}

// walker reads a data set's elements from bytes in any fragmentation
// (PS3.5 7.1-7.5), holding only a header's bytes between calls.
type walker struct {
	pos     int64
	hdr     [12]byte
	hn      int
	inValue bool
	remain  int64 // value bytes still to come
	stack   []frame
	sink    sink
}

func newWalker(explicit bool, s sink) *walker {
	w := &walker{sink: s}
	w.stack = append(make([]frame, 0, 8), frame{kind: fData, end: -1, explicit: explicit})
	return w
}

func (w *walker) top() *frame { return &w.stack[len(w.stack)-1] }

func (w *walker) malformed(format string, args ...any) error {
	return &MalformedError{Offset: w.pos, Msg: fmt.Sprintf(format, args...)}
}

// feed reads b; it returns how many bytes it consumed (all of them unless
// the sink stopped it or an error ended the walk).
func (w *walker) feed(b []byte) (int, error) {
	start := len(b)
	for len(b) > 0 {
		if w.inValue {
			n := int(min(int64(len(b)), w.remain))
			if err := w.sink.value(b[:n]); err != nil {
				return start - len(b), err
			}
			b = b[n:]
			w.pos += int64(n)
			w.remain -= int64(n)
			if w.remain == 0 {
				w.inValue = false
				if err := w.sink.valueEnd(); err != nil {
					return start - len(b), err
				}
				if err := w.popEnded(); err != nil {
					return start - len(b), err
				}
			}
			continue
		}
		need := w.headerLen()
		if need > w.hn {
			n := copy(w.hdr[w.hn:need], b)
			w.hn += n
			b = b[n:]
			if w.hn < need {
				continue
			}
			if need2 := w.headerLen(); need2 > need {
				continue // the VR asked for the long form: read on
			}
		}
		err := w.header()
		if err != nil {
			return start - len(b), err
		}
	}
	return start, nil
}

// headerLen is how many header bytes the next unit needs, from what is
// held so far.
func (w *walker) headerLen() int {
	if w.hn < 4 {
		return 8
	}
	tag := uint32(binary.LittleEndian.Uint16(w.hdr[0:]))<<16 | uint32(binary.LittleEndian.Uint16(w.hdr[2:]))
	f := w.top()
	if tag>>16 == 0xFFFE || !f.explicit || f.kind != fData {
		return 8
	}
	if w.hn < 6 {
		return 8
	}
	if mkVR(string(w.hdr[4:6])).longHeader() {
		return 12
	}
	return 8
}

// header acts on a complete header held in w.hdr[:w.hn].
func (w *walker) header() error {
	raw := w.hdr[:w.hn]
	tag := uint32(binary.LittleEndian.Uint16(raw[0:]))<<16 | uint32(binary.LittleEndian.Uint16(raw[2:]))
	f := w.top()
	e := elem{tag: tag, raw: raw, depth: w.depth(), explicit: f.explicit}
	switch f.kind {
	case fSeq, fFrags:
		e.length = binary.LittleEndian.Uint32(raw[4:])
		switch tag {
		case tagItem:
		case tagSequenceDelim:
			if f.end >= 0 || e.length != 0 {
				return w.malformed("sequence delimiter in a sequence of defined length, or with a length")
			}
			w.consume()
			w.stack = w.stack[:len(w.stack)-1]
			if err := w.sink.seqEnd(raw); err != nil {
				return err
			}
			return w.popEnded()
		default:
			return w.malformed("tag %s where an item was expected", FormatTag(tag))
		}
		if f.kind == fFrags && e.length == undefinedLength {
			return w.malformed("fragment item of undefined length")
		}
		if err := w.checkFits(8, e.length); err != nil {
			return err
		}
		if err := w.sink.item(w, &e); err != nil {
			return err
		}
		w.consume()
		if f.kind == fFrags {
			return w.startValue(int64(e.length))
		}
		if len(w.stack) >= maxDepth {
			return w.malformed("sequences nested deeper than %d", maxDepth/2)
		}
		end := int64(-1)
		if e.length != undefinedLength {
			end = w.pos + int64(e.length)
		}
		w.stack = append(w.stack, frame{kind: fData, end: end, explicit: f.explicit})
		return w.popEnded()
	}
	// An element, or the end of an item.
	if tag == tagItemDelim {
		if len(w.stack) == 1 || f.end >= 0 {
			return w.malformed("item delimiter outside an item of undefined length")
		}
		w.consume()
		w.stack = w.stack[:len(w.stack)-1]
		if err := w.sink.itemEnd(raw); err != nil {
			return err
		}
		return w.popEnded()
	}
	if tag>>16 == 0xFFFE {
		return w.malformed("item tag %s among elements", FormatTag(tag))
	}
	if f.seen && tag <= f.lastTag {
		return &MalformedError{Offset: w.pos, Prev: f.lastTag, Tag: tag, Order: true,
			Msg: fmt.Sprintf("element %s after %s: not in ascending tag order (PS3.5 7.1)", FormatTag(tag), FormatTag(f.lastTag))}
	}
	known := lookupVR(tag)
	if f.explicit {
		e.vr = mkVR(string(raw[4:6]))
		if !e.vr.known() {
			return w.malformed("element %s has an unknown VR %q", FormatTag(tag), raw[4:6])
		}
		if len(raw) == 12 {
			e.length = binary.LittleEndian.Uint32(raw[8:])
		} else {
			e.length = uint32(binary.LittleEndian.Uint16(raw[6:]))
		}
	} else {
		e.vr = known
		e.length = binary.LittleEndian.Uint32(raw[4:])
	}
	e.as = e.vr
	if known != vrUN {
		e.as = known
	}
	// Whether items follow: SQ, or UN holding a sequence in Implicit VR
	// Little Endian (PS3.5 6.2.2), of undefined length or, for a tag the
	// dictionary knows as a sequence, of any length.
	e.seq = e.vr == vrSQ || e.vr == vrUN && (e.length == undefinedLength || known == vrSQ)
	switch {
	case known == vrSQ && !e.seq:
		// Read as a value, a sequence's items would pass unexamined.
		return w.malformed("element %s is a sequence in PS3.6 but came with VR %s", FormatTag(tag), e.vr)
	case known != vrSQ && known != vrUN && e.seq:
		// Read as items, a value would escape its attribute's action.
		return w.malformed("element %s (%s in PS3.6) came as a sequence", FormatTag(tag), known)
	}
	if e.length == undefinedLength {
		switch {
		case e.seq:
		case (e.vr == vrOB || e.vr == vrOW) && tag == tagPixelData:
			// Encapsulated Pixel Data: fragments (PS3.5 A.4).
		default:
			// Fragments under any other tag would go out as they came,
			// whatever the attribute's action.
			return w.malformed("element %s (%s) has an undefined length", FormatTag(tag), e.vr)
		}
	} else if err := w.checkFits(len(raw), e.length); err != nil {
		return err
	}
	if err := w.sink.element(w, &e); err != nil {
		return err
	}
	f.lastTag, f.seen = tag, true
	w.consume()
	switch {
	case e.seq && e.length == undefinedLength:
		w.stack = append(w.stack, frame{kind: fSeq, end: -1, explicit: f.explicit && e.vr == vrSQ, tag: tag})
		return nil
	case e.seq:
		w.stack = append(w.stack, frame{kind: fSeq, end: w.pos + int64(e.length), explicit: f.explicit && e.vr == vrSQ, tag: tag})
		return w.popEnded()
	case e.length == undefinedLength:
		w.stack = append(w.stack, frame{kind: fFrags, end: -1, explicit: f.explicit, tag: tag})
		return nil
	}
	return w.startValue(int64(e.length))
}

func (w *walker) depth() int {
	d := 0
	for _, f := range w.stack[1:] {
		if f.kind == fData {
			d++
		}
	}
	return d
}

// consume counts the held header as read.
func (w *walker) consume() {
	w.pos += int64(w.hn)
	w.hn = 0
}

// checkFits: a defined length must end within every enclosing container
// of defined length.
func (w *walker) checkFits(hdr int, length uint32) error {
	if length == undefinedLength {
		return nil
	}
	end := w.pos + int64(hdr) + int64(length)
	for i := len(w.stack) - 1; i >= 0; i-- {
		if e := w.stack[i].end; e >= 0 && end > e {
			return w.malformed("a length of %d runs past the end of its sequence or item", length)
		}
	}
	return nil
}

func (w *walker) startValue(n int64) error {
	if n == 0 {
		if err := w.sink.valueEnd(); err != nil {
			return err
		}
		return w.popEnded()
	}
	w.inValue, w.remain = true, n
	return nil
}

// popEnded closes every container of defined length that ends here.
func (w *walker) popEnded() error {
	for len(w.stack) > 1 {
		f := w.top()
		if f.end < 0 || w.pos < f.end {
			return nil
		}
		kind := f.kind
		w.stack = w.stack[:len(w.stack)-1]
		var err error
		if kind == fData {
			err = w.sink.itemEnd(nil)
		} else {
			err = w.sink.seqEnd(nil)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// finish checks that the data set ended where it may: between top-level
// elements.
func (w *walker) finish() error {
	if w.hn != 0 || w.inValue || len(w.stack) != 1 {
		return w.malformed("the data set ends inside an element, sequence or item")
	}
	return nil
}
