package dimse

import (
	"encoding/binary"
	"strings"

	"github.com/dicomedge/dicomedge/association"
)

const (
	tagPatientID          = 0x00100020
	tagStudyInstanceUID   = 0x0020000D
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
// read, skips other values as they pass, walks undefined-length sequences,
// and gives up once the top level is past (0020,000D) (elements are in
// ascending order), so it costs nothing for the rest of the data set. Explicit VR Little Endian (and the encapsulated
// syntaxes built on it) and Implicit VR Little Endian are understood; for
// deflated or big-endian data sets it gives up at once.
type PatientIDScanner struct {
	explicit bool
	done     bool
	found    bool
	id       string
	study    string
	hasStudy bool

	hdr      [12]byte
	nhdr     int
	skip     uint32 // value bytes still to pass over
	value    []byte // collecting the value of valueTag
	valueTag uint32
	want     uint32 // its length
	depth    int    // undefined-length sequences we are inside
}

// NewPatientIDScanner returns a scanner for data sets in the given transfer
// syntax.
func NewPatientIDScanner(transferSyntaxUID string) *PatientIDScanner {
	s := &PatientIDScanner{explicit: true}
	switch transferSyntaxUID {
	case association.ImplicitVRLittleEndian:
		s.explicit = false
	case association.DeflatedExplicitVRLittleEndian, association.ExplicitVRBigEndian:
		s.done = true
	}
	return s
}

// Done reports that feeding more data cannot change the result.
func (s *PatientIDScanner) Done() bool { return s.done }

// PatientID returns the value found, trimmed of padding.
func (s *PatientIDScanner) PatientID() (string, bool) { return s.id, s.found }

// StudyInstanceUID returns the Study Instance UID found, trimmed of padding.
func (s *PatientIDScanner) StudyInstanceUID() (string, bool) { return s.study, s.hasStudy }

// got records a value of the top level and reports whether the scan is
// over (both found).
func (s *PatientIDScanner) got(tag uint32, v []byte) bool {
	t := strings.Trim(string(v), " \x00")
	if tag == tagPatientID {
		s.id, s.found = t, true
	} else {
		s.study, s.hasStudy = t, true
	}
	s.value = nil
	if s.found && s.hasStudy {
		return s.giveUp()
	}
	return false
}

// Write feeds data-set bytes; it never fails, so it can sit in an
// io.MultiWriter.
func (s *PatientIDScanner) Write(p []byte) (int, error) {
	s.Feed(p)
	return len(p), nil
}

func (s *PatientIDScanner) giveUp() bool { s.done = true; s.value = nil; return true }

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
			if len(s.value) == int(s.want) && s.got(s.valueTag, s.value) {
				return true
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
			s.giveUp() // an item outside any sequence: not a data set we understand
		} else if length != undefinedLength {
			s.skip = length
		}
		return
	case tagItemDelimitation:
		return
	case tagSequenceDelimitate:
		if s.depth == 0 {
			s.giveUp()
			return
		}
		s.depth--
		return
	}
	if s.depth == 0 {
		if tag > tagStudyInstanceUID {
			s.giveUp()
			return
		}
		if tag == tagPatientID || tag == tagStudyInstanceUID {
			if length == undefinedLength || length > maxPatientIDLen {
				s.giveUp()
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
			s.giveUp()
			return
		}
		s.depth++
		return
	}
	s.skip = length
}
