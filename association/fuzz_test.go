package association

import (
	"bytes"
	"errors"
	"io"
	"os"
	"reflect"
	"testing"
)

func seedFiles(f *testing.F) [][]byte {
	f.Helper()
	var out [][]byte
	for _, name := range []string{"testdata/echoscu-rq.bin", "testdata/storescu-xs-rq.bin", "testdata/getscu-rq.bin"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func seedPDUs() []PDU {
	return []PDU{
		&AssociateAC{ProtocolVersion: 1, CalledAE: "A", CallingAE: "B", ApplicationContext: DICOMApplicationContext,
			PresentationContexts: []PresentationContextAC{{ID: 1, TransferSyntax: ImplicitVRLittleEndian}, {ID: 3, Result: PCAbstractSyntaxNotSupported}},
			UserInfo: UserInfo{HasMaxLength: true, MaxLength: 16384, ImplementationClassUID: ImplementationClassUID,
				UserIdentityAC: &UserIdentityAC{ServerResponse: []byte("ok")}, RoleSelections: []RoleSelection{{SOPClassUID: "1.2", SCP: true}}}},
		&AssociateRQ{ProtocolVersion: 1, UserInfo: UserInfo{AsyncOps: &AsyncOpsWindow{1, 1},
			ExtendedNegotiations:       []ExtendedNegotiation{{SOPClassUID: "1.2", Info: []byte{1}}},
			CommonExtendedNegotiations: []CommonExtendedNegotiation{{SOPClassUID: "1", ServiceClassUID: "2", RelatedGeneralSOPClasses: []string{"3"}}},
			UserIdentityRQ:             &UserIdentityRQ{Type: UserIdentityJWT, Primary: []byte("tok")}, Extra: []RawItem{{0x5f, []byte("x")}}},
			Extra: []RawItem{{0x33, nil}}},
		&AssociateRJ{Result: 1, Source: 1, Reason: 7},
		&PDataTF{PDVs: []PDV{{ContextID: 1, Command: true, Last: true, Data: []byte("cmd")}, {ContextID: 1, Data: []byte("data")}}},
		&ReleaseRQ{}, &ReleaseRP{}, &Abort{Source: 2, Reason: 6},
	}
}

// FuzzReader feeds arbitrary streams to the Reader: no panic, only the
// documented errors, never a PDU over the limit nor a buffer beyond it, and
// every PDU that decodes re-encodes to something that decodes the same.
func FuzzReader(f *testing.F) {
	for _, b := range seedFiles(f) {
		f.Add(b)
	}
	var all []byte
	for _, p := range seedPDUs() {
		b, err := Append(nil, p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		all = append(all, b...)
	}
	f.Add(all)
	f.Add([]byte{0x04, 0, 0xff, 0xff, 0xff, 0xff})
	const limit = 1 << 16
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), limit)
		for range 1000 {
			typ, raw, err := r.Next()
			if err != nil {
				var pe *ProtocolError
				if err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.As(err, &pe) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				break
			}
			if len(raw) > HeaderLen+limit || cap(r.buf) > HeaderLen+limit {
				t.Fatalf("PDU of %d bytes, buffer %d, over the limit", len(raw), cap(r.buf))
			}
			p, err := Decode(typ, raw[HeaderLen:])
			if err != nil {
				var pe *ProtocolError
				if !errors.As(err, &pe) {
					t.Fatalf("Decode error type %T: %v", err, err)
				}
				continue
			}
			roundTrip(t, p, len(raw))
		}
	})
}

func roundTrip(t *testing.T, p PDU, size int) {
	t.Helper()
	enc, err := Append(nil, p)
	if err != nil {
		// Re-encoding adds at most an empty transfer-syntax sub-item to an
		// AC context, which can only overflow an item already near 64 KiB.
		if size > 65535-8 {
			return
		}
		t.Fatalf("decoded %T does not re-encode: %v", p, err)
	}
	again, err := Decode(PDUType(enc[0]), enc[HeaderLen:])
	if err != nil {
		t.Fatalf("re-encoded %T does not decode: %v", p, err)
	}
	if !reflect.DeepEqual(normalize(again), normalize(p)) {
		t.Fatalf("round trip differs\n got %#v\nwant %#v", again, p)
	}
}

// normalize maps empty PDV data to nil: P-DATA-TF data alias the input and
// keep an empty non-nil slice, which DeepEqual distinguishes from nil.
func normalize(p PDU) PDU {
	if d, ok := p.(*PDataTF); ok {
		c := &PDataTF{PDVs: append([]PDV(nil), d.PDVs...)}
		for i := range c.PDVs {
			if len(c.PDVs[i].Data) == 0 {
				c.PDVs[i].Data = nil
			}
		}
		return c
	}
	return p
}

// FuzzDecodeAssociateRQ decodes arbitrary item sequences as an
// A-ASSOCIATE-RQ and -AC body: no panic, only ProtocolErrors, and
// decode(encode(x)) == x.
func FuzzDecodeAssociateRQ(f *testing.F) {
	for _, b := range seedFiles(f) {
		f.Add(b[HeaderLen:])
	}
	for _, p := range seedPDUs()[:2] {
		b, _ := Append(nil, p)
		f.Add(b[HeaderLen:])
	}
	// At and just past the item count bounds, and AE titles at the edge of
	// VR AE (PS3.5 6.2).
	f.Add(assocBody(repeat(128, func(i int) []byte { return pcRQ(oddIDs(i)) })))
	f.Add(assocBody(cat(pcRQ(1), pcRQ(3), pcRQ(1))))
	f.Add(assocBody(pcRQ(1), repeat(129, func(int) []byte { return item(0x54, lp16("1.2"), []byte{1, 0}) })))
	f.Add(cat(u16(1), u16(0), aeField("PACS\x00EVIL"), ae("A\\B"), make([]byte, 32), item(0x10, str(DICOMApplicationContext)), pcRQ(1), item(0x50)))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, typ := range []PDUType{TypeAssociateRQ, TypeAssociateAC} {
			p, err := Decode(typ, body)
			if err != nil {
				var pe *ProtocolError
				if !errors.As(err, &pe) {
					t.Fatalf("error type %T: %v", err, err)
				}
				continue
			}
			roundTrip(t, p, len(body))
		}
	})
}
