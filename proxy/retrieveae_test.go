package proxy

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/proxy/inspect"
)

type allowAll struct{}

func (allowAll) AllowsService(string) bool         { return true }
func (allowAll) AllowsSOPClass(string) bool        { return true }
func (allowAll) AllowsMoveDestination(string) bool { return true }

// pdataPDV is one P-DATA-TF holding one PDV.
func pdataPDV(ctx uint8, command, last bool, data []byte) []byte {
	mch := byte(0)
	if command {
		mch |= 1
	}
	if last {
		mch |= 2
	}
	b := []byte{byte(association.TypePDataTF), 0}
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)+6))
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)+2))
	return append(append(b, ctx, mch), data...)
}

// elemEx is an explicit VR little endian element with a 2-byte length.
func elemEx(g, e uint16, vr string, v string) []byte {
	b := binary.LittleEndian.AppendUint16(nil, g)
	b = binary.LittleEndian.AppendUint16(b, e)
	b = append(b, vr...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

// The relay's inspection, with retrieveAEFilter, sends the backend's C-FIND
// identifier on rewritten (held over fragments, then split to the
// client's maximum PDU length), and leaves the requests and the final
// response as they came.
func TestRetrieveAEFilterInTheInspection(t *testing.T) {
	const ctx = 1
	const maxPDU = 64 // the least the inspection builds to; the identifier needs two
	insp := inspect.New(inspect.Config{
		Contexts: []inspect.Context{{ID: ctx, AbstractSyntax: association.StudyRootQueryRetrieveFind, TransferSyntax: association.ExplicitVRLittleEndian}},
		Policy:   allowAll{}, Rule: "r", MaxPDU: [2]uint32{maxPDU, 16384},
		Filter: retrieveAEFilter("ORTHANC", "QRPACS"),
	})
	rq := (&dimse.Command{CommandField: dimse.CFindRQ, MessageID: 7, AffectedSOPClassUID: association.StudyRootQueryRetrieveFind}).Encode()
	if v := insp.Feed(inspect.Requestor, pdataPDV(ctx, true, true, rq)); v.Violation != nil || !v.Pass {
		t.Fatalf("C-FIND-RQ: %+v", v)
	}
	keys := elemEx(0x0008, 0x0054, "AE", "")
	if v := insp.Feed(inspect.Requestor, pdataPDV(ctx, false, true, keys)); v.Violation != nil || !v.Pass {
		t.Fatalf("C-FIND-RQ keys: %+v", v)
	}
	rsp := (&dimse.Command{CommandField: dimse.CFindRSP, MessageIDBeingRespondedTo: 7, AffectedSOPClassUID: association.StudyRootQueryRetrieveFind,
		HasStatus: true, Status: dimse.StatusPending, CommandDataSetType: 0}).Encode()
	ident := append(elemEx(0x0008, 0x0052, "CS", "STUDY "), elemEx(0x0008, 0x0054, "AE", "ORTHANC ")...)
	ident = append(ident, elemEx(0x0020, 0x000D, "UI", "1.2.826.0.1.3680043.2.1.1.1234567890.1234567890.1234567890.1\x00")...)
	want := append(elemEx(0x0008, 0x0052, "CS", "STUDY "), elemEx(0x0008, 0x0054, "AE", "QRPACS")...)
	want = append(want, elemEx(0x0020, 0x000D, "UI", "1.2.826.0.1.3680043.2.1.1.1234567890.1234567890.1234567890.1\x00")...)

	var sent []byte // what the client gets, PDUs back to back
	feed := func(pdu []byte) {
		t.Helper()
		v := insp.Feed(inspect.Acceptor, pdu)
		if v.Violation != nil {
			t.Fatal(v.Violation)
		}
		if v.Pass {
			sent = append(sent, pdu...)
		} else {
			sent = append(sent, v.Forward...)
		}
		insp.Release(inspect.Acceptor)
	}
	feed(pdataPDV(ctx, true, true, rsp))
	feed(pdataPDV(ctx, false, false, ident[:9]))
	feed(pdataPDV(ctx, false, true, ident[9:]))
	final := (&dimse.Command{CommandField: dimse.CFindRSP, MessageIDBeingRespondedTo: 7, AffectedSOPClassUID: association.StudyRootQueryRetrieveFind,
		HasStatus: true, Status: dimse.StatusSuccess, CommandDataSetType: dimse.NoDataSet}).Encode()
	feed(pdataPDV(ctx, true, true, final))

	var data []byte
	for b := sent; len(b) > 0; {
		n := int(binary.BigEndian.Uint32(b[2:]))
		if err := association.EachPDV(b[6:6+n], func(p association.PDV) error {
			if !p.Command {
				if n > maxPDU {
					t.Errorf("identifier PDU of %d bytes, over the client's %d", n, maxPDU)
				}
				data = append(data, p.Data...)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		b = b[6+n:]
	}
	if !bytes.Equal(data, want) {
		t.Errorf("identifier sent\n% x\nwant\n% x", data, want)
	}
}
