package proxy

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/proxy/inspect"
)

// A second round of attacks on the running edge with a relay rule: the
// release exchange, the negotiated maximum PDU length, responses and
// requests whose data set the service does not have, and a hostile
// backend's A-ASSOCIATE-AC.

// inspectClientRQ associates with the edge proposing inspectClient's
// contexts, rq changed by edit first.
func inspectClientRQ(t *testing.T, e *testEdge, edit func(*association.AssociateRQ)) (*tls.Conn, *association.AssociateAC) {
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
	if edit != nil {
		edit(rq)
	}
	return c, associate(t, c, rq)
}

// endedEvent waits for the association's end record.
func endedEvent(t *testing.T, e *testEdge) audit.Event {
	t.Helper()
	return e.waitEvent(t, "association end", func(ev audit.Event) bool {
		return ev.Event == audit.EventReleased || ev.Event == audit.EventAborted
	})
}

// An A-RELEASE-RP that answers no A-RELEASE-RQ is an unexpected PDU (PS3.8
// Sta6, AA-8): the edge aborts both sides; it does not pass it on and
// record a release that never happened.
func TestRelayUnsolicitedReleaseRPAborted(t *testing.T) {
	be := startScriptBackend(t, 16384, nil)
	e := inspectEdge(t, be, `services = ["C-ECHO"]`)
	c := inspectClient(t, e)
	writeRaw(t, c, mustAppend(t, &association.ReleaseRP{}))
	expectAbortAfter(t, c, association.AbortUnexpectedPDU)
	for _, g := range backendGotOnly(t, be, 0, 5*time.Second) {
		if g.typ == association.TypeReleaseRP {
			t.Fatal("the backend received the unsolicited A-RELEASE-RP")
		}
	}
	abortedEvent(t, e, "client:unexpected-pdu")
}

// After its A-RELEASE-RQ a side sends no more P-DATA-TF (PS3.8 Sta7; the
// receiver in Sta8 would take it as AA-8): the edge aborts instead of
// passing it on.
func TestRelayPDataAfterReleaseRQAborted(t *testing.T) {
	be := startScriptBackend(t, 16384, nil)
	e := inspectEdge(t, be, `services = ["C-ECHO"]`)
	c := inspectClient(t, e)
	clientReleases(t, c, be)
	writeRaw(t, c, pdataPDU(pdvItemBytes(pcEcho, true, true, echoCmd(1).Encode())))
	expectAbortAfter(t, c, association.AbortUnexpectedPDU)
	backendGotOnly(t, be, 0, 5*time.Second)
	abortedEvent(t, e, "client:unexpected-pdu")
}

// A release collision (PS3.8 Sta9-Sta12): both sides send A-RELEASE-RQ, the
// requestor answers first, then the acceptor; each side gets the other's
// A-RELEASE-RP before the edge closes it, and the association is released.
func TestRelayReleaseCollision(t *testing.T) {
	be := startScriptBackend(t, 16384, nil)
	e := inspectEdge(t, be, `services = ["C-ECHO"]`)
	c := inspectClient(t, e)
	clientReleases(t, c, be)
	be.write(t, &association.ReleaseRQ{}) // the collision
	if p, err := readPDU(t, c, 5*time.Second); err != nil {
		t.Fatalf("client: %v, want the backend's A-RELEASE-RQ", err)
	} else if _, ok := p.(*association.ReleaseRQ); !ok {
		t.Fatalf("client got %T, want A-RELEASE-RQ", p)
	}
	writeRaw(t, c, mustAppend(t, &association.ReleaseRP{})) // the requestor answers first (Sta9)
	if g := be.next(t, 5*time.Second); g == nil || g.typ != association.TypeReleaseRP {
		t.Fatalf("backend got %+v, want the client's A-RELEASE-RP", g)
	}
	be.write(t, &association.ReleaseRP{}) // the acceptor answers (Sta12)
	p, err := readPDU(t, c, 5*time.Second)
	if err != nil {
		t.Fatalf("client: %v, want the backend's A-RELEASE-RP", err)
	}
	if _, ok := p.(*association.ReleaseRP); !ok {
		t.Fatalf("client got %T, want A-RELEASE-RP", p)
	}
	if ev := endedEvent(t, e); ev.Event != audit.EventReleased {
		t.Errorf("end record %+v, want released", ev)
	}
}

// A PDU longer than the maximum length the edge announced to its sender
// is refused (A-ABORT, invalid PDU parameter value) and not passed on to a
// peer that announced it cannot take it.
func TestRelayPDUOverNegotiatedMaxAborted(t *testing.T) {
	be := startScriptBackend(t, 16384, nil)
	e := inspectEdge(t, be, `services = ["C-ECHO", "C-STORE"]`)
	c, ac := inspectClientRQ(t, e, nil)
	if ac.UserInfo.MaxLength != relayOffer {
		t.Fatalf("AC max length %d, want the edge's offer %d", ac.UserInfo.MaxLength, relayOffer)
	}
	cmd := storeCmd(1, association.SecondaryCaptureImageStorage).Encode()
	big := bytes.Repeat([]byte{0}, relayOffer+1000)
	// The edge judges the PDU by its header and aborts without reading the
	// body, so the rest of this write may meet a closed socket (EPIPE); the
	// A-ABORT sent before the close is still there to read.
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, _ = c.Write(pdataPDU(append(pdvItemBytes(pcSC, true, true, cmd), pdvItemBytes(pcSC, false, true, big)...)))
	expectAbortAfter(t, c, association.AbortInvalidPDUParameterValue)
	backendGotOnly(t, be, 0, 5*time.Second)
	abortedEvent(t, e, "client:invalid-pdu-parameter-value")
}

// The client is offered at least relayOffer, but never more than
// offerGrowthMax times what the backend takes: PDUs cut for a backend with
// a tiny maximum grow 13-fold, and the edge builds and holds them.
func TestRequestorOffer(t *testing.T) {
	for _, c := range []struct{ backend, edge, want uint32 }{
		{16384, 4 << 20, relayOffer},
		{256 << 10, 4 << 20, 256 << 10},
		{0, 4 << 20, 4 << 20},
		{0, 64 << 10, 64 << 10},
		{16384, 64 << 10, 64 << 10},
		{7, 4 << 20, 112},
		{1024, 4 << 20, 16 << 10},
		{8 << 20, 1 << 31, 8 << 20},
		{1 << 31, 0xFFFFFFFF, 1 << 31},
	} {
		if got := requestorOffer(c.backend, c.edge); got != c.want {
			t.Errorf("requestorOffer(%d, %d) = %d, want %d", c.backend, c.edge, got, c.want)
		}
	}
	be := startScriptBackend(t, 7, nil)
	e := inspectEdge(t, be, `services = ["C-ECHO"]`)
	if _, ac := inspectClientRQ(t, e, nil); ac.UserInfo.MaxLength != 7*offerGrowthMax {
		t.Fatalf("with a backend taking 7 bytes the client was offered %d, want %d", ac.UserInfo.MaxLength, 7*offerGrowthMax)
	}
}

// A client offered more than the backend takes sends longer PDUs: each
// reaches the backend cut to its maximum, the data whole and in order, the
// last-fragment bit on the final piece only (PS3.8 E.2).
func TestRelayCutsLongPDUsToTheBackendsMaximum(t *testing.T) {
	be := startScriptBackend(t, 16384, nil)
	e := inspectEdge(t, be, `services = ["C-ECHO", "C-STORE"]`)
	c, ac := inspectClientRQ(t, e, nil)
	if ac.UserInfo.MaxLength <= 16384 {
		t.Fatalf("AC max length %d: the client is offered no more than the backend takes", ac.UserInfo.MaxLength)
	}
	cmd := storeCmd(1, association.SecondaryCaptureImageStorage).Encode()
	// One Pixel Data element (explicit VR little endian, OB) of patterned
	// bytes: a data set the inspection walks.
	data := []byte{0xE0, 0x7F, 0x10, 0x00, 'O', 'B', 0, 0}
	data = binary.LittleEndian.AppendUint32(data, 100000-12)
	for i := len(data); i < 100000; i++ {
		data = append(data, byte(i*7))
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	// The command and the first part of the data set in one PDU, the rest
	// in another, both longer than the backend's maximum.
	writeRaw(t, c, pdataPDU(append(pdvItemBytes(pcSC, true, true, cmd), pdvItemBytes(pcSC, false, false, data[:60000])...)))
	writeRaw(t, c, pdataPDU(pdvItemBytes(pcSC, false, true, data[60000:])))
	var got []byte
	lasts := 0
	for len(got) < len(data) {
		g := be.next(t, 5*time.Second)
		if g == nil || g.typ != association.TypePDataTF {
			t.Fatalf("backend got %+v, want P-DATA-TF", g)
		}
		if g.length > 16384+association.HeaderLen {
			t.Fatalf("backend got a PDU of %d bytes, over its maximum length 16384", g.length)
		}
		for _, p := range g.pdu.(*association.PDataTF).PDVs {
			if p.Command {
				if p.Last && !bytes.Equal(p.Data, cmd) {
					t.Fatal("the command set changed on its way")
				}
				continue
			}
			if lasts > 0 {
				t.Fatal("a data-set fragment after the last one")
			}
			if p.Last {
				lasts++
			}
			got = append(got, p.Data...)
		}
	}
	if !bytes.Equal(got, data) || lasts != 1 {
		t.Fatalf("backend got %d data-set bytes (equal: %v), %d last fragments", len(got), bytes.Equal(got, data), lasts)
	}
}

// The backend too is held to the maximum length the edge announced in its
// A-ASSOCIATE-RQ (the client's).
func TestRelayBackendPDUOverNegotiatedMaxAborted(t *testing.T) {
	be := startScriptBackend(t, 1<<20, nil)
	e := inspectEdge(t, be, `services = ["C-ECHO", "C-FIND"]`)
	c, _ := inspectClientRQ(t, e, nil) // max length 16384
	find := &dimse.Command{CommandField: dimse.CFindRQ, MessageID: 1, AffectedSOPClassUID: studyRootFind,
		CommandDataSetType: dimse.DataSetPresent}
	if err := dimse.WriteMessage(c, pcFind, find, []byte{0x08, 0, 0x52, 0, 'C', 'S', 6, 0, 'S', 'T', 'U', 'D', 'Y', ' '}, 16384); err != nil {
		t.Fatal(err)
	}
	if got, _ := be.nextCommand(t); got.CommandField != dimse.CFindRQ {
		t.Fatalf("backend got %+v", got)
	}
	be.next(t, 5*time.Second) // the identifier
	rsp := dimse.NewResponse(find, dimse.StatusPending)
	rsp.CommandDataSetType = dimse.DataSetPresent
	be.send(t, pcFind, rsp) // the command; its identifier in one PDU over the client's maximum
	raw := pdataPDU(pdvItemBytes(pcFind, false, true, bytes.Repeat([]byte{0}, 20000)))
	c2 := <-be.conn
	be.conn <- c2
	if _, err := c2.Write(raw); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		p, err := readPDU(t, c, 10*time.Second)
		if err != nil {
			t.Fatalf("client: %v, want an A-ABORT", err)
		}
		if pd, ok := p.(*association.PDataTF); ok {
			for _, v := range pd.PDVs {
				if !v.Command {
					t.Fatalf("the client received %d bytes of data over its maximum length", len(v.Data))
				}
			}
			continue
		}
		if _, ok := p.(*association.Abort); !ok {
			t.Fatalf("client got %T, want A-ABORT", p)
		}
		break
	}
	abortedEvent(t, e, "backend:invalid-pdu-parameter-value")
}

// A requestor that accepts only small PDUs gets the edge's own refusal in
// PDUs that fit: PS3.8 D.1.1 binds every P-DATA-TF sent to it.
func TestRelayRefusalFitsSmallMaxPDU(t *testing.T) {
	const max = 24 // 18 data bytes a PDV
	be := startScriptBackend(t, 16384, nil)
	e := inspectEdge(t, be, `services = ["C-ECHO"]`)
	c, _ := inspectClientRQ(t, e, func(rq *association.AssociateRQ) { rq.UserInfo.MaxLength = max })
	// A C-STORE the rule does not allow, sent in PDUs the backend's maximum allows.
	if err := dimse.WriteMessage(c, pcSC, storeCmd(1, association.SecondaryCaptureImageStorage), []byte{0, 0, 0, 0}, 16384); err != nil {
		t.Fatal(err)
	}
	if rsp := readResponseWithin(t, c, max); rsp.Status != dimse.StatusRefusedNotAuthorized {
		t.Fatalf("status 0x%04X", rsp.Status)
	}
}

const (
	pcGet        = 11 // Study Root GET
	studyRootGet = "1.2.840.10008.5.1.4.1.2.2.3"
)

// clientWithSCPRole associates taking the SCP role for Secondary Capture
// (as a C-GET SCU does), the backend accepting it.
func clientWithSCPRole(t *testing.T, services string) (*testEdge, *scriptBackend, *tls.Conn) {
	t.Helper()
	be := startScriptBackendAC(t, 16384, nil, func(rq *association.AssociateRQ, ac *association.AssociateAC) {
		ac.UserInfo.RoleSelections = rq.UserInfo.RoleSelections
	})
	e := inspectEdge(t, be, `services = `+services)
	c, ac := inspectClientRQ(t, e, func(rq *association.AssociateRQ) {
		rq.PresentationContexts = append(rq.PresentationContexts, association.PresentationContextRQ{ID: pcGet,
			AbstractSyntax: studyRootGet, TransferSyntaxes: []string{association.ExplicitVRLittleEndian}})
		rq.UserInfo.RoleSelections = []association.RoleSelection{{SOPClassUID: association.SecondaryCaptureImageStorage, SCU: true, SCP: true}}
	})
	if rs := ac.UserInfo.RoleSelections; len(rs) != 1 || !rs[0].SCP {
		t.Fatalf("AC role selections %+v, want the SCP role for Secondary Capture", rs)
	}
	return e, be, c
}

// getWithSubStore has the client send a C-GET and the backend answer with
// a C-STORE-RQ sub-operation (command and data set), which the client
// reads; it returns that C-STORE-RQ.
func getWithSubStore(t *testing.T, be *scriptBackend, c *tls.Conn) *dimse.Command {
	t.Helper()
	get := &dimse.Command{CommandField: dimse.CGetRQ, MessageID: 1, AffectedSOPClassUID: studyRootGet,
		CommandDataSetType: dimse.DataSetPresent}
	ident := []byte{0x08, 0, 0x52, 0, 'C', 'S', 6, 0, 'S', 'T', 'U', 'D', 'Y', ' '}
	if err := dimse.WriteMessage(c, pcGet, get, ident, 16384); err != nil {
		t.Fatal(err)
	}
	if got, _ := be.nextCommand(t); got.CommandField != dimse.CGetRQ {
		t.Fatalf("backend got %+v", got)
	}
	be.next(t, 5*time.Second) // the identifier
	st := subStore(7)
	st.MoveOriginatorMessageID = 1
	be.send(t, pcSC, st)
	bc := <-be.conn
	be.conn <- bc
	if _, err := bc.Write(pdataPDU(pdvItemBytes(pcSC, false, true, storeDataSet(t)))); err != nil {
		t.Fatal(err)
	}
	rq := readResponse(t, c)
	if rq.CommandField != dimse.CStoreRQ {
		t.Fatalf("client got %v, want the C-STORE-RQ", rq.CommandField)
	}
	if p, err := readPDU(t, c, 5*time.Second); err != nil {
		t.Fatal(err)
	} else if _, ok := p.(*association.PDataTF); !ok {
		t.Fatalf("client got %T, want the data set", p)
	}
	return rq
}

// subStore is the backend's C-STORE-RQ to the client.
func subStore(id uint16) *dimse.Command {
	return &dimse.Command{CommandField: dimse.CStoreRQ, MessageID: id, AffectedSOPClassUID: association.SecondaryCaptureImageStorage,
		AffectedSOPInstanceUID: testInstanceUID, CommandDataSetType: dimse.DataSetPresent}
}

// A C-STORE-RSP carries no data set (PS3.7 9.3.1.2): a client's
// C-STORE-RSP announcing one is a protocol violation, and nothing of it
// reaches the backend.
func TestRelayResponseWithDataSetItsServiceLacks(t *testing.T) {
	e, be, c := clientWithSCPRole(t, `["C-ECHO", "C-GET"]`)
	rq := getWithSubStore(t, be, c)
	rsp := dimse.NewResponse(rq, dimse.StatusSuccess)
	rsp.CommandDataSetType = dimse.DataSetPresent
	writeRaw(t, c, pdataPDU(append(pdvItemBytes(pcSC, true, true, rsp.Encode()),
		pdvItemBytes(pcSC, false, true, []byte{0x10, 0, 0x20, 0, 'L', 'O', 4, 0, 'E', 'V', 'I', 'L'})...)))
	expectAbortAfter(t, c, association.AbortUnexpectedPDUParameter)
	backendGotOnly(t, be, 0, 5*time.Second)
	abortedEvent(t, e, "client:unexpected-pdu-parameter")
}

// Only C-FIND, C-GET and C-MOVE have pending responses (PS3.4 C.4): a
// pending C-STORE-RSP would keep the request open for any number of
// answers.
func TestRelayPendingResponseOfAServiceWithoutOne(t *testing.T) {
	e, be, c := clientWithSCPRole(t, `["C-ECHO", "C-GET"]`)
	rq := getWithSubStore(t, be, c)
	writeRaw(t, c, pdataPDU(pdvItemBytes(pcSC, true, true, dimse.NewResponse(rq, dimse.StatusPending).Encode())))
	expectAbortAfter(t, c, association.AbortUnexpectedPDUParameter)
	backendGotOnly(t, be, 0, 5*time.Second)
	abortedEvent(t, e, "client:unexpected-pdu-parameter")
}

// A C-ECHO-RQ carries no data set (PS3.7 9.3.5.1): one announcing a data
// set would carry bytes to the backend that no service defines.
func TestRelayRequestWithDataSetItsServiceLacks(t *testing.T) {
	be := startScriptBackend(t, 16384, nil)
	e := inspectEdge(t, be, `services = ["C-ECHO"]`)
	c := inspectClient(t, e)
	echo := echoCmd(1)
	echo.CommandDataSetType = dimse.DataSetPresent
	writeRaw(t, c, pdataPDU(append(pdvItemBytes(pcEcho, true, true, echo.Encode()),
		pdvItemBytes(pcEcho, false, true, []byte{0x10, 0, 0x20, 0, 'L', 'O', 4, 0, 'E', 'V', 'I', 'L'})...)))
	expectAbortAfter(t, c, association.AbortUnexpectedPDUParameter)
	backendGotOnly(t, be, 0, 5*time.Second)
	abortedEvent(t, e, "client:unexpected-pdu-parameter")
}

// A hostile backend's A-ASSOCIATE-AC: a transfer syntax the client never
// proposed, role selection and extended negotiation for a SOP class the
// rule removed, a user identity response nobody asked for. The client's AC
// carries none of it.
func TestRelayHostileBackendAC(t *testing.T) {
	be := startScriptBackendAC(t, 16384, nil, func(rq *association.AssociateRQ, ac *association.AssociateAC) {
		for i := range ac.PresentationContexts {
			switch ac.PresentationContexts[i].ID {
			case pcSC:
				ac.PresentationContexts[i].TransferSyntax = "1.2.840.10008.1.2.4.50" // JPEG, not proposed
			case pcEcho:
				ac.PresentationContexts[i].Result = 9 // no such result (PS3.8 9.3.3.2)
				ac.PresentationContexts[i].TransferSyntax = "junk"
			}
		}
		ac.UserInfo.RoleSelections = []association.RoleSelection{{SOPClassUID: association.CTImageStorage, SCU: true, SCP: true}}
		ac.UserInfo.ExtendedNegotiations = []association.ExtendedNegotiation{{SOPClassUID: association.CTImageStorage, Info: []byte{1}}}
		ac.UserInfo.UserIdentityAC = &association.UserIdentityAC{ServerResponse: []byte("unasked")}
	})
	e := inspectEdge(t, be, `services = ["C-ECHO", "C-STORE"]
    sop_classes = ["1.2.840.10008.1.1", "`+association.SecondaryCaptureImageStorage+`"]`)
	c, ac := inspectClientRQ(t, e, func(rq *association.AssociateRQ) {
		rq.PresentationContexts = append(rq.PresentationContexts, association.PresentationContextRQ{ID: 9,
			AbstractSyntax: association.CTImageStorage, TransferSyntaxes: []string{association.ExplicitVRLittleEndian}})
		rq.UserInfo.RoleSelections = []association.RoleSelection{{SOPClassUID: association.CTImageStorage, SCU: true, SCP: true}}
		rq.UserInfo.ExtendedNegotiations = []association.ExtendedNegotiation{{SOPClassUID: association.CTImageStorage, Info: []byte{1}}}
	})
	defer c.Close()
	if pc, ok := ac.AcceptedContext(pcSC); ok {
		t.Errorf("context %d accepted with transfer syntax %q, which the client did not propose", pcSC, pc.TransferSyntax)
	}
	for _, pc := range ac.PresentationContexts {
		if pc.ID == pcEcho && (pc.Result != association.PCProviderRejection || pc.TransferSyntax != association.ImplicitVRLittleEndian) {
			t.Errorf("context %d answered %+v, want a provider rejection with the client's transfer syntax", pcEcho, pc)
		}
	}
	if len(ac.UserInfo.RoleSelections) != 0 || len(ac.UserInfo.ExtendedNegotiations) != 0 {
		t.Errorf("AC carries role selection %+v / extended negotiation %+v for a SOP class the rule removed",
			ac.UserInfo.RoleSelections, ac.UserInfo.ExtendedNegotiations)
	}
	if ac.UserInfo.UserIdentityAC != nil {
		t.Errorf("AC carries a user identity response the client did not ask for")
	}
	// A C-STORE on the context the AC did not validly accept is not passed on.
	if err := dimse.WriteMessage(c, pcSC, storeCmd(1, association.SecondaryCaptureImageStorage), []byte{0, 0, 0, 0}, 16384); err != nil {
		t.Fatal(err)
	}
	expectAbortAfter(t, c, association.AbortInvalidPDUParameterValue)
	backendGotOnly(t, be, 0, 5*time.Second)
}

// The backend may send a C-STORE-RQ only as a sub-operation of a C-GET the
// client has outstanding (PS3.4 C.4.3): outside one, the SCP role the
// client took for C-GET does not let the backend push instances at it.
func TestRelayBackendStoreOutsideGetAborted(t *testing.T) {
	e, be, c := clientWithSCPRole(t, `["C-ECHO", "C-GET"]`)
	be.send(t, pcSC, subStore(7))
	for range 10 {
		p, err := readPDU(t, c, 10*time.Second)
		if err != nil {
			t.Fatalf("client: %v, want an A-ABORT", err)
		}
		if _, ok := p.(*association.PDataTF); ok {
			t.Fatal("the client received the backend's C-STORE-RQ outside any C-GET")
		}
		if _, ok := p.(*association.Abort); ok {
			break
		}
	}
	abortedEvent(t, e, "backend:unexpected-pdu-parameter")
}

// An RQ the edge cannot take at all gets the relay the same answer as the
// answer path (PS3.8 9.3.2, 9.3.4): it is not rebuilt into a DICOM RQ for
// the backend. A maximum length too small for one PDV with data (PS3.8
// 9.3.5: 6 bytes of PDV header) cannot be honoured either.
func TestRelayRQTheEdgeCannotTake(t *testing.T) {
	cases := []struct {
		name string
		edit func(*association.AssociateRQ)
		want association.AssociateRJ
	}{
		{"protocol version without bit 0", func(rq *association.AssociateRQ) { rq.ProtocolVersion = 2 },
			association.AssociateRJ{Result: association.RejectPermanent, Source: association.RejectSourceServiceProviderACSE,
				Reason: association.RejectACSEProtocolVersionNotSupport}},
		{"another application context", func(rq *association.AssociateRQ) { rq.ApplicationContext = "1.2.3.4.5.6" },
			association.AssociateRJ{Result: association.RejectPermanent, Source: association.RejectSourceServiceUser,
				Reason: association.RejectUserApplicationContextNotSupported}},
		{"maximum length 6", func(rq *association.AssociateRQ) { rq.UserInfo.MaxLength = 6 },
			association.AssociateRJ{Result: association.RejectPermanent, Source: association.RejectSourceServiceProviderACSE,
				Reason: association.RejectACSENoReason}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := answerWithoutBackend(t, tc.edit)
			if rj, ok := p.(*association.AssociateRJ); !ok || *rj != tc.want {
				t.Fatalf("edge answered %T %+v, want A-ASSOCIATE-RJ %+v", p, p, tc.want)
			}
		})
	}
}

// answerWithoutBackend sends an A-ASSOCIATE-RQ, changed by edit, to an edge
// whose rule relays to a scripted backend, and returns the edge's answer;
// the test fails if the backend received an A-ASSOCIATE-RQ.
func answerWithoutBackend(t *testing.T, edit func(*association.AssociateRQ)) association.PDU {
	t.Helper()
	be := startScriptBackend(t, 16384, nil)
	e := inspectEdge(t, be, `services = ["C-ECHO"]`)
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	rq := echoRQ("MODALITY1", "MAINPACS")
	edit(rq)
	if err := association.WritePDU(c, rq); err != nil {
		t.Fatal(err)
	}
	p, err := readPDU(t, c, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case brq := <-be.rq:
		t.Fatalf("the backend received an A-ASSOCIATE-RQ (calling %q, called %q, %d contexts)", brq.CallingAE, brq.CalledAE,
			len(brq.PresentationContexts))
	case <-time.After(noResponseDeadline):
	}
	return p
}

// Values the edge rebuilds into the backend's A-ASSOCIATE-RQ are bounded
// by the standard, not by their 16-bit item lengths: an implementation
// version name of 2,000 bytes or a 200-byte abstract syntax would reach a
// backend that has room for 16 and 64. The RQ is malformed: A-ABORT (2, 6),
// and the backend is not called.
func TestRelayOversizeRQValuesNotForwarded(t *testing.T) {
	long := "1.2.840.10008." + strings.Repeat("9", 186)
	cases := []struct {
		name string
		edit func(*association.AssociateRQ)
	}{
		{"implementation version name", func(rq *association.AssociateRQ) {
			rq.UserInfo.ImplementationVersionName = strings.Repeat("V", 2000)
		}},
		{"abstract syntax", func(rq *association.AssociateRQ) { rq.PresentationContexts[0].AbstractSyntax = long }},
		{"implementation class UID", func(rq *association.AssociateRQ) { rq.UserInfo.ImplementationClassUID = long }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := answerWithoutBackend(t, tc.edit)
			if ab, ok := p.(*association.Abort); !ok || ab.Source != association.AbortSourceServiceProvider ||
				ab.Reason != association.AbortInvalidPDUParameterValue {
				t.Fatalf("edge answered %T %+v, want A-ABORT (2, 6)", p, p)
			}
		})
	}
}

// Once the inspection has found one side at fault, the other pump may
// feed it a PDU before the first has aborted: that PDU's verdict carries
// the same violation, and the abort must still name the side at fault (its
// A-ABORT with the reason, the other's with none), whichever pump records
// it.
func TestRelayViolationNamesTheSideAtFault(t *testing.T) {
	cw, bw := &recordConn{}, &recordConn{}
	r := &relay{c: &conn{raw: &discardConn{}, log: newConnLog(hclog.NewNullLogger(), false)}, b: &discardConn{},
		insp: inspect.New(inspect.Config{Contexts: []inspect.Context{{ID: 1, AbstractSyntax: association.VerificationSOPClass,
			TransferSyntax: association.ImplicitVRLittleEndian}}})}
	r.client = peer{name: "client", side: inspect.Requestor, w: &pduWriter{c: cw}}
	r.backend = peer{name: "backend", side: inspect.Acceptor, w: &pduWriter{c: bw}}
	// The client's data set with no command: found by the client's pump,
	// which has not yet acted on it.
	if v := r.insp.Feed(inspect.Requestor, pdataPDU(pdvItemBytes(1, false, true, []byte{1, 2}))); v.Violation == nil {
		t.Fatal("no violation")
	}
	// The backend's pump feeds its next PDU and gets there first.
	r.pdata(&r.backend, &r.client, pdataPDU(pdvItemBytes(1, true, true, echoCmd(1).Encode())))
	if o := r.end.result(); o.abortReason != protocolReason("client", association.AbortUnexpectedPDUParameter) {
		t.Errorf("outcome %+v, want the client's protocol violation", o)
	}
	abortOf := func(w *recordConn) association.AbortReason {
		if len(w.all) != 1 {
			t.Fatalf("%d writes, want one A-ABORT", len(w.all))
		}
		p, err := association.Decode(association.TypeAbort, w.all[0][association.HeaderLen:])
		if err != nil {
			t.Fatal(err)
		}
		return p.(*association.Abort).Reason
	}
	if got := abortOf(cw); got != association.AbortUnexpectedPDUParameter {
		t.Errorf("client's A-ABORT reason %v, want unexpected-pdu-parameter", got)
	}
	if got := abortOf(bw); got != association.AbortReasonNotSpecified {
		t.Errorf("backend's A-ABORT reason %v, want not specified", got)
	}
}

// A PDV's message control header uses bits 0 and 1; the others are 0
// (PS3.8 E.2). A PDV with them set is malformed: forwarded as it came, it
// would carry bits to the backend that mean nothing to the edge.
func TestRelayPDVReservedBitsAborted(t *testing.T) {
	be := startScriptBackend(t, 16384, nil)
	e := inspectEdge(t, be, `services = ["C-ECHO"]`)
	c := inspectClient(t, e)
	writeRaw(t, c, pdataPDU(pdvItem(pcEcho, 0xfc|3, echoCmd(1).Encode())))
	expectAbortAfter(t, c, association.AbortInvalidPDUParameterValue)
	backendGotOnly(t, be, 0, 5*time.Second)
	abortedEvent(t, e, "client:invalid-pdu-parameter-value")
}

// A user identity sub-item of a type PS3.7 D.3.3.7 does not define is not
// passed to the backend (the edge forwards what it understands); the
// association goes on without it.
func TestRelayUnknownUserIdentityTypeNotForwarded(t *testing.T) {
	be := startScriptBackend(t, 16384, nil)
	e := inspectEdge(t, be, `services = ["C-ECHO"]`)
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	rq := echoRQ("MODALITY1", "MAINPACS")
	rq.UserInfo.UserIdentityRQ = &association.UserIdentityRQ{Type: 0x7f, Primary: bytes.Repeat([]byte{0xee}, 4000),
		Secondary: []byte("opaque")}
	associate(t, c, rq)
	brq := <-be.rq
	if u := brq.UserInfo.UserIdentityRQ; u != nil {
		t.Errorf("the backend received a user identity of type %d (%d bytes)", u.Type, len(u.Primary))
	}
}

// A user name is the client's to choose, up to 65,535 bytes (PS3.7
// D.3.3.7): the association's record keeps at most 512 bytes of it, so
// one client's associations cannot fill the trail, while the backend gets
// it whole.
func TestRelayLongUserNameClippedInTheAudit(t *testing.T) {
	be := startScriptBackend(t, 16384, nil)
	e := inspectEdge(t, be, `services = ["C-ECHO"]`)
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	rq := echoRQ("MODALITY1", "MAINPACS")
	name := strings.Repeat("é", 30000) // 60,000 bytes, two per character
	rq.UserInfo.UserIdentityRQ = &association.UserIdentityRQ{Type: association.UserIdentityUsername, Primary: []byte(name)}
	associate(t, c, rq)
	if u := (<-be.rq).UserInfo.UserIdentityRQ; u == nil || string(u.Primary) != name {
		t.Error("the backend did not get the user name whole")
	}
	ev := e.waitEvent(t, "association.accepted", func(ev audit.Event) bool { return ev.Event == audit.EventAccepted })
	u := ev.UserIdentity
	if u == nil || len(u.User) > 512+3 || !strings.HasSuffix(u.User, "...") || !strings.HasPrefix(u.User, "éé") ||
		!utf8.ValidString(u.User) {
		t.Fatalf("user identity in the record: %d bytes", len(u.User))
	}
}

// failConn fails every write, as a connection whose peer has stopped
// reading does once the write deadline passes.
type failConn struct{ discardConn }

func (f *failConn) Write([]byte) (int, error) { return 0, errors.New("write timeout") }

// A refusal the edge cannot write to the client (it has stopped reading:
// the write deadline passed) ends the association: the client's stream
// may hold part of a PDU now, and nothing more can be sent to it. The
// relay used to log the failure and go on reading, judging and refusing.
func TestRelayRefusalWriteFailureAborts(t *testing.T) {
	r := &relay{c: &conn{s: &Server{Metrics: NewMetrics()}, raw: &discardConn{}, log: newConnLog(hclog.NewNullLogger(), false)}, b: &discardConn{},
		insp: inspect.New(inspect.Config{Contexts: []inspect.Context{{ID: 1, AbstractSyntax: association.VerificationSOPClass,
			TransferSyntax: association.ImplicitVRLittleEndian}}, Policy: denyAll{}})}
	r.client = peer{name: "client", side: inspect.Requestor, w: &pduWriter{c: &failConn{}}}
	r.backend = peer{name: "backend", side: inspect.Acceptor, w: &pduWriter{c: &recordConn{}}}
	if r.pdata(&r.client, &r.backend, pdataPDU(pdvItemBytes(1, true, true, echoCmd(1).Encode()))) {
		t.Fatal("the pump goes on after its refusal could not be written")
	}
	if !r.end.ended() {
		t.Fatal("no outcome recorded")
	}
	if o := r.end.result(); o.released || o.abortSource == "" {
		t.Errorf("outcome %+v, want aborted", o)
	}
}

// denyAll is a policy that allows nothing.
type denyAll struct{}

func (denyAll) AllowsService(string) bool         { return false }
func (denyAll) AllowsSOPClass(string) bool        { return false }
func (denyAll) AllowsMoveDestination(string) bool { return false }

// An A-RELEASE-RQ sent while the client's C-STORE data set is still
// passing would hand the backend a truncated message: the edge aborts
// both sides instead of carrying the release through.
func TestRelayReleaseMidDataSetAborted(t *testing.T) {
	be := startScriptBackend(t, 16384, nil)
	e := inspectEdge(t, be, `services = ["C-ECHO", "C-STORE"]`)
	c := inspectClient(t, e)
	cmd := storeCmd(1, association.SecondaryCaptureImageStorage).Encode()
	writeRaw(t, c, pdataPDU(append(pdvItemBytes(pcSC, true, true, cmd), pdvItemBytes(pcSC, false, false, []byte{0, 0, 0, 0})...)))
	if g := be.next(t, 5*time.Second); g == nil || g.typ != association.TypePDataTF {
		t.Fatalf("backend got %+v, want the C-STORE-RQ and its first fragment", g)
	}
	writeRaw(t, c, mustAppend(t, &association.ReleaseRQ{}))
	expectAbortAfter(t, c, association.AbortUnexpectedPDU)
	for _, g := range backendGotOnly(t, be, 0, 5*time.Second) {
		if g.typ == association.TypeReleaseRQ {
			t.Fatal("the backend received the A-RELEASE-RQ of an incomplete message")
		}
	}
	abortedEvent(t, e, "client:unexpected-pdu")
}

// clientReleases sends the client's A-RELEASE-RQ and waits for the backend
// to receive it.
func clientReleases(t *testing.T, c *tls.Conn, be *scriptBackend) {
	t.Helper()
	writeRaw(t, c, mustAppend(t, &association.ReleaseRQ{}))
	if g := be.next(t, 5*time.Second); g == nil || g.typ != association.TypeReleaseRQ {
		t.Fatalf("backend got %+v, want the A-RELEASE-RQ", g)
	}
}

// An A-RELEASE-RQ is 4 bytes after its header (PS3.8 9.3.6). A longer
// one, which the client's offer of more than the backend takes now lets
// through the reader, is refused, not relayed as it came to a backend
// that announced a smaller maximum.
func TestRelayMalformedReleaseRQAborted(t *testing.T) {
	be := startScriptBackend(t, 16384, nil)
	e := inspectEdge(t, be, `services = ["C-ECHO", "C-STORE"]`)
	c, ac := inspectClientRQ(t, e, nil)
	if ac.UserInfo.MaxLength <= 20000 {
		t.Fatalf("AC max length %d", ac.UserInfo.MaxLength)
	}
	rq := make([]byte, association.HeaderLen+20000)
	rq[0] = byte(association.TypeReleaseRQ)
	binary.BigEndian.PutUint32(rq[2:], 20000)
	writeRaw(t, c, rq)
	expectAbortAfter(t, c, association.AbortInvalidPDUParameterValue)
	for _, g := range backendGotOnly(t, be, 0, 5*time.Second) {
		if g.typ == association.TypeReleaseRQ {
			t.Fatalf("the backend received an A-RELEASE-RQ of %d bytes", g.length)
		}
	}
	abortedEvent(t, e, "client:invalid-pdu-parameter-value")
}

// A backend whose A-ASSOCIATE-AC announces a maximum length from 1 to 6
// takes no P-DATA-TF: one PDV item header is 6 bytes (PS3.8 9.3.5.1), and
// the smallest PDU with data is 7. Relaying would send it PDUs longer than
// it announced (PS3.8 D.1.1), so the association is refused: the client
// as for a malformed answer (2/3/1, backend-no-answer), the backend
// aborted.
func TestRelayBackendACMaxTooSmallRefused(t *testing.T) {
	be := startScriptBackend(t, 6, nil)
	e := inspectEdge(t, be, `services = ["C-ECHO"]`)
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	if err := association.WritePDU(c, echoRQ("MODALITY1", "MAINPACS")); err != nil {
		t.Fatal(err)
	}
	p, err := readPDU(t, c, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := association.AssociateRJ{Result: association.RejectTransient, Source: association.RejectSourceServiceProviderPresentation,
		Reason: association.RejectPresentationTemporaryCongestion}
	if rj, ok := p.(*association.AssociateRJ); !ok || *rj != want {
		if _, isAC := p.(*association.AssociateAC); isAC {
			// Show what the backend would get: a C-ECHO in PDUs of 7 bytes.
			_ = dimse.WriteMessage(c, pcEcho, &dimse.Command{CommandField: dimse.CEchoRQ, MessageID: 1,
				AffectedSOPClassUID: association.VerificationSOPClass, CommandDataSetType: dimse.NoDataSet}, nil, 16384)
			if g := be.next(t, 5*time.Second); g != nil && g.typ == association.TypePDataTF {
				t.Fatalf("edge accepted; the backend, which announced 6, got a P-DATA-TF of %d bytes after the header",
					g.length-association.HeaderLen)
			}
		}
		t.Fatalf("edge answered %T %+v, want A-ASSOCIATE-RJ %+v", p, p, want)
	}
	if g := be.next(t, 5*time.Second); g == nil || g.typ != association.TypeAbort {
		t.Fatalf("backend got %+v, want A-ABORT", g)
	}
	e.waitEvent(t, "association.rejected", func(ev audit.Event) bool {
		return ev.Event == audit.EventRejected && ev.Reason == "backend-no-answer"
	})
}
