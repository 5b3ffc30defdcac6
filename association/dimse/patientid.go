package dimse

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/dicomedge/dicomedge/association"
)

const (
	tagPatientID          = 0x00100020
	tagStudyInstanceUID   = 0x0020000D
	tagSOPClassUID        = 0x00080016
	tagSOPInstanceUID     = 0x00080018
	undefinedLength       = 0xFFFFFFFF
	maxPatientIDLen       = 256 // LO is at most 64 characters; allow slack, never more
	maxSequenceDepth      = 32
	tagItem               = 0xFFFEE000
	tagItemDelimitation   = 0xFFFEE00D
	tagSequenceDelimitate = 0xFFFEE0DD
)

// PatientIDScanner finds Patient ID (0010,0020) and Study Instance UID
// (0020,000D) in a data set fed to it in fragments, as the C-STORE data-set
// PDVs arrive. It holds at most one element header and the value being
// read, skips other values by their
// length as they pass (pixel data included) and walks undefined-length
// sequences and encapsulated pixel data without looking inside. It reads
// the whole top level: PS3.5 7.1 puts elements in ascending order, but a
// crafted data set may put Patient ID after group 0020, and a PACS that
// sorts what it receives stores it all the same. A second, different
// Patient ID at the top level makes the result undetermined. With an Order
// set (SetOrder) it also checks that the top-level elements come in
// strictly ascending tag order, as PS3.5 7.1 requires. Explicit VR
// Little Endian (and the encapsulated syntaxes built on it) and Implicit VR
// Little Endian are understood; for deflated or big-endian data sets it
// gives up at once, and says so (Undetermined).
type PatientIDScanner struct {
	explicit bool
	done     bool
	found    bool
	id       string
	why      string // why the scanner gave up without a certain Patient ID
	study    string
	hasStudy bool
	// The data set's own SOP Class and Instance UIDs (the first of each),
	// which a receiver compares with the command's.
	sopClass, sopInstance       string
	hasSOPClass, hasSOPInstance bool

	hdr      [12]byte
	nhdr     int
	skip     uint32 // value bytes still to pass over
	value    []byte // collecting the value of valueTag
	valueTag uint32
	want     uint32 // its length
	depth    int    // undefined-length sequences we are inside

	order      Order
	last       uint32 // the last top-level tag seen (order checked)
	hasLast    bool
	disorder   [2]uint32 // the first pair out of order: the earlier tag, then the one that broke the order
	disordered bool
}

// Order is what a PatientIDScanner does about top-level elements that are
// not in strictly ascending tag order, or a tag that repeats: PS3.5 7.1
// forbids both, and a data set that has them reads differently to
// different parsers (a PACS may index the first Patient ID, another reader
// the second).
type Order uint8

const (
	// OrderIgnore: the order is not checked; a second, different Patient
	// ID makes the result undetermined.
	OrderIgnore Order = iota
	// OrderRefuse: the first pair out of order stops the scan; Disorder
	// names it, and the caller refuses the data set.
	OrderRefuse
	// OrderAllow: the first pair out of order is noted (Disorder) and the
	// scan goes on; Patient ID is the first one, as a PACS that keeps the
	// first of two reads it.
	OrderAllow
)

// SetOrder sets what the scanner does about elements out of order; call it
// before the first Feed.
func (s *PatientIDScanner) SetOrder(o Order) { s.order = o }

// Disorder returns the first pair of top-level tags out of strictly
// ascending order (PS3.5 7.1): prev came first, next after it with a tag
// no greater. ok is false when the order was not checked or held.
func (s *PatientIDScanner) Disorder() (prev, next uint32, ok bool) {
	return s.disorder[0], s.disorder[1], s.disordered
}

// DisorderText describes the pair Disorder returns, e.g. "(0010,0020)
// repeated" or "(0010,0010) after (0010,0020)".
func (s *PatientIDScanner) DisorderText() string {
	if !s.disordered {
		return ""
	}
	prev, next := s.disorder[0], s.disorder[1]
	if prev == next {
		return FormatTag(next) + " repeated"
	}
	return FormatTag(next) + " after " + FormatTag(prev)
}

// FormatTag writes a tag as DICOM does, "(gggg,eeee)" in upper-case hex.
func FormatTag(t uint32) string { return fmt.Sprintf("(%04X,%04X)", t>>16, t&0xFFFF) }

// NewPatientIDScanner returns a scanner for data sets in the given transfer
// syntax.
func NewPatientIDScanner(transferSyntaxUID string) *PatientIDScanner {
	s := &PatientIDScanner{explicit: true}
	switch transferSyntaxUID {
	case association.ImplicitVRLittleEndian:
		s.explicit = false
	case association.DeflatedExplicitVRLittleEndian, association.ExplicitVRBigEndian:
		s.giveUp("the transfer syntax " + transferSyntaxUID + " is not scanned")
	}
	return s
}

// Done reports that feeding more data cannot change the result.
func (s *PatientIDScanner) Done() bool { return s.done }

// PatientID returns the value found, trimmed of padding; false when there
// is none or it could not be determined.
func (s *PatientIDScanner) PatientID() (string, bool) {
	if !s.found || s.why != "" {
		return "", false
	}
	return s.id, true
}

// StudyInstanceUID returns the (first) Study Instance UID found, trimmed of
// padding.
func (s *PatientIDScanner) StudyInstanceUID() (string, bool) { return s.study, s.hasStudy }

// SOPInstanceUID and SOPClassUID return the data set's (first) SOP
// Instance UID (0008,0018) and SOP Class UID (0008,0016), trimmed of
// padding.
func (s *PatientIDScanner) SOPInstanceUID() (string, bool) { return s.sopInstance, s.hasSOPInstance }

// SOPClassUID: see SOPInstanceUID.
func (s *PatientIDScanner) SOPClassUID() (string, bool) { return s.sopClass, s.hasSOPClass }

// Walked reports that the scanner read the whole data set fed so far, to
// an element boundary at the top level, without giving up: what it did
// not find is not there.
func (s *PatientIDScanner) Walked() bool {
	return !s.done && s.nhdr == 0 && s.skip == 0 && s.value == nil && s.depth == 0
}

// Cut reports that the data set fed so far ends inside an element (an
// element header, a value or a sequence), as far as a scanner that did
// not give up can tell.
func (s *PatientIDScanner) Cut() bool {
	return !s.done && (s.nhdr > 0 || s.skip > 0 || s.value != nil || s.depth > 0)
}

// Undetermined says why the data set fed so far does not tell its Patient
// ID for certain, or "" when it does (found, or a complete top level
// without one). Call it once the whole data set was fed.
func (s *PatientIDScanner) Undetermined() string {
	switch {
	case s.why != "":
		return s.why
	case s.nhdr > 0 || s.skip > 0 || s.value != nil || s.depth > 0:
		return "the data set ended inside an element"
	}
	return ""
}

// Write feeds data-set bytes; it never fails, so it can sit in an
// io.MultiWriter.
func (s *PatientIDScanner) Write(p []byte) (int, error) {
	s.Feed(p)
	return len(p), nil
}

// giveUp stops scanning; why, unless empty, is why the result is not
// certain.
func (s *PatientIDScanner) giveUp(why string) bool {
	s.done, s.value = true, nil
	if why != "" && s.why == "" {
		s.why = why
	}
	return true
}

// Feed scans the next fragment and reports whether the scanner is done.
func (s *PatientIDScanner) Feed(p []byte) bool {
	for len(p) > 0 && !s.done {
		if s.skip > 0 {
			n := min(uint32(len(p)), s.skip)
			s.skip -= n
			p = p[n:]
			continue
		}
		if s.value != nil {
			n := min(len(p), int(s.want)-len(s.value))
			s.value = append(s.value, p[:n]...)
			p = p[n:]
			if len(s.value) == int(s.want) {
				s.got(s.valueTag, s.value)
			}
			continue
		}
		need := s.headerLen()
		n := copy(s.hdr[s.nhdr:need], p)
		s.nhdr += n
		p = p[n:]
		if s.nhdr < need {
			continue
		}
		if need2 := s.headerLen(); need2 > need { // explicit VR with a 4-byte length
			continue
		}
		s.element()
		s.nhdr = 0
	}
	return s.done
}

// headerLen is how many header bytes the element being read needs, as far
// as the bytes so far tell.
func (s *PatientIDScanner) headerLen() int {
	if s.nhdr < 6 || !s.explicit {
		return 8
	}
	if s.hdr[0] == 0xFE && s.hdr[1] == 0xFF { // item tags have no VR
		return 8
	}
	switch string(s.hdr[4:6]) {
	case "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV":
		return 12
	}
	return 8
}

// element acts on a complete element header in s.hdr.
func (s *PatientIDScanner) element() {
	h := s.hdr[:s.nhdr]
	tag := uint32(binary.LittleEndian.Uint16(h[0:2]))<<16 | uint32(binary.LittleEndian.Uint16(h[2:4]))
	var length uint32
	vr := ""
	switch {
	case tag>>16 == 0xFFFE || !s.explicit:
		length = binary.LittleEndian.Uint32(h[4:8])
	case len(h) == 12:
		vr, length = string(h[4:6]), binary.LittleEndian.Uint32(h[8:12])
	default:
		vr, length = string(h[4:6]), uint32(binary.LittleEndian.Uint16(h[6:8]))
	}
	switch tag {
	case tagItem:
		if s.depth == 0 {
			s.giveUp("an item outside any sequence") // not a data set we understand
		} else if length != undefinedLength {
			s.skip = length
		}
		return
	case tagItemDelimitation:
		return
	case tagSequenceDelimitate:
		if s.depth == 0 {
			s.giveUp("a sequence delimiter outside any sequence")
			return
		}
		s.depth--
		return
	}
	if s.depth == 0 && s.order != OrderIgnore {
		if s.hasLast && tag <= s.last && !s.disordered {
			s.disorder, s.disordered = [2]uint32{s.last, tag}, true
			if s.order == OrderRefuse {
				s.giveUp("")
				return
			}
		}
		s.last, s.hasLast = max(s.last, tag), true
	}
	if s.depth == 0 {
		uid := (tag == tagStudyInstanceUID && !s.hasStudy || tag == tagSOPClassUID && !s.hasSOPClass ||
			tag == tagSOPInstanceUID && !s.hasSOPInstance) && length != undefinedLength && length <= maxPatientIDLen
		if tag == tagPatientID || uid {
			if length == undefinedLength {
				s.giveUp(fmt.Sprintf("Patient ID (0010,0020) of %d bytes", length))
				return
			}
			if length > maxPatientIDLen {
				// Not held; the walk goes on past it, so that what follows
				// is still checked for order.
				if s.why == "" {
					s.why = fmt.Sprintf("Patient ID (0010,0020) of %d bytes", length)
				}
				s.skip = length
				return
			}
			if length == 0 {
				s.got(tag, nil)
				return
			}
			s.valueTag, s.want, s.value = tag, length, make([]byte, 0, length)
			return
		}
	}
	if length == undefinedLength {
		// A sequence (or, in explicit VR, UN holding implicit-VR content,
		// which we do not follow).
		if vr == "UN" || s.depth >= maxSequenceDepth {
			s.giveUp("an undefined-length UN element, or sequences nested too deep")
			return
		}
		s.depth++
		return
	}
	s.skip = length
}

// got takes a complete top-level value of tag.
func (s *PatientIDScanner) got(tag uint32, v []byte) {
	s.value = nil
	t := strings.Trim(string(v), " \x00")
	switch tag {
	case tagStudyInstanceUID:
		s.study, s.hasStudy = t, true
	case tagSOPClassUID:
		s.sopClass, s.hasSOPClass = t, true
	case tagSOPInstanceUID:
		s.sopInstance, s.hasSOPInstance = t, true
	default:
		s.patientID(t)
	}
}

// patientID takes a top-level Patient ID value: the first, or a repeat of
// it; a different second value leaves the result undetermined.
func (s *PatientIDScanner) patientID(v string) {
	if s.found && s.order == OrderAllow {
		return // the first stands, as the PACS reads it
	}
	if s.found && v != s.id {
		s.giveUp("Patient ID (0010,0020) appears twice with different values")
		return
	}
	s.id, s.found = v, true
}
