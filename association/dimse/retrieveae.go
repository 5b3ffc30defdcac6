package dimse

import (
	"encoding/binary"

	"github.com/dicomedge/dicomedge/association"
)

// TagRetrieveAETitle is Retrieve AE Title (0008,0054), VR AE, VM 1-n: in a
// C-FIND response identifier, the AE titles a C-MOVE or C-GET for the
// matched entity can be sent to (PS3.4 C.4.1.1.3.2, PS3.6).
const TagRetrieveAETitle = 0x00080054

// maxNesting bounds how deep sequences are followed while skipping them.
const maxNesting = 16

// RewriteRetrieveAETitle returns the data set ds (a whole C-FIND identifier
// encoded in transferSyntax) with each value of the top-level Retrieve AE
// Title (0008,0054) that equals from (spaces around it not significant)
// replaced by to, the element's length and padding re-encoded. Other
// values, other elements and nested data sets are left as they are. The
// result is appended to dst. changed is false, and out is ds itself, when
// nothing was replaced, when the transfer syntax is neither Implicit nor
// Explicit VR Little Endian, or when ds cannot be parsed: an identifier the
// edge does not understand is passed on untouched. It reads ds once and
// holds nothing beyond it (sequences are skipped, at most 16 deep).
func RewriteRetrieveAETitle(dst, ds []byte, transferSyntax, from, to string) (out []byte, changed bool) {
	var explicit bool
	switch transferSyntax {
	// The syntaxes of PS3.5 A.1 and A.2; deflated and big endian
	// identifiers are left alone.
	case association.ImplicitVRLittleEndian:
	case association.ExplicitVRLittleEndian:
		explicit = true
	default:
		return ds, false
	}
	from, to = association.TrimAE(from), association.TrimAE(to)
	if from == "" || to == "" || from == to || !association.ValidAE(to) {
		return ds, false
	}
	// First pass: find the element(s) to rewrite, so that an identifier
	// without a match costs no copy.
	type span struct{ start, valStart, end int }
	var spans []span
	for off := 0; off < len(ds); {
		e, ok := readElement(ds, off, explicit)
		if !ok {
			return ds, false
		}
		if e.tag == TagRetrieveAETitle && e.defined && (!explicit || e.vr == [2]byte{'A', 'E'}) {
			if v, hit := replaceAE(nil, ds[e.valStart:e.end], from, to); hit && len(v) <= 0xfffe {
				spans = append(spans, span{off, e.valStart, e.end})
			}
		}
		next, ok := skipElement(ds, e, explicit, 0)
		if !ok {
			return ds, false
		}
		off = next
	}
	if len(spans) == 0 {
		return ds, false
	}
	out = dst
	prev := 0
	for _, s := range spans {
		out = append(out, ds[prev:s.start]...)
		out = binary.LittleEndian.AppendUint16(out, TagRetrieveAETitle>>16)
		out = binary.LittleEndian.AppendUint16(out, TagRetrieveAETitle&0xffff)
		lenAt := len(out)
		if explicit {
			out = append(out, 'A', 'E', 0, 0)
		} else {
			out = append(out, 0, 0, 0, 0)
		}
		valAt := len(out)
		out, _ = replaceAE(out, ds[s.valStart:s.end], from, to)
		if n := len(out) - valAt; explicit {
			binary.LittleEndian.PutUint16(out[lenAt+2:], uint16(n))
		} else {
			binary.LittleEndian.PutUint32(out[lenAt:], uint32(n))
		}
		prev = s.end
	}
	return append(out, ds[prev:]...), true
}

// replaceAE appends to dst the backslash-separated AE values of v with
// each that is from (spaces and NULs around it not significant) replaced by
// to, padded to even length with a space (PS3.5 6.2); hit reports whether
// any value was from. With hit false nothing is appended.
func replaceAE(dst, v []byte, from, to string) (out []byte, hit bool) {
	for rest := v; ; {
		val, more, found := bytesCut(rest, '\\')
		if association.TrimAE(string(val)) == from {
			hit = true
			break
		}
		if !found {
			break
		}
		rest = more
	}
	if !hit {
		return dst, false
	}
	// The old padding goes (trailing spaces are not significant, PS3.5
	// 6.2), so that the value is padded once, to even length, below.
	for len(v) > 0 && v[len(v)-1] == ' ' {
		v = v[:len(v)-1]
	}
	start := len(dst)
	for rest, first := v, true; ; first = false {
		val, more, found := bytesCut(rest, '\\')
		if !first {
			dst = append(dst, '\\')
		}
		if association.TrimAE(string(val)) == from {
			dst = append(dst, to...)
		} else {
			dst = append(dst, val...)
		}
		if !found {
			break
		}
		rest = more
	}
	if (len(dst)-start)%2 == 1 {
		dst = append(dst, ' ')
	}
	return dst, true
}

// bytesCut is bytes.Cut for one separator byte.
func bytesCut(b []byte, sep byte) (before, after []byte, found bool) {
	for i, c := range b {
		if c == sep {
			return b[:i], b[i+1:], true
		}
	}
	return b, nil, false
}

// element is one data element header as read by readElement.
type element struct {
	tag      uint32
	vr       [2]byte // explicit VR only
	valStart int
	end      int  // valStart + length, when defined
	defined  bool // false: undefined length (0xFFFFFFFF), a sequence or encapsulated value
}

// longVR are the explicit VRs with a 2-byte reserved field and a 4-byte
// length (PS3.5 7.1.2).
func longVR(vr [2]byte) bool {
	switch string(vr[:]) {
	case "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV":
		return true
	}
	return false
}

// readElement reads the header of the element at off; ok is false when it
// is truncated or its length runs past the end of b.
func readElement(b []byte, off int, explicit bool) (element, bool) {
	if len(b)-off < 8 {
		return element{}, false
	}
	group := binary.LittleEndian.Uint16(b[off:])
	elem := binary.LittleEndian.Uint16(b[off+2:])
	e := element{tag: uint32(group)<<16 | uint32(elem)}
	var n uint32
	// Item and delimitation tags (FFFE,xxxx) have no VR in any syntax.
	if explicit && group != 0xfffe {
		e.vr = [2]byte{b[off+4], b[off+5]}
		if longVR(e.vr) {
			if len(b)-off < 12 {
				return element{}, false
			}
			n = binary.LittleEndian.Uint32(b[off+8:])
			e.valStart = off + 12
		} else {
			n = uint32(binary.LittleEndian.Uint16(b[off+6:]))
			e.valStart = off + 8
		}
	} else {
		n = binary.LittleEndian.Uint32(b[off+4:])
		e.valStart = off + 8
	}
	if n == 0xffffffff {
		return e, true
	}
	if uint64(n) > uint64(len(b)-e.valStart) {
		return element{}, false
	}
	e.defined, e.end = true, e.valStart+int(n)
	return e, true
}

// skipElement returns the offset after e: its end when its length is
// defined, else after the delimiter that closes it.
func skipElement(b []byte, e element, explicit bool, depth int) (int, bool) {
	if e.defined {
		return e.end, true
	}
	if depth >= maxNesting {
		return 0, false
	}
	// A UN of undefined length holds Implicit VR Little Endian (PS3.5
	// 6.2.2); a sequence or encapsulated value keeps the syntax.
	if e.vr == [2]byte{'U', 'N'} {
		explicit = false
	}
	return skipUntil(b, e.valStart, explicit, depth+1, 0xfffee0dd)
}

// skipUntil skips elements (or items) from off until the delimiter tag
// delim, returning the offset after it.
func skipUntil(b []byte, off int, explicit bool, depth int, delim uint32) (int, bool) {
	for off < len(b) {
		e, ok := readElement(b, off, explicit)
		if !ok {
			return 0, false
		}
		switch {
		case e.tag == delim:
			return e.valStart, true // delimiters have length 0; it is not checked
		case e.tag == 0xfffee000 && !e.defined:
			// An item of undefined length: a data set up to its item delimiter.
			if depth >= maxNesting {
				return 0, false
			}
			next, ok := skipUntil(b, e.valStart, explicit, depth+1, 0xfffee00d)
			if !ok {
				return 0, false
			}
			off = next
		default:
			next, ok := skipElement(b, e, explicit, depth)
			if !ok {
				return 0, false
			}
			off = next
		}
	}
	return 0, false
}

// DefaultMaxIdentifier bounds the C-FIND identifier a RetrieveAERewriter
// holds when MaxHeld is 0. Identifiers are a few hundred bytes; one larger
// than this is passed on unchanged rather than held.
const DefaultMaxIdentifier = 64 << 10

// RetrieveAEFilter rewrites the Retrieve AE Title of one C-FIND identifier
// as its fragments pass (the relay's inspection feeds it each data-set
// fragment in order): fragments are held, up to MaxHeld bytes, until the
// last, which returns the whole identifier rewritten by
// RewriteRetrieveAETitle. An identifier larger than MaxHeld passes
// unchanged. It does no I/O.
type RetrieveAEFilter struct {
	From, To       string // the SCP's AE title; the AE title to put in its place
	TransferSyntax string // the presentation context's
	MaxHeld        int    // 0 = DefaultMaxIdentifier

	held  []byte
	spill bool // outgrew MaxHeld: the rest passes as it comes
}

// Filter takes the next fragment of the identifier and returns, appended
// to dst, what to forward in its place (nothing while it is held).
func (f *RetrieveAEFilter) Filter(dst, data []byte, last bool) []byte {
	if f.spill {
		return append(dst, data...)
	}
	limit := f.MaxHeld
	if limit <= 0 {
		limit = DefaultMaxIdentifier
	}
	if len(f.held)+len(data) > limit {
		dst = append(append(dst, f.held...), data...)
		f.held, f.spill = nil, true
		return dst
	}
	f.held = append(f.held, data...)
	if !last {
		return dst
	}
	out, changed := RewriteRetrieveAETitle(dst, f.held, f.TransferSyntax, f.From, f.To)
	if !changed {
		out = append(dst, f.held...)
	}
	f.held = nil
	return out
}
