package dimse

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"os"
	"reflect"
	"slices"
	"testing"

	"github.com/dicomedge/dicomedge/association"
)

// el builds one Implicit VR Little Endian group-0000 element by hand.
func el(elem uint16, v []byte) []byte {
	b := binary.LittleEndian.AppendUint16(nil, 0)
	b = binary.LittleEndian.AppendUint16(b, elem)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

func us16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }

// withLength prepends CommandGroupLength to the elements.
func withLength(els ...[]byte) []byte {
	body := bytes.Join(els, nil)
	return append(el(0x0000, binary.LittleEndian.AppendUint32(nil, uint32(len(body)))), body...)
}

func TestCommandTable(t *testing.T) {
	cases := []struct {
		name string
		wire []byte
		want Command
	}{
		{
			name: "C-ECHO-RQ",
			wire: withLength(el(0x0002, []byte("1.2.840.10008.1.1\x00")), el(0x0100, us16(0x0030)), el(0x0110, us16(7)), el(0x0800, us16(0x0101))),
			want: Command{CommandField: CEchoRQ, MessageID: 7, AffectedSOPClassUID: association.VerificationSOPClass, CommandDataSetType: NoDataSet},
		},
		{
			name: "C-ECHO-RSP",
			wire: withLength(el(0x0002, []byte("1.2.840.10008.1.1\x00")), el(0x0100, us16(0x8030)), el(0x0120, us16(7)), el(0x0800, us16(0x0101)), el(0x0900, us16(0))),
			want: Command{CommandField: CEchoRSP, MessageIDBeingRespondedTo: 7, AffectedSOPClassUID: association.VerificationSOPClass,
				CommandDataSetType: NoDataSet, HasStatus: true},
		},
		{
			name: "C-STORE-RQ from a C-MOVE",
			wire: withLength(el(0x0002, []byte("1.2.840.10008.5.1.4.1.1.7\x00")), el(0x0100, us16(0x0001)), el(0x0110, us16(3)),
				el(0x0700, us16(PriorityHigh)), el(0x0800, us16(0)), el(0x1000, []byte("1.2.3.4\x00")),
				el(0x1030, []byte("MOVESCU ")), el(0x1031, us16(99))),
			want: Command{CommandField: CStoreRQ, MessageID: 3, Priority: PriorityHigh, AffectedSOPClassUID: association.SecondaryCaptureImageStorage,
				AffectedSOPInstanceUID: "1.2.3.4", MoveOriginatorAET: "MOVESCU", MoveOriginatorMessageID: 99},
		},
		{
			name: "C-MOVE-RQ",
			wire: withLength(el(0x0002, []byte("1.2.840.10008.5.1.4.1.2.2.2\x00")), el(0x0100, us16(0x0021)), el(0x0110, us16(5)),
				el(0x0600, []byte("STORESCP")), el(0x0700, us16(0)), el(0x0800, us16(0))),
			want: Command{CommandField: CMoveRQ, MessageID: 5, AffectedSOPClassUID: association.StudyRootQueryRetrieveMove, MoveDestination: "STORESCP"},
		},
		{
			name: "C-MOVE-RSP pending with sub-operation counts",
			wire: withLength(el(0x0002, []byte("1.2.840.10008.5.1.4.1.2.2.2\x00")), el(0x0100, us16(0x8021)), el(0x0120, us16(5)),
				el(0x0800, us16(0x0101)), el(0x0900, us16(0xFF00)), el(0x1020, us16(8)), el(0x1021, us16(2)), el(0x1022, us16(0)), el(0x1023, us16(1))),
			want: Command{CommandField: CMoveRSP, MessageIDBeingRespondedTo: 5, AffectedSOPClassUID: association.StudyRootQueryRetrieveMove,
				CommandDataSetType: NoDataSet, Status: StatusPending, HasStatus: true,
				NumberOfRemainingSuboperations: Uint16(8), NumberOfCompletedSuboperations: Uint16(2),
				NumberOfFailedSuboperations: Uint16(0), NumberOfWarningSuboperations: Uint16(1)},
		},
		{
			name: "C-STORE-RSP failure with error comment and offending element kept raw",
			wire: withLength(el(0x0002, []byte("1.2.840.10008.5.1.4.1.1.7\x00")), el(0x0100, us16(0x8001)), el(0x0120, us16(3)),
				el(0x0800, us16(0x0101)), el(0x0900, us16(0x0124)), el(0x0901, []byte{0x10, 0, 0x20, 0}), el(0x0902, []byte("not authorized")),
				el(0x1000, []byte("1.2.3.4\x00"))),
			want: Command{CommandField: CStoreRSP, MessageIDBeingRespondedTo: 3, AffectedSOPClassUID: association.SecondaryCaptureImageStorage,
				AffectedSOPInstanceUID: "1.2.3.4", CommandDataSetType: NoDataSet, Status: StatusRefusedNotAuthorized, HasStatus: true,
				ErrorComment: "not authorized", Elements: []Element{{TagOffendingElement, []byte{0x10, 0, 0x20, 0}}}},
		},
		{
			name: "N-ACTION-RQ with requested SOP class and instance and action type",
			wire: withLength(el(0x0003, []byte("1.2.840.10008.1.20.1")), el(0x0100, us16(0x0130)), el(0x0110, us16(9)),
				el(0x0800, us16(0)), el(0x1001, []byte("1.2.840.10008.1.20.1.1")), el(0x1008, us16(1))),
			want: Command{CommandField: NActionRQ, MessageID: 9, RequestedSOPClassUID: "1.2.840.10008.1.20.1",
				RequestedSOPInstanceUID: "1.2.840.10008.1.20.1.1", Elements: []Element{{TagActionTypeID, us16(1)}}},
		},
		{
			name: "C-CANCEL-RQ",
			wire: withLength(el(0x0100, us16(0x0FFF)), el(0x0120, us16(5)), el(0x0800, us16(0x0101))),
			want: Command{CommandField: CCancelRQ, MessageIDBeingRespondedTo: 5, CommandDataSetType: NoDataSet},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeCommand(tc.wire)
			if err != nil {
				t.Fatal(err)
			}
			if !typedEqual(got, &tc.want) {
				t.Fatalf("decoded\n%+v\nwant\n%+v", got, &tc.want)
			}
			// Elements holds every element in order, typed ones included.
			if n := countElements(tc.wire); len(got.Elements) != n {
				t.Fatalf("%d raw elements, want %d", len(got.Elements), n)
			}
			if enc := tc.want.Encode(); !bytes.Equal(enc, tc.wire) {
				t.Fatalf("encoding differs\n got % x\nwant % x", enc, tc.wire)
			}
			if enc := got.Encode(); !bytes.Equal(enc, tc.wire) {
				t.Fatalf("re-encoding the decoded command differs\n got % x\nwant % x", enc, tc.wire)
			}
		})
	}
}

func countElements(b []byte) int {
	n := 0
	for len(b) >= 8 {
		b = b[8+binary.LittleEndian.Uint32(b[4:8]):]
		n++
	}
	return n
}

// typedEqual compares the typed fields and the untyped elements in
// ascending tag order, which is what Encode writes (PS3.5 7.1: elements of
// a data set are in ascending order; Encode sorts them).
func typedEqual(a, b *Command) bool {
	x, y := *a, *b
	x.Elements, y.Elements = untyped(a.Elements), untyped(b.Elements)
	return reflect.DeepEqual(x, y)
}

func untyped(els []Element) []Element {
	var out []Element
	for _, e := range els {
		if !typedTags[e.Tag] {
			out = append(out, e)
		}
	}
	slices.SortStableFunc(out, func(a, b Element) int { return cmp.Compare(a.Tag, b.Tag) })
	return out
}

func TestDCMTKCommandCaptures(t *testing.T) {
	cases := []struct {
		file  string
		field CommandField
		sop   string
		data  bool
	}{
		{"testdata/c-echo-rq-echoscu.bin", CEchoRQ, association.VerificationSOPClass, false},
		{"testdata/c-store-rq-storescu-xs.bin", CStoreRQ, association.SecondaryCaptureImageStorage, true},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			raw, err := os.ReadFile(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			c, err := DecodeCommand(raw)
			if err != nil {
				t.Fatal(err)
			}
			if c.CommandField != tc.field || c.AffectedSOPClassUID != tc.sop || c.HasDataSet() != tc.data || c.MessageID == 0 {
				t.Fatalf("decoded %+v", c)
			}
			if !bytes.Equal(c.Encode(), raw) {
				t.Fatalf("DCMTK's command set does not re-encode byte for byte\n got % x\nwant % x", c.Encode(), raw)
			}
		})
	}
}

func TestDecodeCommandErrors(t *testing.T) {
	field := el(0x0100, us16(0x0030))
	cases := []struct {
		name string
		wire []byte
	}{
		{"empty", nil},
		{"no command field", withLength(el(0x0110, us16(1)))},
		{"truncated header", append(bytes.Clone(field), 0, 0, 0)},
		{"length overruns", append(bytes.Clone(field), el(0x0110, us16(1))[:9]...)},
		{"undefined length", append(bytes.Clone(field), 0, 0, 0x10, 0x01, 0xff, 0xff, 0xff, 0xff)},
		{"element outside group 0000", append(bytes.Clone(field), 8, 0, 0x18, 0, 0, 0, 0, 0)},
		{"US with 4 bytes", append(bytes.Clone(field), el(0x0110, []byte{1, 0, 0, 0})...)},
		{"command field of 1 byte", el(0x0100, []byte{0x30})},
		{"status of 0 bytes", append(bytes.Clone(field), el(0x0900, nil)...)},
		{"count of 3 bytes", append(bytes.Clone(field), el(0x1020, []byte{1, 2, 3})...)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := DecodeCommand(tc.wire)
			var pe *association.ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("DecodeCommand = %+v, %v; want a ProtocolError", c, err)
			}
		})
	}
}

// Group length is checked, not trusted to delimit the command:
// a backend that stops reading at a short group length would see a
// different command than the edge checked, so a mismatch is refused. A
// correct one decodes, and Encode recomputes it.
func TestCommandGroupLengthChecked(t *testing.T) {
	body := append(el(0x0100, us16(0x0030)), el(0x0110, us16(2))...)
	body = append(body, el(0x0800, us16(NoDataSet))...)
	for _, g := range []uint32{1, uint32(len(body)) - 1, uint32(len(body)) + 1} {
		wire := append(el(0x0000, binary.LittleEndian.AppendUint32(nil, g)), body...)
		var pe *association.ProtocolError
		if c, err := DecodeCommand(wire); !errors.As(err, &pe) || pe.Reason != association.AbortInvalidPDUParameterValue {
			t.Fatalf("group length %d for %d bytes: %+v, %v; want invalid-PDU-parameter-value", g, len(body), c, err)
		}
	}
	c, err := DecodeCommand(withLength(body))
	if err != nil || c.MessageID != 2 {
		t.Fatalf("%+v %v", c, err)
	}
	enc := c.Encode()
	if got := binary.LittleEndian.Uint32(enc[8:12]); int(got) != len(enc)-12 {
		t.Fatalf("group length %d for %d bytes", got, len(enc)-12)
	}
}

// With repeated or out-of-order tags the edge once kept the last value
// while DCMTK keeps the first, and the relay forwards the original bytes, so
// policy (MoveDestination, CommandField) was enforced on a reading the
// backend might not share. Such commands are now a protocol error.
func TestCommandTagOrder(t *testing.T) {
	move := func(extra ...[]byte) []byte {
		els := [][]byte{
			el(0x0002, []byte("1.2.840.10008.5.1.4.1.2.2.2\x00")),
			el(0x0100, us16(uint16(CMoveRQ))),
			el(0x0110, us16(7)),
			el(0x0600, []byte("CLINA_WS")),
			el(0x0700, us16(0)),
			el(0x0800, us16(NoDataSet)),
		}
		for i := 0; i+1 < len(extra); i += 2 {
			at := int(extra[i][0])
			els = append(els[:at], append([][]byte{extra[i+1]}, els[at:]...)...)
		}
		return withLength(els...)
	}
	cases := []struct {
		name string
		wire []byte
		ok   bool
	}{
		{"ascending tags decode", move(), true},
		{"MoveDestination twice", move([]byte{3}, el(0x0600, []byte("EVIL_AE "))), false},
		{"CommandField repeated at the end", move([]byte{6}, el(0x0100, us16(uint16(CEchoRQ)))), false},
		{"MessageID before CommandField", move([]byte{1}, el(0x0110, us16(9))), false},
		{"CommandGroupLength twice", append(el(0x0000, binary.LittleEndian.AppendUint32(nil, uint32(len(move())))), move()...), false},
		{"CommandGroupLength not first", append(move()[12:], el(0x0000, binary.LittleEndian.AppendUint32(nil, 0))...), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := DecodeCommand(tc.wire)
			if tc.ok {
				if err != nil || c.MoveDestination != "CLINA_WS" {
					t.Fatalf("DecodeCommand = %+v, %v", c, err)
				}
				return
			}
			var pe *association.ProtocolError
			if !errors.As(err, &pe) || pe.Reason != association.AbortInvalidPDUParameterValue {
				t.Fatalf("DecodeCommand = %+v, %v; want invalid-PDU-parameter-value", c, err)
			}
		})
	}
}

func TestCommandFieldNames(t *testing.T) {
	cases := []struct {
		f       CommandField
		s, svc  string
		request bool
	}{
		{CStoreRQ, "C-STORE-RQ", "C-STORE", true}, {CStoreRSP, "C-STORE-RSP", "C-STORE", false},
		{CGetRQ, "C-GET-RQ", "C-GET", true}, {CGetRSP, "C-GET-RSP", "C-GET", false},
		{CFindRQ, "C-FIND-RQ", "C-FIND", true}, {CFindRSP, "C-FIND-RSP", "C-FIND", false},
		{CMoveRQ, "C-MOVE-RQ", "C-MOVE", true}, {CMoveRSP, "C-MOVE-RSP", "C-MOVE", false},
		{CEchoRQ, "C-ECHO-RQ", "C-ECHO", true}, {CEchoRSP, "C-ECHO-RSP", "C-ECHO", false},
		{NEventReportRQ, "N-EVENT-REPORT-RQ", "N-EVENT-REPORT", true}, {NEventReportRSP, "N-EVENT-REPORT-RSP", "N-EVENT-REPORT", false},
		{NGetRQ, "N-GET-RQ", "N-GET", true}, {NGetRSP, "N-GET-RSP", "N-GET", false},
		{NSetRQ, "N-SET-RQ", "N-SET", true}, {NSetRSP, "N-SET-RSP", "N-SET", false},
		{NActionRQ, "N-ACTION-RQ", "N-ACTION", true}, {NActionRSP, "N-ACTION-RSP", "N-ACTION", false},
		{NCreateRQ, "N-CREATE-RQ", "N-CREATE", true}, {NCreateRSP, "N-CREATE-RSP", "N-CREATE", false},
		{NDeleteRQ, "N-DELETE-RQ", "N-DELETE", true}, {NDeleteRSP, "N-DELETE-RSP", "N-DELETE", false},
		{CCancelRQ, "C-CANCEL-RQ", "C-CANCEL", true},
		{0x8FFF, "command-0x8fff", "", false},
		{0x0002, "command-0x0002", "", true},
	}
	for _, tc := range cases {
		if tc.f.String() != tc.s || tc.f.Service() != tc.svc || tc.f.IsRequest() != tc.request || tc.f.Known() != (tc.svc != "") {
			t.Errorf("0x%04x: %q %q %v %v", uint16(tc.f), tc.f.String(), tc.f.Service(), tc.f.IsRequest(), tc.f.Known())
		}
	}
}

func TestStatusClass(t *testing.T) {
	cases := []struct {
		status uint16
		want   StatusClass
	}{
		{0x0000, ClassSuccess},
		{0x0001, ClassWarning}, {0x0107, ClassWarning}, {0x0116, ClassWarning}, {0xB000, ClassWarning}, {0xB007, ClassWarning},
		{0xFE00, ClassCancel},
		{0xFF00, ClassPending}, {0xFF01, ClassPending},
		{0x0124, ClassFailure}, {0x0122, ClassFailure}, {0x0211, ClassFailure}, {0xA700, ClassFailure}, {0xA801, ClassFailure},
		{0xA900, ClassFailure}, {0xC000, ClassFailure}, {0xCFFF, ClassFailure}, {0x0110, ClassFailure}, {0xFF02, ClassFailure},
	}
	for _, tc := range cases {
		if got := ClassOf(tc.status); got != tc.want {
			t.Errorf("ClassOf(0x%04x) = %v, want %v", tc.status, got, tc.want)
		}
	}
	for c, s := range map[StatusClass]string{ClassSuccess: "success", ClassWarning: "warning", ClassFailure: "failure", ClassCancel: "cancel", ClassPending: "pending"} {
		if c.String() != s {
			t.Errorf("%d.String() = %q", c, c.String())
		}
	}
}

func TestResponses(t *testing.T) {
	echo := &Command{CommandField: CEchoRQ, MessageID: 12, AffectedSOPClassUID: association.VerificationSOPClass, CommandDataSetType: NoDataSet}
	want := &Command{CommandField: CEchoRSP, MessageIDBeingRespondedTo: 12, AffectedSOPClassUID: association.VerificationSOPClass,
		CommandDataSetType: NoDataSet, HasStatus: true}
	if got := VerificationResponse(echo); !reflect.DeepEqual(got, want) {
		t.Fatalf("VerificationResponse = %+v", got)
	}
	store := &Command{CommandField: CStoreRQ, MessageID: 4, AffectedSOPClassUID: association.CTImageStorage, AffectedSOPInstanceUID: "1.2.3"}
	rsp := NewResponse(store, StatusRefusedNotAuthorized)
	if rsp.CommandField != CStoreRSP || rsp.MessageIDBeingRespondedTo != 4 || rsp.AffectedSOPInstanceUID != "1.2.3" ||
		rsp.Status != 0x0124 || !rsp.HasStatus || rsp.HasDataSet() || ClassOf(rsp.Status) != ClassFailure {
		t.Fatalf("NewResponse = %+v", rsp)
	}
	back, err := DecodeCommand(rsp.Encode())
	if err != nil || !typedEqual(back, rsp) {
		t.Fatalf("round trip %+v %v", back, err)
	}
}
