package inspect

import (
	"encoding/binary"
	"testing"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
)

// fuzzInput encodes PDUs as the fuzzer feeds them: per PDU, the side (low
// bit of a byte) and a 2-byte length of the P-DATA-TF body that follows.
func fuzzInput(steps ...step) []byte {
	var b []byte
	for _, s := range steps {
		body := s.pdu[association.HeaderLen:]
		b = append(b, byte(s.from))
		b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
		b = append(b, body...)
	}
	return b
}

// FuzzInspector feeds PDV sequences from both sides and checks what must
// hold whatever comes: no panic; what is forwarded or replied is whole
// P-DATA-TF PDUs within the receiver's maximum length (a longer PDU is cut
// to fit, never passed), on accepted
// contexts; after a violation every verdict is that violation and
// nothing is sent; nothing stays held after Finish.
func FuzzInspector(f *testing.F) {
	ds := patientDataSet("PAT")
	get := withData(&dimse.Command{CommandField: dimse.CGetRQ, MessageID: 7, AffectedSOPClassUID: getModel})
	cmdBytes := storeRQ(1, ctStorage).Encode()
	f.Add(fuzzInput(R(pdu(cmdPDV(ctxCT, storeRQ(1, ctStorage)), dataPDV(ctxCT, true, ds)), pass),
		A(pdu(cmdPDV(ctxCT, rsp(dimse.CStoreRSP, 1, ctStorage, 0))), pass)))
	f.Add(fuzzInput(R(pdu(cmdPDV(ctxGet, get), dataPDV(ctxGet, true, ds)), pass),
		A(pdu(cmdPDV(ctxCT, storeRQ(1001, ctStorage)), dataPDV(ctxCT, true, ds)), pass),
		R(pdu(cmdPDV(ctxCT, rsp(dimse.CStoreRSP, 1001, ctStorage, 0))), pass),
		A(pdu(cmdPDV(ctxGet, rsp(dimse.CGetRSP, 7, getModel, 0))), pass)))
	f.Add(fuzzInput(R(pdu(pdv(ctxCT, true, false, cmdBytes[:9]), pdv(ctxCT, true, true, cmdBytes[9:]),
		dataPDV(ctxCT, false, ds[:3]), dataPDV(ctxCT, true, ds[3:])), pass)))
	f.Add(fuzzInput(R(pdu(cmdPDV(ctxPrint, &dimse.Command{CommandField: dimse.NActionRQ, MessageID: 4,
		AffectedSOPClassUID: printMgmt, RequestedSOPClassUID: printer, CommandDataSetType: dimse.NoDataSet})), pass)))
	f.Add(fuzzInput(R(pdu(pdv(ctxCT, true, false, nil), pdv(ctxCT, true, false, nil), pdv(ctxCT, true, false, nil)), pass)))
	f.Add(fuzzInput(R(pdu(cmdPDV(ctxFind, withData(rsp(dimse.CFindRSP, 2, findModel, 0xFF00))), dataPDV(ctxFind, true, ds)), pass)))
	f.Add(fuzzInput(R(pdu(cmdPDV(ctxCT, storeRQ(1, mrStorage)), dataPDV(ctxCT, true, ds)), pass),
		R(pdu(dataPDV(ctxMR, true, ds)), pass)))
	// A data set out of tag order (PS3.5 7.1), split over two PDUs.
	twice := append(patientDataSet("A"), patientDataSet("B")...)
	f.Add(fuzzInput(R(pdu(cmdPDV(ctxCT, storeRQ(1, ctStorage)), dataPDV(ctxCT, false, twice[:5])), pass),
		R(pdu(dataPDV(ctxCT, true, twice[5:])), pass)))

	f.Fuzz(func(t *testing.T, in []byte) {
		const max = 512
		insp := newTestInspector(rulePolicy{services: []string{"C-ECHO", "C-STORE", "C-FIND", "C-GET", "N-ACTION"},
			sopClasses: []string{association.VerificationSOPClass, ctStorage, findModel, getModel, printMgmt}},
			func(c *Config) { c.MaxPDU = [2]uint32{max, max + 100} })
		var failed *Violation
		for len(in) >= 3 {
			from := Side(in[0] & 1)
			n := int(binary.BigEndian.Uint16(in[1:3]))
			in = in[3:]
			n = min(n, len(in))
			body := in[:n]
			in = in[n:]
			p := append([]byte{byte(association.TypePDataTF), 0, 0, 0, 0, 0}, body...)
			binary.BigEndian.PutUint32(p[2:], uint32(len(body)))
			v := insp.Feed(from, p)
			if failed != nil {
				if v.Violation != failed {
					t.Fatalf("after violation %v, verdict %+v", failed, v)
				}
				continue
			}
			if v.Violation != nil {
				failed = v.Violation
				if v.Pass || len(v.Forward) > 0 || len(v.Reply) > 0 {
					t.Fatalf("violation with something to send: %+v", v)
				}
				continue
			}
			rmax := insp.cfg.MaxPDU[from.Other()]
			if v.Pass && uint32(len(body)) > rmax {
				// Longer than the receiver takes: it must be cut, not passed.
				t.Fatalf("passed a PDU of %d bytes to a side that takes %d", len(body), rmax)
			}
			for _, s := range parsePDUs(t, v.Forward, rmax) {
				if insp.context(s.ctx) == nil {
					t.Fatalf("forwarded a PDV on context %d", s.ctx)
				}
			}
			for _, c := range commands(t, parsePDUs(t, v.Reply, insp.cfg.MaxPDU[from])) {
				if !c.HasStatus || c.CommandField.IsRequest() {
					t.Fatalf("reply %+v", c)
				}
			}
			insp.Release(from)
		}
		insp.Finish()
		for s := range insp.sides {
			if insp.sides[s].held != nil {
				t.Fatal("held buffer kept after Finish")
			}
		}
	})
}
