package proxy

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// Regression tests for the relay's command inspection (review findings 1,
// 2, 11, 12, 13, 16) against a scripted Go backend, which sees exactly which
// PDUs the edge forwards and can answer when the test says.

// gotPDU is one PDU the scripted backend received.
type gotPDU struct {
	typ    association.PDUType
	length int // the whole PDU, header included
	pdu    association.PDU
}

// scriptBackend accepts one association: it answers the RQ with an AC
// accepting every context (or with abortRQ instead), then reports each PDU
// it reads on got; the test writes to conn.
type scriptBackend struct {
	Addr    string
	maxPDU  uint32
	abortRQ *association.Abort
	got     chan gotPDU
	conn    chan net.Conn
}

func startScriptBackend(t *testing.T, maxPDU uint32, abortRQ *association.Abort) *scriptBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &scriptBackend{Addr: ln.Addr().String(), maxPDU: maxPDU, abortRQ: abortRQ,
		got: make(chan gotPDU, 256), conn: make(chan net.Conn, 1)}
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		select {
		case c := <-b.conn:
			c.Close()
		default:
		}
		<-done
	})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		rd := association.NewReader(c, 1<<20)
		p, err := rd.ReadPDU()
		rq, ok := p.(*association.AssociateRQ)
		if err != nil || !ok {
			return
		}
		if b.abortRQ != nil {
			_ = association.WritePDU(c, b.abortRQ)
			return
		}
		ac := &association.AssociateAC{ProtocolVersion: 1, CalledAE: rq.CalledAE, CallingAE: rq.CallingAE,
			ApplicationContext: rq.ApplicationContext,
			UserInfo: association.UserInfo{MaxLength: b.maxPDU, HasMaxLength: true, ImplementationClassUID: "1.2.3.4.5",
				ImplementationVersionName: "SCRIPTED"}}
		for _, pc := range rq.PresentationContexts {
			ac.PresentationContexts = append(ac.PresentationContexts, association.PresentationContextAC{ID: pc.ID,
				Result: association.PCAcceptance, TransferSyntax: pc.TransferSyntaxes[0]})
		}
		if association.WritePDU(c, ac) != nil {
			return
		}
		b.conn <- c
		for range 10000 {
			typ, raw, err := rd.Next()
			if err != nil {
				return
			}
			p, _ := association.Decode(typ, append([]byte(nil), raw[association.HeaderLen:]...))
			select {
			case b.got <- gotPDU{typ: typ, length: len(raw), pdu: p}:
			case <-time.After(10 * time.Second):
				return
			}
		}
	}()
	return b
}

// next is the next PDU the backend received, or nil after d.
func (b *scriptBackend) next(t *testing.T, d time.Duration) *gotPDU {
	t.Helper()
	select {
	case g := <-b.got:
		return &g
	case <-time.After(d):
		return nil
	}
}

// nextCommand collects P-DATA-TF PDUs until a whole command arrives.
func (b *scriptBackend) nextCommand(t *testing.T) (*dimse.Command, []gotPDU) {
	t.Helper()
	asm := &dimse.Assembler{}
	var pdus []gotPDU
	for range 100 {
		g := b.next(t, 5*time.Second)
		if g == nil {
			t.Fatal("backend: no command within 5s")
		}
		pdus = append(pdus, *g)
		pd, ok := g.pdu.(*association.PDataTF)
		if !ok {
			t.Fatalf("backend got %v, want P-DATA-TF", g.typ)
		}
		for _, p := range pd.PDVs {
			cmd, done, err := asm.Add(p)
			if err != nil {
				t.Fatal(err)
			}
			if done {
				return cmd, pdus
			}
		}
	}
	t.Fatal("backend: no command in 100 PDUs")
	return nil, nil
}

func (b *scriptBackend) send(t *testing.T, ctx uint8, cmd *dimse.Command) {
	t.Helper()
	select {
	case c := <-b.conn:
		b.conn <- c
		if err := dimse.WriteMessage(c, ctx, cmd, nil, b.maxPDU); err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("backend has no association")
	}
}

func (b *scriptBackend) write(t *testing.T, p association.PDU) {
	t.Helper()
	c := <-b.conn
	b.conn <- c
	if err := association.WritePDU(c, p); err != nil {
		t.Fatal(err)
	}
}

// inspectEdge starts an edge relaying MODALITY* → MAINPACS to a scripted
// backend under one rule's relay body.
func inspectEdge(t *testing.T, be *scriptBackend, relayBody string) *testEdge {
	t.Helper()
	return startEdge(t, edgeOptions{Backends: backendBlock("pacs", be.Addr, "SCRIPTED"), Rules: fmt.Sprintf(`
rule "modalities" {
  when {
    client_cn  = ["client"]
    calling_ae = ["MODALITY*"]
    called_ae  = ["MAINPACS"]
  }
  relay {
    backend = "pacs"
    %s
  }
}
`, relayBody)})
}

// Presentation contexts the inspection tests propose.
const (
	pcEcho = 1 // Verification
	pcSC   = 3 // Secondary Capture
	pcFind = 5 // Study Root FIND
	pcNGet = 7 // an N-service class
)

const (
	studyRootFind      = "1.2.840.10008.5.1.4.1.2.2.1"
	modalityPPSClass   = "1.2.840.10008.3.1.2.3.3"
	testInstanceUID    = "2.25.4242"
	testPatientID      = "PAT-INSPECT"
	noResponseDeadline = 300 * time.Millisecond
)

// inspectClient associates with the edge proposing the contexts above.
func inspectClient(t *testing.T, e *testEdge) *tls.Conn {
	t.Helper()
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	rq := echoRQ("MODALITY1", "MAINPACS")
	for _, pc := range []struct {
		id  uint8
		uid string
	}{{pcSC, association.SecondaryCaptureImageStorage}, {pcFind, studyRootFind}, {pcNGet, modalityPPSClass}} {
		rq.PresentationContexts = append(rq.PresentationContexts, association.PresentationContextRQ{ID: pc.id,
			AbstractSyntax: pc.uid, TransferSyntaxes: []string{association.ExplicitVRLittleEndian}})
	}
	if err := association.WritePDU(c, rq); err != nil {
		t.Fatal(err)
	}
	p, err := readPDU(t, c, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ac, ok := p.(*association.AssociateAC)
	if !ok {
		t.Fatalf("edge answered the RQ with %T", p)
	}
	for _, id := range []uint8{pcEcho, pcSC} {
		if pc, ok := ac.AcceptedContext(id); !ok || pc.Result != association.PCAcceptance {
			t.Fatalf("context %d not accepted: %+v", id, ac.PresentationContexts)
		}
	}
	return c
}

// readResponse reads one whole DIMSE command from the edge.
func readResponse(t *testing.T, c net.Conn) *dimse.Command {
	t.Helper()
	asm := &dimse.Assembler{}
	for range 100 {
		p, err := readPDU(t, c, 5*time.Second)
		if err != nil {
			t.Fatalf("reading a response: %v", err)
		}
		pd, ok := p.(*association.PDataTF)
		if !ok {
			t.Fatalf("edge sent %T, want P-DATA-TF", p)
		}
		for _, v := range pd.PDVs {
			cmd, done, err := asm.Add(v)
			if err != nil {
				t.Fatal(err)
			}
			if done {
				return cmd
			}
		}
	}
	t.Fatal("no response in 100 PDUs")
	return nil
}

// storeDataSet is a small Explicit VR Little Endian data set with a patient ID.
func storeDataSet(t *testing.T) []byte {
	t.Helper()
	return testpeer.DICOMFile{PatientID: testPatientID, PatientName: "INSPECT^TEST", StudyUID: "2.25.1", SeriesUID: "2.25.2",
		SOPInstanceUID: testInstanceUID, Rows: 8, Columns: 8}.DataSet()
}

func storeRQ(id uint16, class string) *dimse.Command {
	return &dimse.Command{CommandField: dimse.CStoreRQ, MessageID: id, AffectedSOPClassUID: class,
		AffectedSOPInstanceUID: testInstanceUID, CommandDataSetType: dimse.DataSetPresent}
}

func echoCmd(id uint16) *dimse.Command {
	return &dimse.Command{CommandField: dimse.CEchoRQ, MessageID: id, AffectedSOPClassUID: association.VerificationSOPClass,
		CommandDataSetType: dimse.NoDataSet}
}

// dimseEvents are the audit's dimse records once the association ended.
func dimseEvents(t *testing.T, e *testEdge) []audit.Event {
	t.Helper()
	e.waitEvent(t, "association end", func(ev audit.Event) bool {
		return ev.Event == audit.EventReleased || ev.Event == audit.EventAborted
	})
	var out []audit.Event
	for _, ev := range e.events(t) {
		if ev.Event == audit.EventDIMSE {
			out = append(out, ev)
		}
	}
	return out
}

// Finding 12: a command the client fragments over several PDUs reaches the
// backend in PDUs no larger than the backend's maximum.
func TestRelayHeldFragmentsFitBackendMax(t *testing.T) {
	const backendMax = 4096
	be := startScriptBackend(t, backendMax, nil)
	e := inspectEdge(t, be, `services = ["C-ECHO", "N-GET"]`)
	c := inspectClient(t, e)
	// N-GET with 2,500 attribute tags: a 10 KB command set.
	var ids []byte
	for i := range 2500 {
		ids = binary.LittleEndian.AppendUint16(ids, 0x0010)
		ids = binary.LittleEndian.AppendUint16(ids, uint16(i))
	}
	nget := &dimse.Command{CommandField: dimse.NGetRQ, MessageID: 1, RequestedSOPClassUID: modalityPPSClass,
		RequestedSOPInstanceUID: "2.25.9", CommandDataSetType: dimse.NoDataSet,
		Elements: []dimse.Element{{Tag: dimse.TagAttributeIdentifierList, Value: ids}}}
	if err := dimse.WriteMessage(c, pcNGet, nget, nil, backendMax); err != nil {
		t.Fatal(err)
	}
	got, pdus := be.nextCommand(t)
	if got.CommandField != dimse.NGetRQ {
		t.Fatalf("backend got %v", got.CommandField)
	}
	for _, p := range pdus {
		if p.length > backendMax+association.HeaderLen {
			t.Errorf("backend received a %d-byte PDU, its maximum is %d (+%d header)", p.length, backendMax, association.HeaderLen)
		}
	}
	if len(pdus) < 3 {
		t.Errorf("command arrived in %d PDUs, want at least 3", len(pdus))
	}
}

// Finding 16: the backend's A-ABORT reaches the client unchanged (source
// and reason), both in an established association and in answer to the RQ.
func TestRelayBackendAbortCarriedThrough(t *testing.T) {
	cases := []struct {
		name  string
		abort association.Abort
		atRQ  bool
	}{
		{"service user", association.Abort{Source: association.AbortSourceServiceUser}, false},
		{"provider, unrecognized PDU", association.Abort{Source: association.AbortSourceServiceProvider, Reason: association.AbortUnrecognizedPDU}, false},
		{"service user, in answer to the RQ", association.Abort{Source: association.AbortSourceServiceUser}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var atRQ *association.Abort
			if tc.atRQ {
				atRQ = &tc.abort
			}
			be := startScriptBackend(t, 16384, atRQ)
			e := inspectEdge(t, be, `services = ["C-ECHO"]`)
			c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
			if err := association.WritePDU(c, echoRQ("MODALITY1", "MAINPACS")); err != nil {
				t.Fatal(err)
			}
			if !tc.atRQ {
				if p, err := readPDU(t, c, 5*time.Second); err != nil {
					t.Fatal(err)
				} else if _, ok := p.(*association.AssociateAC); !ok {
					t.Fatalf("got %T", p)
				}
				be.write(t, &tc.abort)
			}
			p, err := readPDU(t, c, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			ab, ok := p.(*association.Abort)
			if !ok || ab.Source != tc.abort.Source || ab.Reason != tc.abort.Reason {
				t.Fatalf("client got %#v, want %#v", p, tc.abort)
			}
			if p, err := readPDU(t, c, 5*time.Second); err == nil {
				t.Errorf("edge sent %T after the abort, want the connection closed", p)
			}
		})
	}
}
