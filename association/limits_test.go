package association

import (
	"bytes"
	"errors"
	"runtime"
	"strconv"
	"testing"
)

// pcRQ is a presentation context item with one abstract and one transfer syntax.
func pcRQ(id byte) []byte {
	return item(0x20, []byte{id, 0, 0, 0}, item(0x30, str(VerificationSOPClass)), item(0x40, str(ImplicitVRLittleEndian)))
}

func pcAC(id byte) []byte {
	return item(0x21, []byte{id, 0, 0, 0}, item(0x40, str(ImplicitVRLittleEndian)))
}

func repeat(n int, f func(i int) []byte) []byte {
	var parts [][]byte
	for i := range n {
		parts = append(parts, f(i))
	}
	return cat(parts...)
}

// oddIDs gives the first n odd context IDs, 1, 3, ... 255.
func oddIDs(i int) byte { return byte(2*i + 1) }

func assocBody(pcs []byte, ui ...[]byte) []byte {
	return cat(assocFixed("PACS", "MODALITY"), item(0x10, str(DICOMApplicationContext)), pcs, item(0x50, ui...))
}

// long64 is a 64-byte UID, the longest PS3.5 9.1 allows.
var long64 = "1.2.3." + string(bytes.Repeat([]byte("9"), 58))

// An A-ASSOCIATE decoder bounded only by bytes let a 1 MiB RQ
// become 131,063 presentation contexts (48 MiB). Every list now has a count
// bound that a valid PDU never reaches, context IDs must be odd and unique
// (PS3.8 9.3.2.2), and the PDU itself has a length bound of its own.
func TestAssociateLimits(t *testing.T) {
	// One sub-item per SOP class (PS3.7 D.3.3.4, D.3.3.5): distinct UIDs.
	roleSel := func(i int) []byte { return item(0x54, lp16("1.2."+strconv.Itoa(i)), []byte{1, 0}) }
	extNeg := func(i int) []byte { return item(0x56, lp16("1.2."+strconv.Itoa(i)), []byte{1}) }
	unknownUI := func(int) []byte { return item(0x5f) }
	cases := []struct {
		name string
		typ  PDUType
		body []byte
		ok   bool
	}{
		{"128 contexts with IDs 1..255 accepted", TypeAssociateRQ,
			assocBody(repeat(128, func(i int) []byte { return pcRQ(oddIDs(i)) })), true},
		{"AC with 128 contexts accepted", TypeAssociateAC,
			assocBody(repeat(128, func(i int) []byte { return pcAC(oddIDs(i)) })), true},
		{"repeated context ID refused", TypeAssociateRQ, assocBody(cat(pcRQ(1), pcRQ(3), pcRQ(1))), false},
		{"even context ID refused", TypeAssociateRQ, assocBody(cat(pcRQ(1), pcRQ(2))), false},
		{"context ID 0 refused", TypeAssociateRQ, assocBody(pcRQ(0)), false},
		{"129 contexts (one repeated) refused", TypeAssociateRQ,
			assocBody(repeat(129, func(i int) []byte { return pcRQ(oddIDs(i % 128)) })), false},
		{"20,000 empty contexts refused", TypeAssociateRQ,
			assocBody(repeat(20000, func(int) []byte { return item(0x20, []byte{1, 0, 0, 0}) })), false},
		{"repeated ID in an AC refused", TypeAssociateAC, assocBody(cat(pcAC(1), pcAC(1))), false},
		{"128 role selections accepted", TypeAssociateRQ, assocBody(pcRQ(1), repeat(128, roleSel)), true},
		{"129 role selections refused", TypeAssociateRQ, assocBody(pcRQ(1), repeat(129, roleSel)), false},
		{"129 extended negotiations refused", TypeAssociateRQ, assocBody(pcRQ(1), repeat(129, extNeg)), false},
		{"129 unknown user information sub-items refused", TypeAssociateRQ, assocBody(pcRQ(1), repeat(129, unknownUI)), false},
		{"129 unknown items refused", TypeAssociateRQ,
			cat(assocBody(pcRQ(1)), repeat(129, func(int) []byte { return item(0x33) })), false},
		{"129 transfer syntaxes in one context refused", TypeAssociateRQ,
			assocBody(item(0x20, []byte{1, 0, 0, 0}, item(0x30, str(VerificationSOPClass)),
				repeat(129, func(int) []byte { return item(0x40, str(ImplicitVRLittleEndian)) }))), false},
		{"129 related general SOP classes refused", TypeAssociateRQ, assocBody(pcRQ(1),
			item(0x57, lp16("1.2"), lp16("1.3"), u16(129*5), repeat(129, func(int) []byte { return lp16("1.4") }))), false},
		// Values the edge rebuilds into the PDUs it sends are bounded by the
		// standard (a UID 64 bytes, PS3.5 9.1; an implementation version
		// name 16, PS3.7 D.3.3.2.3), not by their 16-bit item length.
		{"a 64-byte abstract syntax and its NUL pad accepted", TypeAssociateRQ,
			assocBody(item(0x20, []byte{1, 0, 0, 0}, item(0x30, str(long64+"\x00")), item(0x40, str(ImplicitVRLittleEndian)))), true},
		{"a 65-byte abstract syntax refused", TypeAssociateRQ,
			assocBody(item(0x20, []byte{1, 0, 0, 0}, item(0x30, str(long64+"1")), item(0x40, str(ImplicitVRLittleEndian)))), false},
		{"a 65-byte transfer syntax refused", TypeAssociateRQ,
			assocBody(item(0x20, []byte{1, 0, 0, 0}, item(0x30, str(VerificationSOPClass)), item(0x40, str(long64+"1")))), false},
		{"a 65-byte accepted transfer syntax in an AC refused", TypeAssociateAC,
			assocBody(item(0x21, []byte{1, 0, 0, 0}, item(0x40, str(long64+"1")))), false},
		{"a rejection's transfer syntax in an AC not tested", TypeAssociateAC,
			assocBody(item(0x21, []byte{1, 0, 3, 0}, item(0x40, make([]byte, 300)))), true},
		{"a 65-byte application context name refused", TypeAssociateRQ,
			cat(assocFixed("PACS", "MODALITY"), item(0x10, str(long64+"1")), pcRQ(1), item(0x50)), false},
		{"a 65-byte implementation class UID refused", TypeAssociateRQ, assocBody(pcRQ(1), item(0x52, str(long64+"1"))), false},
		{"a 17-character implementation version name refused", TypeAssociateRQ,
			assocBody(pcRQ(1), item(0x55, str("ABCDEFGHIJKLMNOPQ"))), false},
		{"a 65-byte role selection SOP class refused", TypeAssociateRQ,
			assocBody(pcRQ(1), item(0x54, lp16(long64+"1"), []byte{1, 0})), false},
		{"over MaxAssociateLength refused", TypeAssociateRQ,
			assocBody(pcRQ(1), item(0x58, []byte{1, 0}, lp16(string(make([]byte, 60000))), lp16("")),
				item(0x5f, make([]byte, 65000)), item(0x5e, make([]byte, 10000))), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.typ, tc.body)
			if tc.ok {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				return
			}
			var pe *ProtocolError
			if !errors.As(err, &pe) || pe.Reason != AbortInvalidPDUParameterValue {
				t.Fatalf("Decode = %v, want a ProtocolError with reason invalid-PDU-parameter-value", err)
			}
		})
	}
}

// The Reader refuses an over-long A-ASSOCIATE PDU from its header, before
// reading or allocating its body, whatever the P-DATA limit.
func TestReaderAssociateLength(t *testing.T) {
	for _, typ := range []byte{0x01, 0x02} {
		hdr := cat([]byte{typ, 0}, u32(MaxAssociateLength+1))
		r := NewReader(bytes.NewReader(hdr), 16<<20)
		_, _, err := r.Next()
		var pe *ProtocolError
		if !errors.As(err, &pe) || pe.Reason != AbortInvalidPDUParameterValue {
			t.Fatalf("type %d: Next = %v, want invalid-PDU-parameter-value", typ, err)
		}
	}
	// A P-DATA-TF of the same length is still read.
	body := cat(u32(MaxAssociateLength-3), []byte{1, 3}, make([]byte, MaxAssociateLength-5))
	r := NewReader(bytes.NewReader(pdu(0x04, body)), 16<<20)
	if _, _, err := r.Next(); err != nil {
		t.Fatalf("P-DATA-TF over MaxAssociateLength: %v", err)
	}
}

// The amplification attack: a 1 MiB RQ of 8-byte context items. It must
// now fail, and decoding it must allocate far less than the PDU's size.
func TestAssociateAmplification(t *testing.T) {
	body := assocBody(nil)
	for len(body) < 1<<20-8 {
		body = append(body, ItemPresentationContextRQ, 0, 0, 4, 1, 0, 0, 0)
	}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	_, err := Decode(TypeAssociateRQ, body)
	runtime.ReadMemStats(&m1)
	if err == nil {
		t.Fatal("a 1 MiB RQ of 131,000 contexts decoded")
	}
	if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > 64<<10 {
		t.Fatalf("refusing a %d-byte RQ allocated %d bytes", len(body), alloc)
	}
}
