package association

import (
	"errors"
	"testing"
)

// aeField pads or cuts s to the 16-byte AE field as raw bytes, so tests can
// put NULs and control characters anywhere in it.
func aeField(s string) []byte {
	b := []byte(s)
	for len(b) < 16 {
		b = append(b, ' ')
	}
	return b[:16]
}

// The edge once matched policy on a title trimmed one way and forwarded it trimmed another. Decoding now normalises once (TrimAE) and
// refuses RQ titles that are not VR AE values.
func TestAssociateAETitles(t *testing.T) {
	cases := []struct {
		name    string
		called  string
		typ     PDUType
		want    string // decoded CalledAE; "" with ok false means refused
		refused bool
	}{
		{name: "space padded", called: "PACS", typ: TypeAssociateRQ, want: "PACS"},
		{name: "leading spaces not significant", called: "   PACS", typ: TypeAssociateRQ, want: "PACS"},
		{name: "NUL padded", called: "PACS\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", typ: TypeAssociateRQ, want: "PACS"},
		{name: "inner space kept", called: "MY PACS", typ: TypeAssociateRQ, want: "MY PACS"},
		{name: "tab refused", called: "\tPACS", typ: TypeAssociateRQ, refused: true},
		{name: "NUL inside refused", called: "PACS\x00EVIL", typ: TypeAssociateRQ, refused: true},
		{name: "backslash refused", called: `PACS\EVIL`, typ: TypeAssociateRQ, refused: true},
		{name: "DEL refused", called: "PACS\x7f", typ: TypeAssociateRQ, refused: true},
		{name: "non-ASCII refused", called: "PAC\xc3\xa9", typ: TypeAssociateRQ, refused: true},
		{name: "AC fields are not tested", called: "PACS\x00EVIL", typ: TypeAssociateAC, want: "PACS\x00EVIL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pc := pcRQ(1)
			if tc.typ == TypeAssociateAC {
				pc = pcAC(1)
			}
			body := cat(u16(1), u16(0), aeField(tc.called), ae("MODALITY"), make([]byte, 32),
				item(0x10, str(DICOMApplicationContext)), pc, item(0x50))
			p, err := Decode(tc.typ, body)
			if tc.refused {
				var pe *ProtocolError
				if !errors.As(err, &pe) || pe.Reason != AbortInvalidPDUParameterValue {
					t.Fatalf("Decode = %+v, %v; want invalid-PDU-parameter-value", p, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var called string
			switch p := p.(type) {
			case *AssociateRQ:
				called = p.CalledAE
			case *AssociateAC:
				called = p.CalledAE
			}
			if called != tc.want {
				t.Fatalf("CalledAE = %q, want %q", called, tc.want)
			}
		})
	}
}

func TestTrimAEValidAE(t *testing.T) {
	cases := []struct {
		in, trimmed string
		valid       bool
	}{
		{" CT_1 ", "CT_1", true},
		{"CT_1\x00", "CT_1", true},
		{"\x00 CT 1 \x00", "CT 1", true},
		{"", "", true},
		{"SEVENTEEN_CHARS_X", "SEVENTEEN_CHARS_X", false},
		{"A\nB", "A\nB", false},
		{`A\B`, `A\B`, false},
	}
	for _, tc := range cases {
		if got := TrimAE(tc.in); got != tc.trimmed {
			t.Errorf("TrimAE(%q) = %q, want %q", tc.in, got, tc.trimmed)
		}
		if got := ValidAE(TrimAE(tc.in)); got != tc.valid {
			t.Errorf("ValidAE(%q) = %v, want %v", tc.in, got, tc.valid)
		}
	}
}
