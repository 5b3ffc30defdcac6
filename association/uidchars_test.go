package association

import (
	"errors"
	"testing"
)

// A UID is digits and dots (PS3.5 9.1) and an implementation version name
// a VR AE-like string of the default repertoire (PS3.7 D.3.3.2.3). The
// codec used to trim a trailing NUL and check only the length, so a UID
// carrying a NUL, a newline or non-ASCII bytes inside was decoded, matched
// against sop_classes, audited and rebuilt into the backend's RQ, where a
// C-string reader stops at the NUL and reads another UID than the edge did.
func TestUIDCharacters(t *testing.T) {
	fixed := assocFixed("A", "B")
	pc := func(as, ts string) []byte {
		return item(0x20, []byte{1, 0, 0, 0}, item(0x30, str(as)), item(0x40, str(ts)))
	}
	cases := []struct {
		name string
		typ  PDUType
		body []byte
	}{
		{"abstract syntax with a NUL inside", TypeAssociateRQ,
			cat(fixed, item(0x10, str(DICOMApplicationContext)), pc(VerificationSOPClass+"\x00.5.1.4.1.1.2", ImplicitVRLittleEndian), item(0x50))},
		{"abstract syntax with a newline", TypeAssociateRQ,
			cat(fixed, item(0x10, str(DICOMApplicationContext)), pc(VerificationSOPClass+"\nforged", ImplicitVRLittleEndian), item(0x50))},
		{"abstract syntax with a leading space", TypeAssociateRQ,
			cat(fixed, item(0x10, str(DICOMApplicationContext)), pc(" "+VerificationSOPClass, ImplicitVRLittleEndian), item(0x50))},
		{"transfer syntax with a letter", TypeAssociateRQ,
			cat(fixed, item(0x10, str(DICOMApplicationContext)), pc(VerificationSOPClass, "1.2.840.10008.1.2x"), item(0x50))},
		{"application context non-ASCII", TypeAssociateRQ,
			cat(fixed, item(0x10, str(DICOMApplicationContext+"\xc3\xa9")), pc(VerificationSOPClass, ImplicitVRLittleEndian), item(0x50))},
		{"implementation class UID with an escape", TypeAssociateRQ,
			cat(fixed, item(0x10, str(DICOMApplicationContext)), pc(VerificationSOPClass, ImplicitVRLittleEndian), item(0x50, item(0x52, str("1.2.3\x1b[2J"))))},
		{"role selection UID with a NUL inside", TypeAssociateRQ,
			cat(fixed, item(0x10, str(DICOMApplicationContext)), pc(VerificationSOPClass, ImplicitVRLittleEndian), item(0x50, item(0x54, lp16("1.2\x003"), []byte{1, 1})))},
		{"extended negotiation UID with a tab", TypeAssociateRQ,
			cat(fixed, item(0x10, str(DICOMApplicationContext)), pc(VerificationSOPClass, ImplicitVRLittleEndian), item(0x50, item(0x56, lp16("1.2\t3"), []byte{1})))},
		{"implementation version name with a newline", TypeAssociateRQ,
			cat(fixed, item(0x10, str(DICOMApplicationContext)), pc(VerificationSOPClass, ImplicitVRLittleEndian), item(0x50, item(0x55, str("V1\nforged"))))},
		{"AC accepted transfer syntax with a NUL inside", TypeAssociateAC,
			cat(fixed, item(0x10, str(DICOMApplicationContext)), item(0x21, []byte{1, 0, 0, 0}, item(0x40, str("1.2.840.10008.1.2\x00.1"))), item(0x50))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Decode(tc.typ, tc.body)
			var pe *ProtocolError
			if !errors.As(err, &pe) || pe.Reason != AbortInvalidPDUParameterValue {
				t.Fatalf("Decode = %+v, %v; want invalid-pdu-parameter-value", p, err)
			}
		})
	}

	// What stays accepted: the padding PS3.8 allows, and a rejected AC
	// context's transfer syntax, which is not tested (PS3.8 9.3.3.2).
	ok := cat(fixed, item(0x10, str(DICOMApplicationContext+"\x00")), pc(VerificationSOPClass+"\x00", ImplicitVRLittleEndian+" "),
		item(0x50, item(0x52, str("1.2.3\x00")), item(0x55, str("DCMTK_360 "))))
	if _, err := Decode(TypeAssociateRQ, ok); err != nil {
		t.Fatalf("padded UIDs: %v", err)
	}
	rejected := cat(fixed, item(0x10, str(DICOMApplicationContext)), item(0x21, []byte{1, 0, 3, 0}, item(0x40, str("junk\x01"))), item(0x50))
	if _, err := Decode(TypeAssociateAC, rejected); err != nil {
		t.Fatalf("rejected context's transfer syntax tested: %v", err)
	}
}

// PS3.7 D.3.3.4, D.3.3.5 and D.3.3.6 allow one role selection, one
// extended negotiation and one common extended negotiation sub-item per
// SOP class. Two for the same class were decoded and forwarded: the
// backend may act on the first while the edge's view of the association
// (the roles it lets the backend use) follows the last.
func TestRepeatedPerSOPClassSubItems(t *testing.T) {
	fixed := cat(assocFixed("A", "B"), item(0x10, str(DICOMApplicationContext)))
	cases := []struct {
		name string
		typ  PDUType
		ui   []byte
	}{
		{"role selection twice", TypeAssociateRQ,
			item(0x50, item(0x54, lp16(CTImageStorage), []byte{1, 0}), item(0x54, lp16(CTImageStorage), []byte{1, 1}))},
		{"role selection twice, one NUL padded", TypeAssociateAC,
			item(0x50, item(0x54, lp16(CTImageStorage), []byte{0, 0}), item(0x54, lp16(CTImageStorage+"\x00"), []byte{0, 1}))},
		{"extended negotiation twice", TypeAssociateRQ,
			item(0x50, item(0x56, lp16(CTImageStorage), []byte{1}), item(0x56, lp16(CTImageStorage), []byte{0}))},
		{"common extended negotiation twice", TypeAssociateRQ,
			item(0x50, item(0x57, lp16(CTImageStorage), lp16("1.2.840.10008.4.2"), u16(0)),
				item(0x57, lp16(CTImageStorage), lp16("1.2.840.10008.4.2"), u16(0)))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Decode(tc.typ, cat(fixed, tc.ui))
			var pe *ProtocolError
			if !errors.As(err, &pe) || pe.Reason != AbortUnexpectedPDUParameter {
				t.Fatalf("Decode = %+v, %v; want unexpected-pdu-parameter", p, err)
			}
		})
	}
	// One per class, for different classes, is what PS3.7 allows.
	ok := cat(fixed, item(0x50, item(0x54, lp16(CTImageStorage), []byte{1, 1}), item(0x54, lp16(MRImageStorage), []byte{1, 1})))
	if _, err := Decode(TypeAssociateRQ, ok); err != nil {
		t.Fatal(err)
	}
}
