package proxy

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// Regression tests for the relay's command inspection against a scripted
// Go backend, which sees exactly which
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
	rq      chan *association.AssociateRQ // the A-ASSOCIATE-RQ the edge sent
	// editAC, when set, changes the A-ASSOCIATE-AC before it is sent (a
	// hostile backend's answer).
	editAC func(rq *association.AssociateRQ, ac *association.AssociateAC)
}

func startScriptBackend(t *testing.T, maxPDU uint32, abortRQ *association.Abort) *scriptBackend {
	t.Helper()
	return startScriptBackendAC(t, maxPDU, abortRQ, nil)
}

// startScriptBackendAC is startScriptBackend whose A-ASSOCIATE-AC editAC
// changes first.
func startScriptBackendAC(t *testing.T, maxPDU uint32, abortRQ *association.Abort,
	editAC func(*association.AssociateRQ, *association.AssociateAC)) *scriptBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &scriptBackend{Addr: ln.Addr().String(), maxPDU: maxPDU, abortRQ: abortRQ, editAC: editAC,
		got: make(chan gotPDU, 256), conn: make(chan net.Conn, 1), rq: make(chan *association.AssociateRQ, 1)}
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
		b.rq <- rq
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
		if b.editAC != nil {
			b.editAC(rq, ac)
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

// Next is the next PDU the backend received, or nil after d.
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
	return startEdge(t, edgeOptions{Backends: backendBlock("pacs", be.Addr, "SCRIPTED"), Rules: modalityRelayRule(relayBody)})
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
	ac := associate(t, c, rq)
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
	return readResponseWithin(t, c, 0)
}

// readResponseWithin is readResponse that also fails the test when a
// P-DATA-TF is longer than maxLength (PS3.8 D.1.1; 0: no check).
func readResponseWithin(t *testing.T, c net.Conn, maxLength int) *dimse.Command {
	t.Helper()
	asm := &dimse.Assembler{}
	for range 200 {
		p, err := readPDU(t, c, 5*time.Second)
		if err != nil {
			t.Fatalf("reading a response: %v", err)
		}
		pd, ok := p.(*association.PDataTF)
		if !ok {
			t.Fatalf("edge sent %T, want P-DATA-TF", p)
		}
		length := 0
		for _, v := range pd.PDVs {
			length += 6 + len(v.Data) // item length field, context ID, message control header
		}
		if maxLength > 0 && length > maxLength {
			t.Fatalf("the edge sent a P-DATA-TF of length %d to a requestor whose maximum is %d", length, maxLength)
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
	t.Fatal("no response in 200 PDUs")
	return nil
}

// storeDataSet is a small Explicit VR Little Endian data set with a patient ID.
func storeDataSet(t *testing.T) []byte {
	t.Helper()
	return testpeer.DICOMFile{PatientID: testPatientID, PatientName: "INSPECT^TEST", StudyUID: "2.25.1", SeriesUID: "2.25.2",
		SOPInstanceUID: testInstanceUID, Rows: 8, Columns: 8}.DataSet()
}

func storeCmd(id uint16, class string) *dimse.Command {
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

// The command's SOP class must be the context's abstract syntax
// (C-services) and allowed by the rule; otherwise the edge answers and the
// backend never sees the request or its data set.
func TestRelayChecksCommandSOPClass(t *testing.T) {
	cases := []struct {
		name       string
		sopClasses string // the rule's sop_classes
		ctx        uint8
		cmd        *dimse.Command
		status     uint16 // 0: forwarded
	}{
		{"CT store on the Verification context", "", pcEcho, storeCmd(1, association.CTImageStorage), dimse.StatusSOPClassNotSupported},
		{"SC store on the Verification context", "", pcEcho, storeCmd(1, association.SecondaryCaptureImageStorage), dimse.StatusSOPClassNotSupported},
		{"CT store on the SC context", "", pcSC, storeCmd(1, association.CTImageStorage), dimse.StatusSOPClassNotSupported},
		{"CT store, sop_classes without CT", `sop_classes = ["1.2.840.10008.1.1", "` + association.SecondaryCaptureImageStorage + `", "` + studyRootFind + `", "` + modalityPPSClass + `"]`,
			pcEcho, storeCmd(1, association.CTImageStorage), dimse.StatusRefusedNotAuthorized},
		{"echo naming the find model", "", pcEcho, &dimse.Command{CommandField: dimse.CEchoRQ, MessageID: 1,
			AffectedSOPClassUID: studyRootFind, CommandDataSetType: dimse.NoDataSet}, dimse.StatusSOPClassNotSupported},
		{"N-GET of a class outside sop_classes", `sop_classes = ["1.2.840.10008.1.1", "` + association.SecondaryCaptureImageStorage + `", "` + studyRootFind + `", "` + modalityPPSClass + `"]`,
			pcNGet, &dimse.Command{CommandField: dimse.NGetRQ, MessageID: 1, RequestedSOPClassUID: association.CTImageStorage,
				RequestedSOPInstanceUID: "2.25.7", CommandDataSetType: dimse.NoDataSet}, dimse.StatusRefusedNotAuthorized},
		{"SC store on the SC context", "", pcSC, storeCmd(1, association.SecondaryCaptureImageStorage), 0},
		{"echo on the Verification context", "", pcEcho, echoCmd(1), 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := startScriptBackend(t, 16384, nil)
			e := inspectEdge(t, be, `services = ["C-ECHO", "C-STORE", "C-FIND", "N-GET"]
    `+tc.sopClasses)
			c := inspectClient(t, e)
			var ds []byte
			if tc.cmd.HasDataSet() {
				ds = storeDataSet(t)
			}
			if err := dimse.WriteMessage(c, tc.ctx, tc.cmd, ds, 16384); err != nil {
				t.Fatal(err)
			}
			// A C-ECHO after it shows what the backend received before.
			if err := dimse.WriteMessage(c, pcEcho, echoCmd(2), nil, 16384); err != nil {
				t.Fatal(err)
			}
			got, _ := be.nextCommand(t)
			if tc.status != 0 {
				rsp := readResponse(t, c)
				if rsp.Status != tc.status || rsp.MessageIDBeingRespondedTo != 1 {
					t.Errorf("edge answered status 0x%04X to message %d, want 0x%04X to 1", rsp.Status, rsp.MessageIDBeingRespondedTo, tc.status)
				}
				if got.MessageID != 2 {
					t.Fatalf("backend received message %d (%v), want only the later C-ECHO", got.MessageID, got.CommandField)
				}
			} else if got.MessageID != 1 || got.CommandField != tc.cmd.CommandField {
				t.Fatalf("backend received %v message %d, want the forwarded request", got.CommandField, got.MessageID)
			}
			_ = association.WritePDU(c, &association.Abort{})
			evs := dimseEvents(t, e)
			if tc.status != 0 {
				if len(evs) == 0 || evs[0].Status != fmt.Sprintf("0x%04X", tc.status) || evs[0].Allowed == nil || *evs[0].Allowed {
					t.Errorf("audit dimse records %+v, want the refusal first", evs)
				}
			}
		})
	}
}

// The same with a real backend: a CT C-STORE on the accepted
// Verification context no longer reaches storescp.
func TestRelaySOPClassBypassStoreSCP(t *testing.T) {
	testpeer.Require(t, "storescp")
	scp := testpeer.StartStoreSCP(t, "STORESCP")
	e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", scp.Addr, "STORESCP"), Rules: scOnlyRule})
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	associate(t, c, echoRQ("MODALITY1", "MAINPACS"))
	ct := storeCmd(1, association.CTImageStorage)
	if err := dimse.WriteMessage(c, pcEcho, ct, storeDataSet(t), 16384); err != nil {
		t.Fatal(err)
	}
	if rsp := readResponse(t, c); rsp.Status != dimse.StatusRefusedNotAuthorized {
		t.Errorf("status 0x%04X, want 0x0124", rsp.Status)
	}
	if err := dimse.WriteMessage(c, pcEcho, echoCmd(2), nil, 16384); err != nil {
		t.Fatal(err)
	}
	if rsp := readResponse(t, c); rsp.Status != dimse.StatusSuccess || rsp.MessageIDBeingRespondedTo != 2 {
		t.Errorf("echo after the refusal: status 0x%04X for %d", rsp.Status, rsp.MessageIDBeingRespondedTo)
	}
	_ = association.WritePDU(c, &association.ReleaseRQ{})
	_, _ = readPDU(t, c, 5*time.Second)
	e.waitEvent(t, "released", func(ev audit.Event) bool { return ev.Event == audit.EventReleased })
	if n := scp.Count(); n != 0 {
		t.Errorf("storescp stored %d files, want 0", n)
	}
}

// A request reusing an outstanding Message ID is refused with
// 0x0210 and not forwarded; operations the association ends before
// completing still get a dimse record (no status).
func TestRelayDuplicateMessageID(t *testing.T) {
	be := startScriptBackend(t, 16384, nil)
	e := inspectEdge(t, be, `services = ["C-ECHO", "C-STORE"]`)
	c := inspectClient(t, e)
	if err := dimse.WriteMessage(c, pcSC, storeCmd(1, association.SecondaryCaptureImageStorage), storeDataSet(t), 16384); err != nil {
		t.Fatal(err)
	}
	if err := dimse.WriteMessage(c, pcEcho, echoCmd(1), nil, 16384); err != nil {
		t.Fatal(err)
	}
	rsp := readResponse(t, c)
	if rsp.CommandField != dimse.CEchoRSP || rsp.Status != dimse.StatusDuplicateInvocation {
		t.Fatalf("edge answered %v status 0x%04X, want C-ECHO-RSP 0x0210", rsp.CommandField, rsp.Status)
	}
	got, _ := be.nextCommand(t)
	if got.CommandField != dimse.CStoreRQ {
		t.Fatalf("backend got %v first", got.CommandField)
	}
	// The store's data set, then nothing else (the duplicate was not forwarded).
	for range 100 {
		g := be.next(t, noResponseDeadline)
		if g == nil {
			break
		}
		if pd, ok := g.pdu.(*association.PDataTF); ok && len(pd.PDVs) > 0 && pd.PDVs[0].Command {
			t.Fatal("backend received another command: the duplicate was forwarded")
		}
	}
	// Once answered, ID 1 is free again.
	be.send(t, pcSC, dimse.NewResponse(storeCmd(1, association.SecondaryCaptureImageStorage), dimse.StatusSuccess))
	if rsp := readResponse(t, c); rsp.CommandField != dimse.CStoreRSP {
		t.Fatalf("got %v, want the backend's C-STORE-RSP", rsp.CommandField)
	}
	if err := dimse.WriteMessage(c, pcEcho, echoCmd(1), nil, 16384); err != nil {
		t.Fatal(err)
	}
	if got, _ := be.nextCommand(t); got.CommandField != dimse.CEchoRQ || got.MessageID != 1 {
		t.Fatalf("backend got %v %d, want the C-ECHO reusing the answered ID", got.CommandField, got.MessageID)
	}
	// The echo is never answered: the client aborts.
	_ = association.WritePDU(c, &association.Abort{})
	evs := dimseEvents(t, e)
	var summary []string
	for _, ev := range evs {
		summary = append(summary, fmt.Sprintf("%s/%d/%s", ev.Service, ev.MessageID, ev.Status))
	}
	want := "C-ECHO/1/0x0210 C-STORE/1/0x0000 C-ECHO/1/"
	if strings.Join(summary, " ") != want {
		t.Errorf("dimse records %q, want %q", strings.Join(summary, " "), want)
	}
}

// Message ID reuse with a real backend: C-STORE 1 then C-ECHO 1.
// Whatever the timing, every instance storescp stored has its record.
func TestRelayMessageIDReuseStoreSCP(t *testing.T) {
	testpeer.Require(t, "storescp")
	scp := testpeer.StartStoreSCP(t, "STORESCP")
	e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", scp.Addr, "STORESCP"), Rules: storeRules(`"C-ECHO", "C-STORE"`)})
	c := inspectClient(t, e)
	if err := dimse.WriteMessage(c, pcSC, storeCmd(1, association.SecondaryCaptureImageStorage), storeDataSet(t), 16384); err != nil {
		t.Fatal(err)
	}
	if err := dimse.WriteMessage(c, pcEcho, echoCmd(1), nil, 16384); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		readResponse(t, c)
	}
	_ = association.WritePDU(c, &association.ReleaseRQ{})
	_, _ = readPDU(t, c, 5*time.Second)
	stores := 0
	for _, ev := range dimseEvents(t, e) {
		if ev.Service == "C-STORE" && ev.SOPInstance == testInstanceUID && ev.Status == "0x0000" && ev.PatientID == testPatientID {
			stores++
		}
	}
	if n := scp.Count(); n != 1 || stores != 1 {
		t.Errorf("storescp stored %d, audit has %d successful C-STORE records; want 1 and 1", n, stores)
	}
}

// A backend answering before the data set has all arrived
// (allowed: e.g. an early failure) must not get a record written without
// the data set's bytes and patient ID, nor race the client pump.
func TestRelayRecordWaitsForDataSet(t *testing.T) {
	be := startScriptBackend(t, 16384, nil)
	e := inspectEdge(t, be, `services = ["C-ECHO", "C-STORE"]`)
	c := inspectClient(t, e)
	store := storeCmd(1, association.SecondaryCaptureImageStorage)
	ds := storeDataSet(t)
	if err := dimse.WriteMessage(c, pcSC, store, nil, 16384); err != nil { // the command alone
		t.Fatal(err)
	}
	if got, _ := be.nextCommand(t); got.CommandField != dimse.CStoreRQ {
		t.Fatalf("backend got %v", got.CommandField)
	}
	be.send(t, pcSC, dimse.NewResponse(store, dimse.StatusProcessingFailure))
	if rsp := readResponse(t, c); rsp.Status != dimse.StatusProcessingFailure {
		t.Fatalf("status 0x%04X", rsp.Status)
	}
	// Now the data set, in three PDUs.
	third := len(ds) / 3
	for i, part := range [][]byte{ds[:third], ds[third : 2*third], ds[2*third:]} {
		pd := &association.PDataTF{PDVs: []association.PDV{{ContextID: pcSC, Last: i == 2, Data: part}}}
		if err := association.WritePDU(c, pd); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if be.next(t, 5*time.Second) == nil {
			t.Fatal("data set not forwarded")
		}
	}
	_ = association.WritePDU(c, &association.ReleaseRQ{})
	if g := be.next(t, 5*time.Second); g == nil || g.typ != association.TypeReleaseRQ {
		t.Fatal("release not forwarded")
	}
	be.write(t, &association.ReleaseRP{})
	_, _ = readPDU(t, c, 5*time.Second)
	evs := dimseEvents(t, e)
	if len(evs) != 1 {
		t.Fatalf("%d dimse records, want 1", len(evs))
	}
	ev := evs[0]
	if ev.Status != "0x0110" || ev.Bytes != int64(len(ds)) || ev.PatientID != testPatientID {
		t.Errorf("record status %s bytes %d patient %q, want 0x0110, %d, %q", ev.Status, ev.Bytes, ev.PatientID, len(ds), testPatientID)
	}
}

// A command the client fragments over several PDUs reaches the
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

// C-CANCEL is forwarded only when the rule allows it and it
// names a forwarded operation; one with a data set is a protocol error.
func TestRelayCancel(t *testing.T) {
	find := &dimse.Command{CommandField: dimse.CFindRQ, MessageID: 5, AffectedSOPClassUID: studyRootFind,
		CommandDataSetType: dimse.DataSetPresent}
	cancel := func(id uint16, ds uint16) *dimse.Command {
		return &dimse.Command{CommandField: dimse.CCancelRQ, MessageIDBeingRespondedTo: id, CommandDataSetType: ds}
	}
	// A minimal identifier: QueryRetrieveLevel STUDY (Explicit VR LE).
	ident := []byte{0x08, 0x00, 0x52, 0x00, 'C', 'S', 6, 0, 'S', 'T', 'U', 'D', 'Y', ' '}
	cases := []struct {
		name      string
		services  string
		startFind bool
		cancel    *dimse.Command
		forwarded bool
		aborted   bool
	}{
		{"rule without C-FIND/GET/MOVE", `"C-ECHO", "C-STORE"`, false, cancel(5, dimse.NoDataSet), false, false},
		{"names no forwarded operation", `"C-ECHO", "C-FIND"`, true, cancel(9, dimse.NoDataSet), false, false},
		{"cancels the outstanding find", `"C-ECHO", "C-FIND"`, true, cancel(5, dimse.NoDataSet), true, false},
		{"with a data set", `"C-ECHO", "C-FIND"`, true, cancel(5, dimse.DataSetPresent), false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := startScriptBackend(t, 16384, nil)
			e := inspectEdge(t, be, "services = ["+tc.services+"]")
			c := inspectClient(t, e)
			if tc.startFind {
				if err := dimse.WriteMessage(c, pcFind, find, ident, 16384); err != nil {
					t.Fatal(err)
				}
				if got, _ := be.nextCommand(t); got.CommandField != dimse.CFindRQ {
					t.Fatalf("backend got %v", got.CommandField)
				}
				be.next(t, 5*time.Second) // the identifier
			}
			var ds []byte
			if tc.cancel.HasDataSet() {
				ds = ident
			}
			if err := dimse.WriteMessage(c, pcFind, tc.cancel, ds, 16384); err != nil {
				t.Fatal(err)
			}
			if tc.aborted {
				p, err := readPDU(t, c, 5*time.Second)
				ab, ok := p.(*association.Abort)
				if err != nil || !ok || ab.Source != association.AbortSourceServiceProvider {
					t.Fatalf("client got %T %v, want A-ABORT from the edge", p, err)
				}
				return
			}
			if err := dimse.WriteMessage(c, pcEcho, echoCmd(7), nil, 16384); err != nil {
				t.Fatal(err)
			}
			got, _ := be.nextCommand(t)
			switch {
			case tc.forwarded && got.CommandField != dimse.CCancelRQ:
				t.Errorf("backend got %v, want the C-CANCEL-RQ", got.CommandField)
			case !tc.forwarded && got.CommandField != dimse.CEchoRQ:
				t.Errorf("backend got %v, want the C-CANCEL dropped", got.CommandField)
			}
		})
	}
}

// The backend's A-ABORT reaches the client unchanged (source
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
