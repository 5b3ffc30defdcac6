package proxy

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
)

// Bounds on the A-ASSOCIATE-RQ and the DIMSE command, end to end: an RQ
// with even or repeated context IDs, more contexts than PS3.8 allows, a
// length past the RQ bound, or an AE title that is not a VR AE value, and a
// DIMSE command with repeated tags, each get A-ABORT (service provider, invalid PDU parameter
// value) instead of being decoded, matched or forwarded.
func TestHostilePDUsAborted(t *testing.T) {
	e := startEdge(t, edgeOptions{MaxPDU: 1 << 20, ARTIM: shortARTIM})
	rqWith := func(f func(rq *association.AssociateRQ)) []byte {
		rq := echoRQ("GOCLIENT", "DICOMEDGE")
		f(rq)
		return mustAppend(t, rq)
	}
	pc := func(id uint8) association.PresentationContextRQ {
		return association.PresentationContextRQ{ID: id, AbstractSyntax: association.VerificationSOPClass,
			TransferSyntaxes: []string{association.ImplicitVRLittleEndian}}
	}
	// 1 MiB of 8-byte context items: within max_pdu_length, over the RQ bound.
	bigRQ := mustAppend(t, echoRQ("GOCLIENT", "DICOMEDGE"))
	for len(bigRQ) < 1<<20-8 {
		bigRQ = append(bigRQ, association.ItemPresentationContextRQ, 0, 0, 4, 1, 0, 0, 0)
	}
	binary.BigEndian.PutUint32(bigRQ[2:], uint32(len(bigRQ)-association.HeaderLen))
	// A C-ECHO-RQ whose MessageID appears twice (tags not ascending).
	el := func(elem uint16, v []byte) []byte {
		b := binary.LittleEndian.AppendUint16(nil, 0)
		b = binary.LittleEndian.AppendUint16(b, elem)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
		return append(b, v...)
	}
	var cmd []byte
	cmd = append(cmd, el(0x0002, []byte(association.VerificationSOPClass+"\x00"))...)
	cmd = append(cmd, el(0x0100, []byte{0x30, 0})...)
	cmd = append(cmd, el(0x0110, []byte{1, 0})...)
	cmd = append(cmd, el(0x0800, []byte{0x01, 0x01})...)
	cmd = append(cmd, el(0x0110, []byte{2, 0})...)
	dupEcho := mustAppend(t, &association.PDataTF{PDVs: []association.PDV{{ContextID: 1, Command: true, Last: true, Data: cmd}}})

	cases := []struct {
		name        string
		established bool
		send        []byte
	}{
		{"even context ID", false, rqWith(func(rq *association.AssociateRQ) { rq.PresentationContexts[0].ID = 2 })},
		{"repeated context ID", false, rqWith(func(rq *association.AssociateRQ) {
			rq.PresentationContexts = append(rq.PresentationContexts, pc(1))
		})},
		{"1 MiB RQ of 131,000 contexts", false, bigRQ},
		{"tab in the called AE title", false, rqWith(func(rq *association.AssociateRQ) { rq.CalledAE = "\tDICOMEDGE" })},
		{"NUL inside the calling AE title", false, rqWith(func(rq *association.AssociateRQ) { rq.CallingAE = "GO\x00CLIENT" })},
		{"backslash in the calling AE title", false, rqWith(func(rq *association.AssociateRQ) { rq.CallingAE = `GO\CLIENT` })},
		{"C-ECHO with a repeated MessageID", true, dupEcho},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
			if tc.established {
				associate(t, c, echoRQ("GOCLIENT", "DICOMEDGE"))
			}
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			expectAbort(t, c, association.AbortInvalidPDUParameterValue)
		})
	}
}

// expectAbort reads an A-ABORT with the given reason from the edge, then EOF.
func expectAbort(t *testing.T, c net.Conn, reason association.AbortReason) {
	t.Helper()
	p, err := readPDU(t, c, 5*time.Second)
	if err != nil {
		t.Fatalf("want A-ABORT, read error %v", err)
	}
	ab, ok := p.(*association.Abort)
	if !ok {
		t.Fatalf("got %T %+v, want A-ABORT", p, p)
	}
	if ab.Source != association.AbortSourceServiceProvider || ab.Reason != reason {
		t.Errorf("A-ABORT source %v reason %v, want service-provider %v", ab.Source, ab.Reason, reason)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second)) // the edge closes at ARTIM (PS3.8 Sta13)
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("after A-ABORT: read %v, want EOF", err)
	}
}

// Answer path: a P-DATA-TF of 6-byte PDV items used to be
// decoded into a slice of 32-byte PDVs (over 5x the PDU). The answerer now
// walks the items in place, so a 4 MiB PDU of ~700,000 empty data PDVs
// costs about its read buffer (grown in steps: up to twice its size), not
// 22 MiB more.
func TestAnswerPDataTinyPDVsNotAmplified(t *testing.T) {
	const size = 4 << 20
	e := startEdge(t, edgeOptions{MaxPDU: size, Quiet: true})
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	associate(t, c, echoRQ("GOCLIENT", "DICOMEDGE"))
	echo := mustAppend(t, &association.PDataTF{PDVs: []association.PDV{{ContextID: 1, Command: true, Last: true,
		Data: cEchoRQ(t, 7)}}})
	pdu := make([]byte, association.HeaderLen, association.HeaderLen+size+len(echo))
	pdu[0] = byte(association.TypePDataTF)
	for len(pdu)+6 <= association.HeaderLen+size {
		pdu = append(pdu, 0, 0, 0, 2, 1, 0) // data PDV, context 1, no bytes
	}
	binary.BigEndian.PutUint32(pdu[2:], uint32(len(pdu)-association.HeaderLen))
	wire := append(pdu, echo...)

	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	if _, err := c.Write(wire); err != nil {
		t.Fatal(err)
	}
	// The C-ECHO-RSP after it shows the edge has walked every PDV.
	p, err := readPDU(t, c, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&m1)
	if _, ok := p.(*association.PDataTF); !ok {
		t.Fatalf("got %T %+v, want the C-ECHO-RSP", p, p)
	}
	alloc := m1.TotalAlloc - m0.TotalAlloc
	t.Logf("a %d-byte P-DATA-TF of %d PDVs: %.1f MiB allocated in the process", len(pdu), (len(pdu)-6)/6, float64(alloc)/(1<<20))
	if alloc > 4*size {
		t.Fatalf("%d bytes allocated for a %d-byte PDU: PDVs decoded into a slice?", alloc, len(pdu))
	}
}

// cEchoRQ is a C-ECHO-RQ command set.
func cEchoRQ(t *testing.T, id uint16) []byte {
	t.Helper()
	return (&dimse.Command{CommandField: dimse.CEchoRQ, MessageID: id, AffectedSOPClassUID: association.VerificationSOPClass,
		CommandDataSetType: dimse.NoDataSet}).Encode()
}

// Relay path: a command whose tags repeat is refused with
// an A-ABORT to the client and never reaches the backend, which could read
// the first of two values where the edge read the last.
func TestRelayRefusesAmbiguousCommand(t *testing.T) {
	el := func(elem uint16, v []byte) []byte {
		b := binary.LittleEndian.AppendUint16(nil, 0)
		b = binary.LittleEndian.AppendUint16(b, elem)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
		return append(b, v...)
	}
	cases := []struct {
		name string
		cmd  []byte
	}{
		{"repeated MessageID", append(append(append(append(
			el(0x0002, []byte(association.VerificationSOPClass+"\x00")),
			el(0x0100, []byte{0x30, 0})...), el(0x0110, []byte{1, 0})...), el(0x0800, []byte{0x01, 0x01})...),
			el(0x0110, []byte{2, 0})...)},
		{"group length short of the elements", append(el(0x0000, []byte{10, 0, 0, 0}), cEchoRQ(t, 1)[12:]...)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, backendDone := goBackend(t, func(c net.Conn, r *association.Reader) error {
				p, err := r.ReadPDU()
				if err != nil {
					return nil // closed: nothing forwarded
				}
				if _, ok := p.(*association.PDataTF); ok {
					return errors.New("the backend received the ambiguous command")
				}
				return nil
			})
			e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", addr, "GOSCP"), Rules: storeRules(`"C-ECHO"`), ARTIM: shortARTIM})
			c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
			associate(t, c, echoRQ("MODALITY1", "MAINPACS"))
			if err := association.WritePDU(c, &association.PDataTF{PDVs: []association.PDV{{ContextID: 1, Command: true, Last: true, Data: tc.cmd}}}); err != nil {
				t.Fatal(err)
			}
			expectAbort(t, c, association.AbortInvalidPDUParameterValue)
			select {
			case err := <-backendDone:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("backend did not see the association end")
			}
		})
	}
}
