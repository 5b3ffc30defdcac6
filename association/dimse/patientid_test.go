package dimse

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/dicomedge/dicomedge/association"
)

// Data-set builders, Little Endian. ex writes an explicit-VR element, im an
// implicit one; u marks an undefined length.
const u = 0xFFFFFFFF

func tagBytes(g, e uint16) []byte {
	return binary.LittleEndian.AppendUint16(binary.LittleEndian.AppendUint16(nil, g), e)
}

func ex(g, e uint16, vr string, v []byte, length ...uint32) []byte {
	n := uint32(len(v))
	if len(length) > 0 {
		n = length[0]
	}
	b := append(tagBytes(g, e), vr...)
	switch vr {
	case "OB", "OW", "SQ", "UN", "UT":
		b = append(b, 0, 0)
		b = binary.LittleEndian.AppendUint32(b, n)
	default:
		b = binary.LittleEndian.AppendUint16(b, uint16(n))
	}
	return append(b, v...)
}

func im(g, e uint16, v []byte, length ...uint32) []byte {
	n := uint32(len(v))
	if len(length) > 0 {
		n = length[0]
	}
	return append(binary.LittleEndian.AppendUint32(tagBytes(g, e), n), v...)
}

// delim is an item or delimitation tag with its 4-byte length (no VR).
func delim(e uint16, n uint32) []byte { return im(0xFFFE, e, nil, n) }

func join(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestPatientIDScanner(t *testing.T) {
	pixels := ex(0x7FE0, 0x0010, "OW", make([]byte, 4000))
	codeItemEx := join(ex(0x0008, 0x0100, "SH", []byte("CODE1 ")), ex(0x0008, 0x0102, "SH", []byte("L ")))
	codeItemIm := join(im(0x0008, 0x0100, []byte("CODE1 ")), im(0x0008, 0x0102, []byte("L ")))
	cases := []struct {
		name      string
		ts        string
		data      []byte
		want      string
		found     bool
		study     string
		doneEarly bool   // done before the end of the data (given up)
		why       string // in Undetermined(); "" when the result is certain
	}{
		{
			name: "explicit VR, plain", ts: association.ExplicitVRLittleEndian,
			data: join(ex(0x0008, 0x0060, "CS", []byte("OT")), ex(0x0010, 0x0010, "PN", []byte("Doe^Jane")), ex(0x0010, 0x0020, "LO", []byte("PAT-1 ")), pixels),
			want: "PAT-1", found: true,
		},
		{
			name: "explicit VR, defined-length sequence and OB before", ts: association.JPEGBaseline8Bit,
			data: join(ex(0x0008, 0x0016, "UI", []byte("1.2\x00\x00")), ex(0x0008, 0x0030, "OB", make([]byte, 300)),
				ex(0x0008, 0x1032, "SQ", join(delim(0xE000, uint32(len(codeItemEx))), codeItemEx)),
				ex(0x0010, 0x0020, "LO", []byte("ABC")), pixels),
			want: "ABC", found: true,
		},
		{
			name: "explicit VR, undefined-length sequence and items, nested", ts: association.ExplicitVRLittleEndian,
			data: join(
				ex(0x0008, 0x1032, "SQ", nil, u), delim(0xE000, u), codeItemEx,
				ex(0x0008, 0x1110, "SQ", nil, u), delim(0xE000, u),
				ex(0x0010, 0x0020, "LO", []byte("NOT-TOP")), // inside a sequence: not the patient's
				delim(0xE00D, 0), delim(0xE0DD, 0),
				delim(0xE00D, 0), delim(0xE000, uint32(len(codeItemEx))), codeItemEx, delim(0xE0DD, 0),
				ex(0x0010, 0x0020, "LO", []byte("TOP-LEVEL ")), pixels),
			want: "TOP-LEVEL", found: true,
		},
		{
			name: "implicit VR, undefined-length sequence", ts: association.ImplicitVRLittleEndian,
			data: join(im(0x0008, 0x0060, []byte("OT")), im(0x0008, 0x1032, nil, u), delim(0xE000, u), codeItemIm, delim(0xE00D, 0), delim(0xE0DD, 0),
				im(0x0010, 0x0010, []byte("Doe^Jane")), im(0x0010, 0x0020, []byte("IMPL-7")), im(0x7FE0, 0x0010, make([]byte, 4000))),
			want: "IMPL-7", found: true,
		},
		{
			name: "implicit VR, defined-length sequence", ts: association.ImplicitVRLittleEndian,
			data: join(im(0x0008, 0x1032, join(delim(0xE000, uint32(len(codeItemIm))), codeItemIm)), im(0x0010, 0x0020, []byte("D2"))),
			want: "D2", found: true,
		},
		{
			name: "no patient ID in the whole top level", ts: association.ExplicitVRLittleEndian,
			data:  join(ex(0x0010, 0x0010, "PN", []byte("Doe^Jane")), ex(0x0020, 0x000D, "UI", []byte("1.2.3\x00")), pixels),
			study: "1.2.3",
		},
		{
			// Out of PS3.5 7.1's order, as a crafted data set puts it: a PACS
			// that sorts what it receives stores it under this patient.
			name: "patient ID after group 0020 and the pixel data", ts: association.ExplicitVRLittleEndian,
			data: join(ex(0x0010, 0x0010, "PN", []byte("Doe^Jane")), ex(0x0020, 0x000D, "UI", []byte("1.2.3\x00")), pixels,
				ex(0x0010, 0x0020, "LO", []byte("LATE-1"))),
			want: "LATE-1", found: true, study: "1.2.3",
		},
		{
			name: "patient ID after encapsulated pixel data", ts: association.JPEGBaseline8Bit,
			data: join(ex(0x0020, 0x000D, "UI", []byte("1.2.3\x00")), ex(0x7FE0, 0x0010, "OB", nil, u), delim(0xE000, 0),
				delim(0xE000, 1000), make([]byte, 1000), delim(0xE0DD, 0), ex(0x0010, 0x0020, "LO", []byte("LATE-2"))),
			want: "LATE-2", found: true, study: "1.2.3",
		},
		{
			name: "the same patient ID twice", ts: association.ExplicitVRLittleEndian,
			data: join(ex(0x0010, 0x0020, "LO", []byte("SAME")), pixels, ex(0x0010, 0x0020, "LO", []byte("SAME"))),
			want: "SAME", found: true,
		},
		{
			name: "two different patient IDs: undetermined", ts: association.ExplicitVRLittleEndian,
			data: join(ex(0x0010, 0x0020, "LO", []byte("HARMLESS")), pixels, ex(0x0010, 0x0020, "LO", []byte("OTHER"))),
			why:  "twice with different values",
		},
		{
			name: "cut inside the pixel data", ts: association.ExplicitVRLittleEndian,
			data: join(ex(0x0010, 0x0010, "PN", []byte("Doe^Jane")), pixels[:2000]),
			why:  "ended inside an element",
		},
		{
			name: "patient and study, implicit VR", ts: association.ImplicitVRLittleEndian,
			data: join(im(0x0010, 0x0020, []byte("P9")), im(0x0010, 0x0030, []byte("19700101")), im(0x0020, 0x000D, []byte("1.2.840.99\x00")),
				im(0x0020, 0x000E, []byte("1.2.840.99.1\x00")), im(0x7FE0, 0x0010, make([]byte, 4000))),
			want: "P9", found: true, study: "1.2.840.99",
		},
		{
			name: "study inside a sequence is not the study", ts: association.ExplicitVRLittleEndian,
			data: join(ex(0x0008, 0x1110, "SQ", nil, u), delim(0xE000, u), ex(0x0020, 0x000D, "UI", []byte("9.9\x00")), delim(0xE00D, 0), delim(0xE0DD, 0),
				ex(0x0010, 0x0020, "LO", []byte("P")), ex(0x0020, 0x000E, "UI", []byte("1.2\x00")), pixels),
			want: "P", found: true,
		},
		{
			name: "empty patient ID", ts: association.ExplicitVRLittleEndian,
			data: join(ex(0x0010, 0x0020, "LO", nil), pixels), found: true,
		},
		{
			name: "data set ends before group 0010", ts: association.ExplicitVRLittleEndian,
			data: ex(0x0008, 0x0060, "CS", []byte("OT")),
		},
		{
			// Not held, but walked past: what follows is still checked for
			// order, so a long value cannot switch the check off.
			name: "patient ID value too long", ts: association.ImplicitVRLittleEndian,
			data: join(im(0x0010, 0x0020, []byte(strings.Repeat("x", 300))), pixels), why: "300 bytes",
		},
		{
			name: "UN of undefined length before: given up", ts: association.ExplicitVRLittleEndian,
			data:      join(ex(0x0009, 0x1010, "UN", nil, u), delim(0xE000, u), im(0x0009, 0x0001, []byte("xx")), delim(0xE00D, 0), delim(0xE0DD, 0), ex(0x0010, 0x0020, "LO", []byte("P"))),
			doneEarly: true, why: "UN",
		},
		{
			name: "stray item at top level: given up", ts: association.ExplicitVRLittleEndian,
			data: join(delim(0xE000, 4), []byte{0, 0, 0, 0}, ex(0x0010, 0x0020, "LO", []byte("P"))), doneEarly: true, why: "item outside",
		},
		{
			name: "deflated: not scanned", ts: association.DeflatedExplicitVRLittleEndian,
			data: ex(0x0010, 0x0020, "LO", []byte("P")), doneEarly: true, why: "not scanned",
		},
		{
			name: "big endian: not scanned", ts: association.ExplicitVRBigEndian,
			data: ex(0x0010, 0x0020, "LO", []byte("P")), doneEarly: true, why: "not scanned",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Every split into two fragments, then one byte at a time.
			for split := 0; split <= len(tc.data); split += max(1, len(tc.data)/200) {
				s := NewPatientIDScanner(tc.ts)
				s.Feed(tc.data[:split])
				s.Feed(tc.data[split:])
				checkScan(t, s, tc.want, tc.found, split)
				if why := s.Undetermined(); tc.why == "" && why != "" || !strings.Contains(why, tc.why) {
					t.Fatalf("split %d: Undetermined() = %q, want %q", split, why, tc.why)
				}
				if st, _ := s.StudyInstanceUID(); st != tc.study {
					t.Fatalf("split %d: StudyInstanceUID() = %q; want %q", split, st, tc.study)
				}
			}
			s := NewPatientIDScanner(tc.ts)
			doneAt := -1
			for i := range tc.data {
				if s.Feed(tc.data[i : i+1]) {
					doneAt = i
					break
				}
			}
			checkScan(t, s, tc.want, tc.found, -1)
			if tc.doneEarly != (doneAt >= 0 && doneAt < len(tc.data)-1) {
				t.Fatalf("done at byte %d of %d, want early=%v", doneAt, len(tc.data), tc.doneEarly)
			}
		})
	}
}

func checkScan(t *testing.T, s *PatientIDScanner, want string, found bool, split int) {
	t.Helper()
	if id, ok := s.PatientID(); id != want || ok != found {
		t.Fatalf("split %d: PatientID() = %q, %v; want %q, %v", split, id, ok, want, found)
	}
}

// The scanner holds nothing of the data set beyond the Patient ID: feeding
// it megabytes of pixel data allocates nothing.
func TestPatientIDScannerDoesNotBuffer(t *testing.T) {
	head := ex(0x0008, 0x0060, "CS", []byte("OT"))
	big := ex(0x0009, 0x0010, "OB", nil, 8<<20)
	chunk := make([]byte, 64<<10)
	allocs := testing.AllocsPerRun(5, func() {
		s := NewPatientIDScanner(association.ExplicitVRLittleEndian)
		s.Feed(head)
		s.Feed(big)
		for range 128 {
			s.Feed(chunk)
		}
	})
	if allocs > 1 {
		t.Fatalf("%.0f allocations while skipping 8 MiB", allocs)
	}
}

// The order check (PS3.5 7.1): the first pair of top-level tags out of
// strictly ascending order is named, at any fragmentation; elements inside
// sequence items are not top-level and are not compared with it.
func TestPatientIDScannerOrder(t *testing.T) {
	pixels := ex(0x7FE0, 0x0010, "OW", make([]byte, 4000))
	cases := []struct {
		name     string
		ts       string
		data     []byte
		disorder string // DisorderText(), "" when in order
		refused  string // PatientID() under OrderRefuse
		allowed  string // PatientID() under OrderAllow
	}{
		{
			name: "in order", ts: association.ExplicitVRLittleEndian,
			data:    join(ex(0x0008, 0x0060, "CS", []byte("OT")), ex(0x0010, 0x0010, "PN", []byte("Doe^Jane")), ex(0x0010, 0x0020, "LO", []byte("P1")), pixels),
			refused: "P1", allowed: "P1",
		},
		{
			name: "patient ID repeated", ts: association.ExplicitVRLittleEndian,
			data:     join(ex(0x0010, 0x0020, "LO", []byte("HARMLESS")), ex(0x0010, 0x0020, "LO", []byte("OTHER")), pixels),
			disorder: "(0010,0020) repeated", refused: "HARMLESS", allowed: "HARMLESS",
		},
		{
			name: "two elements swapped", ts: association.ImplicitVRLittleEndian,
			data:     join(im(0x0008, 0x0060, []byte("OT")), im(0x0010, 0x0020, []byte("P2")), im(0x0010, 0x0010, []byte("Doe^Jane")), im(0x7FE0, 0x0010, make([]byte, 100))),
			disorder: "(0010,0010) after (0010,0020)", refused: "P2", allowed: "P2",
		},
		{
			name: "a second patient ID after the pixel data", ts: association.ExplicitVRLittleEndian,
			data:     join(ex(0x0010, 0x0020, "LO", []byte("FIRST")), pixels, ex(0x0010, 0x0020, "LO", []byte("LATE"))),
			disorder: "(0010,0020) after (7FE0,0010)", refused: "FIRST", allowed: "FIRST",
		},
		{
			name: "after a too-long patient ID, still checked", ts: association.ExplicitVRLittleEndian,
			data:     join(ex(0x0010, 0x0020, "UT", []byte(strings.Repeat("x", 300))), ex(0x0010, 0x0020, "LO", []byte("SECOND"))),
			disorder: "(0010,0020) repeated",
		},
		{
			name: "lower tags inside a sequence item are not out of order", ts: association.ExplicitVRLittleEndian,
			data: join(ex(0x0010, 0x0020, "LO", []byte("P3")), ex(0x0040, 0x0275, "SQ", nil, u), delim(0xE000, u),
				ex(0x0008, 0x0100, "SH", []byte("C1")), ex(0x0008, 0x0100, "SH", []byte("C1")), delim(0xE00D, 0), delim(0xE0DD, 0), pixels),
			refused: "P3", allowed: "P3",
		},
		{
			name: "out of order after an undefined-length sequence", ts: association.ExplicitVRLittleEndian,
			data: join(ex(0x0010, 0x0020, "LO", []byte("P4")), ex(0x0040, 0x0275, "SQ", nil, u), delim(0xE000, u),
				ex(0x0008, 0x0100, "SH", []byte("C1")), delim(0xE00D, 0), delim(0xE0DD, 0), ex(0x0020, 0x000D, "UI", []byte("1.2\x00"))),
			disorder: "(0020,000D) after (0040,0275)", refused: "P4", allowed: "P4",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, mode := range []Order{OrderRefuse, OrderAllow} {
				want := tc.refused
				if mode == OrderAllow {
					want = tc.allowed
				}
				for split := 0; split <= len(tc.data); split += max(1, len(tc.data)/100) {
					s := NewPatientIDScanner(tc.ts)
					s.SetOrder(mode)
					s.Feed(tc.data[:split])
					s.Feed(tc.data[split:])
					if got := s.DisorderText(); got != tc.disorder {
						t.Fatalf("mode %d split %d: DisorderText() = %q, want %q", mode, split, got, tc.disorder)
					}
					_, _, ok := s.Disorder()
					if ok != (tc.disorder != "") {
						t.Fatalf("mode %d split %d: Disorder() ok = %v", mode, split, ok)
					}
					if mode == OrderRefuse && ok && !s.Done() {
						t.Fatalf("split %d: refused, yet not done", split)
					}
					if id, _ := s.PatientID(); id != want {
						t.Fatalf("mode %d split %d: PatientID() = %q, want %q", mode, split, id, want)
					}
				}
			}
			// Unchecked, the scanner says nothing of the order.
			s := NewPatientIDScanner(tc.ts)
			s.Feed(tc.data)
			if _, _, ok := s.Disorder(); ok {
				t.Fatal("Disorder() without SetOrder")
			}
		})
	}
}

// The scanner names the data set's SOP Class and Instance UIDs, tells a
// data set walked to its end from one cut inside an element, and claims
// neither when it gave up.
func TestPatientIDScannerSOPUIDsAndCompleteness(t *testing.T) {
	ds := join(ex(0x0008, 0x0016, "UI", []byte("1.2.840.10008.5.1.4.1.1.2\x00")), ex(0x0008, 0x0018, "UI", []byte("1.2.3.4")),
		ex(0x0010, 0x0020, "LO", []byte("P1")), ex(0x7FE0, 0x0010, "OW", make([]byte, 16)))
	s := NewPatientIDScanner(association.ExplicitVRLittleEndian)
	s.Feed(ds)
	if uid, ok := s.SOPInstanceUID(); !ok || uid != "1.2.3.4" {
		t.Errorf("SOP Instance UID %q %v", uid, ok)
	}
	if uid, ok := s.SOPClassUID(); !ok || uid != "1.2.840.10008.5.1.4.1.1.2" {
		t.Errorf("SOP Class UID %q %v", uid, ok)
	}
	if !s.Walked() || s.Cut() {
		t.Errorf("whole data set: walked %v, cut %v", s.Walked(), s.Cut())
	}
	for _, n := range []int{3, 9, len(ds) - 5} { // in a header, in a value, in pixel data
		c := NewPatientIDScanner(association.ExplicitVRLittleEndian)
		c.Feed(ds[:n])
		if c.Walked() || !c.Cut() {
			t.Errorf("cut at %d: walked %v, cut %v", n, c.Walked(), c.Cut())
		}
	}
	g := NewPatientIDScanner(association.DeflatedExplicitVRLittleEndian)
	g.Feed(ds)
	if _, ok := g.SOPInstanceUID(); ok || g.Walked() || g.Cut() {
		t.Error("a scanner that gave up claims what it did not read")
	}
}
