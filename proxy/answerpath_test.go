package proxy

import (
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/internal/testpeer"
	"github.com/dicomedge/dicomedge/spool"
)

// The answer path's A-ASSOCIATE-AC echoes the RQ's called AE
// title (PS3.8 9.3.3: the AC's called and calling AE fields are those of
// the RQ), even when the rule answers under a title other than the edge's
// own; and a C-CANCEL-RQ, which has no response (PS3.7 9.3.2.3), is
// ignored rather than answered with an invented command.
func TestAnswerEchoesCalledAEAndIgnoresCancel(t *testing.T) {
	e := startEdge(t, edgeOptions{Rules: `
rule "alias" {
  when {
    client_cn = ["client"]
    called_ae = ["ALIASAE"]
  }
  answer {}
}
`})
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	ac := associate(t, c, echoRQ("GOCLIENT", "ALIASAE"))
	if ac.CalledAE != "ALIASAE" || ac.CallingAE != "GOCLIENT" {
		t.Errorf("AC called/calling AE = %q/%q, want the RQ's ALIASAE/GOCLIENT", ac.CalledAE, ac.CallingAE)
	}

	cancel := &dimse.Command{CommandField: dimse.CCancelRQ, MessageIDBeingRespondedTo: 3, CommandDataSetType: dimse.NoDataSet}
	if err := dimse.WriteMessage(c, 1, cancel, nil, 16384); err != nil {
		t.Fatal(err)
	}
	echo := &dimse.Command{CommandField: dimse.CEchoRQ, MessageID: 4, AffectedSOPClassUID: association.VerificationSOPClass, CommandDataSetType: dimse.NoDataSet}
	if err := dimse.WriteMessage(c, 1, echo, nil, 16384); err != nil {
		t.Fatal(err)
	}
	// The first message back must be the C-ECHO-RSP: nothing for the cancel.
	p, err := readPDU(t, c, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pd, ok := p.(*association.PDataTF)
	if !ok || len(pd.PDVs) != 1 {
		t.Fatalf("got %#v, want one PDV", p)
	}
	rsp, err := dimse.DecodeCommand(pd.PDVs[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	if rsp.CommandField != dimse.CEchoRSP || rsp.MessageIDBeingRespondedTo != 4 {
		t.Errorf("first response = %v to %d (status 0x%04X), want C-ECHO-RSP to 4", rsp.CommandField, rsp.MessageIDBeingRespondedTo, rsp.Status)
	}
}

// An A-RELEASE-RQ in the middle of a DIMSE message (a command whose last
// fragment has not come, a data set whose last fragment has not come) is
// unexpected in PS3.8 Sta6, as docs/refusals.md has it: A-ABORT (2, 2),
// not an A-RELEASE-RP telling the requestor its association ended cleanly
// while the half-received C-STORE was dropped.
func TestAnswerReleaseMidMessageAborted(t *testing.T) {
	t.Run("store-and-forward data set", func(t *testing.T) {
		e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", testpeer.FreeAddr(t), "STORESCP"), Rules: sfRule()})
		c, _ := ctAssociation(t, e)
		cmd := &dimse.Command{CommandField: dimse.CStoreRQ, MessageID: 1, AffectedSOPClassUID: ctImageStorage,
			AffectedSOPInstanceUID: "1.2.3.4", CommandDataSetType: 0}
		ds := leakElement(leakElement(nil, 0x00080016, "UI", []byte(ctImageStorage)), 0x00080018, "UI", []byte("1.2.3.4"))
		writeRaw(t, c, pdataPDU(append(pdvItemBytes(pcCT, true, true, cmd.Encode()), pdvItemBytes(pcCT, false, false, ds)...)))
		writeRaw(t, c, mustAppend(t, &association.ReleaseRQ{}))
		expectAbortAfter(t, c, association.AbortUnexpectedPDU)
		answerAborted(t, e, "client:unexpected-pdu")
		if list, _ := e.Server.Spool.List("pacs", spool.Queued); len(list) != 0 {
			t.Errorf("%d spooled, want none", len(list))
		}
	})
	t.Run("answer command fragment", func(t *testing.T) {
		e := startEdge(t, edgeOptions{})
		c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
		associate(t, c, echoRQ("GOCLIENT", "DICOMEDGE"))
		cmd := cEchoRQ(t, 1)
		writeRaw(t, c, pdataPDU(pdvItemBytes(1, true, false, cmd[:10])))
		writeRaw(t, c, mustAppend(t, &association.ReleaseRQ{}))
		expectAbortAfter(t, c, association.AbortUnexpectedPDU)
		answerAborted(t, e, "client:unexpected-pdu")
	})
}

// A command PDV while a C-STORE data set is still arriving interleaves two
// messages (PS3.8 E.2, PS3.7 6.3.1): A-ABORT (2, 5), as on a relay, not an
// answer to the inner request followed by more of the data set; nothing of
// the instance is spooled.
func TestStoreAndForwardCommandInsideDataSetAborted(t *testing.T) {
	e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", testpeer.FreeAddr(t), "STORESCP"), Rules: sfRule()})
	c, _ := ctAssociation(t, e)
	cmd := &dimse.Command{CommandField: dimse.CStoreRQ, MessageID: 1, AffectedSOPClassUID: ctImageStorage,
		AffectedSOPInstanceUID: "1.2.3.4", CommandDataSetType: 0}
	ds := leakElement(leakElement(nil, 0x00080016, "UI", []byte(ctImageStorage)), 0x00080018, "UI", []byte("1.2.3.4"))
	writeRaw(t, c, pdataPDU(append(pdvItemBytes(pcCT, true, true, cmd.Encode()), pdvItemBytes(pcCT, false, false, ds)...)))
	writeRaw(t, c, pdataPDU(pdvItemBytes(1, true, true, cEchoRQ(t, 2))))
	expectAbortAfter(t, c, association.AbortUnexpectedPDUParameter)
	answerAborted(t, e, "client:unexpected-pdu-parameter")
	if list, _ := e.Server.Spool.List("pacs", spool.Queued); len(list) != 0 {
		t.Errorf("%d spooled, want none", len(list))
	}
}

// answerAborted waits for the association's aborted record and checks it
// names the client's protocol violation.
func answerAborted(t *testing.T, e *testEdge, reason string) {
	t.Helper()
	ev := e.waitEvent(t, "association.aborted", func(ev audit.Event) bool { return ev.Event == audit.EventAborted })
	if ev.AbortSource != "service-provider" || ev.AbortReason != reason {
		t.Errorf("aborted record: source %q reason %q, want service-provider, %s", ev.AbortSource, ev.AbortReason, reason)
	}
}
