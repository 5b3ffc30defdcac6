package proxy

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/audit"
)

// Reload swaps the policy for new associations only: an established one
// keeps the decision it got; an invalid file is refused and audited.
func TestReloadKeepsEstablishedDecisions(t *testing.T) {
	e := startEdge(t, edgeOptions{})
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	associate(t, c, echoRQ("GOCLIENT", "DICOMEDGE"))

	// An invalid policy is refused; the old one stays.
	if err := os.WriteFile(e.file, []byte("edge {\n  max_associations = -1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Server.ReloadFile(e.file); err == nil {
		t.Fatal("reload of an invalid file succeeded")
	}
	failed := e.waitEvent(t, "policy.reload_failed", func(ev audit.Event) bool { return ev.Event == audit.EventPolicyReloadFailed })
	// The detail locates the problem as policy check does: file:line:col: error: ...
	if !strings.Contains(failed.Detail, e.file+":2:22: error: Value out of range") || strings.Contains(failed.Detail, "\n") {
		t.Errorf("reload_failed detail %q, want %s:2:22: error: ... on one line", failed.Detail, e.file)
	}

	// A valid policy that closes the edge's AE title.
	o := e.opts
	o.Rules = `
rule "closed" {
  when { called_ae = ["DICOMEDGE"] }
  reject { reason = "called-ae-not-recognized" }
}
`
	if err := os.WriteFile(e.file, []byte(o.source(e.pki, "", "")), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Server.ReloadFile(e.file); err != nil {
		t.Fatalf("reload: %v", err)
	}
	ev := e.waitEvent(t, "policy.reloaded", func(ev audit.Event) bool { return ev.Event == audit.EventPolicyReloaded })
	if !strings.Contains(ev.Detail, "policy.hcl") {
		t.Errorf("reloaded detail %q", ev.Detail)
	}

	// The established association still gets its C-ECHO answered.
	echo := &dimse.Command{CommandField: dimse.CEchoRQ, MessageID: 1, AffectedSOPClassUID: association.VerificationSOPClass, CommandDataSetType: dimse.NoDataSet}
	if err := dimse.WriteMessage(c, 1, echo, nil, 16384); err != nil {
		t.Fatal(err)
	}
	if p, err := readPDU(t, c, 5*time.Second); err != nil {
		t.Fatalf("C-ECHO after reload: %v", err)
	} else if _, ok := p.(*association.PDataTF); !ok {
		t.Fatalf("got %T, want the C-ECHO-RSP", p)
	}

	// A new association gets the new decision.
	c2 := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	if err := association.WritePDU(c2, echoRQ("GOCLIENT", "DICOMEDGE")); err != nil {
		t.Fatal(err)
	}
	p, err := readPDU(t, c2, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rj, ok := p.(*association.AssociateRJ)
	if !ok || rj.Reason != association.RejectUserCalledAENotRecognized {
		t.Fatalf("got %#v, want A-ASSOCIATE-RJ called AE not recognized", p)
	}
}
