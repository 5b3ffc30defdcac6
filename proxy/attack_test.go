package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/internal/testpeer"
	"github.com/dicomedge/dicomedge/proxy/inspect"
)

// Attacks on the relay's DIMSE inspection, as a hostile client with a relay
// rule would try them: raw PDUs from a Go client through the running edge to
// a scripted backend, which shows what reached it.

// expectAbortAfter reads the edge's next PDU to the client, which must be
// an A-ABORT (source 2, service provider) with reason; unlike expectAbort
// it does not wait for EOF, as a client still writing may see a reset.
func expectAbortAfter(t *testing.T, c net.Conn, reason association.AbortReason) {
	t.Helper()
	p, err := readPDU(t, c, 10*time.Second)
	if err != nil {
		t.Fatalf("no A-ABORT from the edge: %v", err)
	}
	ab, ok := p.(*association.Abort)
	if !ok {
		t.Fatalf("the edge sent %T %+v, want A-ABORT", p, p)
	}
	if ab.Source != association.AbortSourceServiceProvider || ab.Reason != reason {
		t.Fatalf("A-ABORT source %v reason %v, want service provider, %v", ab.Source, ab.Reason, reason)
	}
}

// backendGotOnly collects what the backend received after the edge's
// A-ABORT (or for quiet when there is none) and fails on any P-DATA-TF
// beyond the first allowed ones.
func backendGotOnly(t *testing.T, be *scriptBackend, allowed int, quiet time.Duration) []gotPDU {
	t.Helper()
	var got []gotPDU
	for {
		g := be.next(t, quiet)
		if g == nil {
			return got
		}
		got = append(got, *g)
		if g.typ == association.TypePDataTF {
			if allowed == 0 {
				t.Fatalf("the backend received a P-DATA-TF it must not: %+v", g.pdu)
			}
			allowed--
		}
		if g.typ == association.TypeAbort {
			return got
		}
	}
}

// abortedEvent waits for the association's aborted record and checks it
// names the client's protocol violation.
func abortedEvent(t *testing.T, e *testEdge, reason string) audit.Event {
	t.Helper()
	ev := e.waitEvent(t, "association.aborted", func(ev audit.Event) bool { return ev.Event == audit.EventAborted })
	if ev.AbortSource != "service-provider" || ev.AbortReason != reason || ev.Detail == "" {
		t.Errorf("aborted record: source %q reason %q detail %q, want service-provider, %s and what was wrong",
			ev.AbortSource, ev.AbortReason, ev.Detail, reason)
	}
	return ev
}

func pdvItemBytes(ctx uint8, command, last bool, data []byte) []byte {
	mch := byte(0)
	if command {
		mch |= 1
	}
	if last {
		mch |= 2
	}
	return pdvItem(ctx, mch, data)
}

func writeRaw(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

// Each attack sends its PDUs after the association is set up; the edge
// aborts both sides and the backend sees nothing of the offending traffic.
func TestRelayAttacksAborted(t *testing.T) {
	ds := []byte{0x10, 0x00, 0x20, 0x00, 'U', 'I', 4, 0, 'E', 'V', 'I', 'L'}
	rspCmd := func(f dimse.CommandField, class string, withData bool) []byte {
		c := &dimse.Command{CommandField: f, MessageIDBeingRespondedTo: 1, AffectedSOPClassUID: class,
			CommandDataSetType: dimse.NoDataSet, Status: dimse.StatusSuccess, HasStatus: true}
		if withData {
			c.CommandDataSetType, c.Status = dimse.DataSetPresent, dimse.StatusPending
		}
		return c.Encode()
	}
	cases := []struct {
		name      string
		services  string
		pdus      [][]byte
		forwarded int // P-DATA-TF the backend may get first (an allowed command)
		refusal   bool
		reason    association.AbortReason
	}{
		{"a data set with no command before it", `["C-ECHO", "C-STORE"]`,
			[][]byte{pdataPDU(pdvItemBytes(pcSC, false, true, ds))}, 0, false, association.AbortUnexpectedPDUParameter},
		{"the data set of a refused request whose command announced none", `["C-ECHO"]`,
			[][]byte{pdataPDU(pdvItemBytes(pcSC, true, true, (&dimse.Command{CommandField: dimse.CStoreRQ, MessageID: 1,
				AffectedSOPClassUID: association.SecondaryCaptureImageStorage, AffectedSOPInstanceUID: testInstanceUID,
				CommandDataSetType: dimse.NoDataSet}).Encode())), pdataPDU(pdvItemBytes(pcSC, false, true, ds))},
			0, true, association.AbortUnexpectedPDUParameter},
		{"a data set on another context than its command", `["C-ECHO", "C-STORE"]`,
			[][]byte{pdataPDU(pdvItemBytes(pcSC, true, true, storeCmd(1, association.SecondaryCaptureImageStorage).Encode())),
				pdataPDU(pdvItemBytes(pcEcho, false, true, ds))}, 1, false, association.AbortUnexpectedPDUParameter},
		{"a client C-STORE-RSP with no backend request", `["C-ECHO", "C-STORE", "C-GET"]`,
			[][]byte{pdataPDU(pdvItemBytes(pcSC, true, true, rspCmd(dimse.CStoreRSP, association.SecondaryCaptureImageStorage, false)))},
			0, false, association.AbortUnexpectedPDUParameter},
		{"a client C-GET-RSP with no backend request", `["C-ECHO", "C-STORE", "C-GET"]`,
			[][]byte{pdataPDU(pdvItemBytes(pcFind, true, true, rspCmd(dimse.CGetRSP, studyRootFind, false)))},
			0, false, association.AbortUnexpectedPDUParameter},
		{"a client C-FIND-RSP with an identifier and no backend request", `["C-ECHO", "C-FIND"]`,
			[][]byte{pdataPDU(append(pdvItemBytes(pcFind, true, true, rspCmd(dimse.CFindRSP, studyRootFind, true)),
				pdvItemBytes(pcFind, false, true, ds)...))}, 0, false, association.AbortUnexpectedPDUParameter},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := startScriptBackend(t, 16384, nil)
			e := inspectEdge(t, be, `services = `+tc.services)
			c := inspectClient(t, e)
			for _, p := range tc.pdus {
				writeRaw(t, c, p)
			}
			if tc.refusal {
				if rsp := readResponse(t, c); rsp.Status != dimse.StatusRefusedNotAuthorized {
					t.Fatalf("refusal status 0x%04X, want 0x0124", rsp.Status)
				}
			}
			expectAbortAfter(t, c, tc.reason)
			got := backendGotOnly(t, be, tc.forwarded, 5*time.Second)
			if len(got) == 0 || got[len(got)-1].typ != association.TypeAbort {
				t.Errorf("the backend got %d PDUs, the last not an A-ABORT", len(got))
			}
			abortedEvent(t, e, "client:"+tc.reason.String())
		})
	}
}

// An N-ACTION whose Affected SOP Class the rule allows but whose Requested
// SOP Class (what N-ACTION acts on, PS3.7 10.1.4) it does not: refused with
// 0x0124, and nothing reaches the backend.
func TestRelayNActionRequestedSOPClassBound(t *testing.T) {
	be := startScriptBackend(t, 16384, nil)
	e := inspectEdge(t, be, `services = ["C-ECHO", "N-ACTION"]
    sop_classes = ["1.2.840.10008.1.1", "`+association.SecondaryCaptureImageStorage+`", "`+modalityPPSClass+`"]`)
	c := inspectClient(t, e)
	const printer = "1.2.840.10008.5.1.1.16"
	act := &dimse.Command{CommandField: dimse.NActionRQ, MessageID: 3, AffectedSOPClassUID: modalityPPSClass,
		RequestedSOPClassUID: printer, RequestedSOPInstanceUID: "2.25.77", CommandDataSetType: dimse.NoDataSet}
	if err := dimse.WriteMessage(c, pcNGet, act, nil, 16384); err != nil {
		t.Fatal(err)
	}
	if rsp := readResponse(t, c); rsp.Status != dimse.StatusRefusedNotAuthorized || rsp.MessageIDBeingRespondedTo != 3 {
		t.Fatalf("response %+v, want 0x0124 to message 3", rsp)
	}
	if g := be.next(t, noResponseDeadline); g != nil {
		t.Fatalf("the backend received %v", g.typ)
	}
	// The same N-ACTION on the allowed Requested SOP Class passes.
	act.MessageID, act.RequestedSOPClassUID = 4, modalityPPSClass
	if err := dimse.WriteMessage(c, pcNGet, act, nil, 16384); err != nil {
		t.Fatal(err)
	}
	if got, _ := be.nextCommand(t); got.CommandField != dimse.NActionRQ || got.MessageID != 4 {
		t.Fatalf("backend got %+v", got)
	}
	c.Close()
	var refused *audit.Event
	for _, ev := range dimseEvents(t, e) {
		if ev.MessageID == 3 {
			refused = &ev
		}
	}
	if refused == nil || refused.SOPClass != printer || refused.SOPInstance != "2.25.77" || refused.Status != "0x0124" ||
		refused.Allowed == nil || *refused.Allowed {
		t.Errorf("refused N-ACTION record %+v, want the Requested SOP Class and Instance, 0x0124, not allowed", refused)
	}
}

// The A-ASSOCIATE-RQ the backend gets is the edge's own: no unknown item
// or sub-item of the client's, role selection and extended negotiation
// only for the abstract syntaxes the rule kept.
func TestRelayRQCarriesOnlyWhatTheEdgeUnderstands(t *testing.T) {
	be := startScriptBackend(t, 16384, nil)
	e := inspectEdge(t, be, `services = ["C-ECHO", "C-STORE"]
    sop_classes = ["1.2.840.10008.1.1", "`+association.SecondaryCaptureImageStorage+`"]`)
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	rq := echoRQ("MODALITY1", "MAINPACS")
	rq.PresentationContexts[0].Extra = []association.RawItem{{Type: 0x99, Data: []byte("pc-sub-item")}}
	rq.PresentationContexts = append(rq.PresentationContexts,
		association.PresentationContextRQ{ID: 3, AbstractSyntax: association.SecondaryCaptureImageStorage, TransferSyntaxes: []string{association.ExplicitVRLittleEndian}},
		association.PresentationContextRQ{ID: 5, AbstractSyntax: association.CTImageStorage, TransferSyntaxes: []string{association.ExplicitVRLittleEndian}})
	rq.UserInfo.RoleSelections = []association.RoleSelection{
		{SOPClassUID: association.CTImageStorage, SCU: true, SCP: true},
		{SOPClassUID: association.SecondaryCaptureImageStorage, SCU: true, SCP: true}}
	rq.UserInfo.ExtendedNegotiations = []association.ExtendedNegotiation{{SOPClassUID: association.CTImageStorage, Info: []byte{1}}}
	rq.UserInfo.Extra = []association.RawItem{{Type: 0x5F, Data: []byte("ui-sub-item")}}
	rq.Extra = []association.RawItem{{Type: 0x77, Data: []byte("unknown-item")}}
	ac := associate(t, c, rq)
	var brq *association.AssociateRQ
	select {
	case brq = <-be.rq:
	case <-time.After(10 * time.Second):
		t.Fatal("the backend got no RQ")
	}
	if len(brq.Extra) != 0 || len(brq.UserInfo.Extra) != 0 {
		t.Errorf("unknown items forwarded: %+v, user info %+v", brq.Extra, brq.UserInfo.Extra)
	}
	for _, pc := range brq.PresentationContexts {
		if len(pc.Extra) != 0 || pc.AbstractSyntax == association.CTImageStorage {
			t.Errorf("context forwarded: %+v", pc)
		}
	}
	if rs := brq.UserInfo.RoleSelections; len(rs) != 1 || rs[0].SOPClassUID != association.SecondaryCaptureImageStorage {
		t.Errorf("role selections forwarded: %+v, want only Secondary Capture's", rs)
	}
	if len(brq.UserInfo.ExtendedNegotiations) != 0 {
		t.Errorf("extended negotiation for a removed context forwarded: %+v", brq.UserInfo.ExtendedNegotiations)
	}
	if pc := ac.PresentationContexts; len(pc) != 3 || pc[2].Result != association.PCUserRejection {
		t.Errorf("AC contexts %+v, want the CT context rejected by the edge", pc)
	}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// checkHeldHeap fails the test when the Go heap in use, after collection,
// grew by more than heldBound: what the edge still holds after the attack.
// RSS is printed, not judged: under the race detector and on a loaded
// machine it counts freed memory the runtime has not yet returned and the
// detector's shadow memory, and grew 46 MiB once for the same traffic.
func checkHeldHeap(t *testing.T, before, after memSample) {
	t.Helper()
	if after.heap > before.heap && after.heap-before.heap > heldBound {
		t.Errorf("Go heap in use grew %.1f MiB, bound %.0f MiB", mib(after.heap-before.heap), mib(heldBound))
	}
}

// heldBound is well below the 13 MiB the attacks send, so an edge that
// kept what it was sent fails, and above the association's own buffers.
const heldBound = 6 << 20

// P-DATA-TF PDUs full of 2-byte PDV items (command bit set, never last, no
// data) used to grow the edge's memory by ~20 bytes per byte sent. Each
// such item now counts its 6-byte header against the command bound and the
// fragment count is capped: the edge aborts within the first PDU, having
// held at most inspect.MaxCommandBytes, and the backend gets nothing.
func TestRelayTinyPDVFloodBounded(t *testing.T) {
	const offered = 13 << 20 // bytes of 2-byte PDV items the client tries to send
	be := startScriptBackend(t, 1<<20, nil)
	e := inspectEdge(t, be, `services = ["C-ECHO", "C-STORE"]`)
	var items bytes.Buffer
	for items.Len() < 256<<10 {
		items.Write(pdvItemBytes(pcSC, true, false, nil))
	}
	pdu := pdataPDU(items.Bytes())
	c := inspectClient(t, e)
	before := memNow()
	sent := 0
	for sent < offered {
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Write(pdu)
		sent += n
		if err != nil {
			break // the edge aborted and closed
		}
	}
	expectAbortAfter(t, c, association.AbortInvalidPDUParameterValue)
	after := memNow()
	t.Logf("RSS before %.1f MiB, after %.1f MiB; Go heap in use before %.1f MiB, after %.1f MiB; for %d MiB of 2-byte PDV items offered, %d bytes written before the A-ABORT; the command bound is %d bytes, %d fragments",
		mib(before.rss), mib(after.rss), mib(before.heap), mib(after.heap), offered>>20, sent,
		inspect.MaxCommandBytes, inspect.MaxCommandFragments)
	checkHeldHeap(t, before, after)
	if g := backendGotOnly(t, be, 0, 5*time.Second); len(g) == 0 || g[len(g)-1].typ != association.TypeAbort {
		t.Errorf("the backend got %+v, want only the A-ABORT", g)
	}
	ev := abortedEvent(t, e, "client:invalid-pdu-parameter-value")
	if !strings.Contains(ev.Detail, "command set over") {
		t.Errorf("detail %q", ev.Detail)
	}
}

// The same strictness the other way: the backend's data set with no command
// before it, and its C-STORE-RQ on a context where the client took no SCP
// role, never reach the client; the backend is aborted (2, 5), the client
// (2, 0).
func TestRelayBackendViolationsAborted(t *testing.T) {
	cases := []struct {
		name string
		pdu  *association.PDataTF
	}{
		{"a data set with no command", &association.PDataTF{PDVs: []association.PDV{{ContextID: pcSC, Last: true, Data: []byte{1, 2, 3, 4}}}}},
		{"a C-STORE-RQ without the client's SCP role", &association.PDataTF{PDVs: []association.PDV{{ContextID: pcSC, Command: true, Last: true,
			Data: storeCmd(77, association.SecondaryCaptureImageStorage).Encode()}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := startScriptBackend(t, 16384, nil)
			e := inspectEdge(t, be, `services = ["C-ECHO", "C-STORE"]`)
			c := inspectClient(t, e)
			be.write(t, tc.pdu)
			expectAbort(t, c, association.AbortReasonNotSpecified) // the first PDU the client gets, then EOF
			got := backendGotOnly(t, be, 0, 5*time.Second)
			if len(got) == 0 {
				t.Fatal("the backend got no A-ABORT")
			}
			if ab, ok := got[len(got)-1].pdu.(*association.Abort); !ok || ab.Reason != association.AbortUnexpectedPDUParameter {
				t.Errorf("the backend got %+v, want A-ABORT (2, 5)", got[len(got)-1].pdu)
			}
			abortedEvent(t, e, "backend:unexpected-pdu-parameter")
		})
	}
}

// Commands each split into 127 empty fragments and a last one, just within
// the bound, sent without pause to a real storescp: 13 MiB of mostly empty
// PDV items relayed as well-formed C-ECHOs (each held command goes out
// whole, in one PDV). The edge's memory does not grow with what was sent.
func TestRelayFragmentedCommandsWithinBound(t *testing.T) {
	testpeer.Require(t, "storescp")
	const offered = 13 << 20
	scp := testpeer.StartStoreSCP(t, "STORESCP")
	e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", scp.Addr, "STORESCP"), Rules: storeRules(`"C-ECHO"`)})
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	associate(t, c, echoRQ("MODALITY1", "MAINPACS"))
	oneCommand := func(id uint16) []byte {
		var b bytes.Buffer
		for range inspect.MaxCommandFragments - 1 {
			b.Write(pdvItemBytes(1, true, false, nil))
		}
		b.Write(pdvItemBytes(1, true, true, echoCmd(id).Encode()))
		return pdataPDU(b.Bytes())
	}
	n := offered / len(oneCommand(1))
	// At most 64 in flight: beyond inspect.MaxOutstanding the edge answers
	// 0x0213 itself.
	window := make(chan struct{}, 64)
	answered := make(chan error, 1)
	go func() {
		r := association.NewReader(c, 1<<20)
		for i := 0; i < n; i++ {
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			p, err := r.ReadPDU()
			if err != nil {
				answered <- err
				return
			}
			pd, ok := p.(*association.PDataTF)
			if !ok || len(pd.PDVs) != 1 {
				answered <- errors.New("not a one-PDV C-ECHO-RSP")
				return
			}
			rsp, err := dimse.DecodeCommand(pd.PDVs[0].Data)
			if err != nil || rsp.CommandField != dimse.CEchoRSP || rsp.Status != dimse.StatusSuccess {
				answered <- fmt.Errorf("response %d: %+v %v", i, rsp, err)
				return
			}
			<-window
		}
		answered <- nil
	}()
	before := memNow()
	for i := range n {
		select {
		case window <- struct{}{}:
		case err := <-answered:
			t.Fatalf("after %d commands: %v", i, err)
		}
		writeRaw(t, c, oneCommand(uint16(i%60000+1)))
	}
	if err := <-answered; err != nil {
		t.Fatal(err)
	}
	after := memNow()
	t.Logf("RSS before %.1f MiB, after %.1f MiB; Go heap in use before %.1f MiB, after %.1f MiB; for %d C-ECHOs of %d fragments each, %d MiB sent",
		mib(before.rss), mib(after.rss), mib(before.heap), mib(after.heap), n, inspect.MaxCommandFragments, offered>>20)
	checkHeldHeap(t, before, after)
}
