package proxy

import (
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
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
