package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/internal/testpeer"
)

func TestRejects(t *testing.T) {
	testpeer.Require(t, "echoscu", "storescp")
	scp := testpeer.StartStoreSCP(t, "STORESCP")
	down := testpeer.FreeAddr(t) // nothing listens here
	e := startEdge(t, edgeOptions{
		Backends: backendBlock("pacs", scp.Addr, "STORESCP") + backendBlock("down", down, "DOWNPACS"),
		Rules: storeRules(`"C-ECHO", "C-STORE"`) + `
rule "down" {
  when {
    client_cn = ["client"]
    called_ae = ["DOWNPACS"]
  }
  relay { backend = "down" }
}
rule "unknown-called" {
  when { client_cn = ["client"] }
  reject { reason = "called-ae-not-recognized" }
}
`,
	})
	p := e.pki
	cases := []struct {
		name              string
		cert, key         string
		calling, called   string
		rule              string
		action, backend   string // what the rule decided before the refusal; "" for a policy reject
		result, src, code int
		reasonName        string
		dcmtkSays         string
	}{
		{"identity not allowed for the calling AE", p.otherCert, p.otherKey, "MODALITY1", "MAINPACS", "deny", "", "", 1, 1, 3,
			"calling-ae-not-recognized", "Calling AE Title Not Recognized"},
		{"unknown called AE", p.clientCert, p.clientKey, "MODALITY1", "NOSUCHPACS", "unknown-called", "", "", 1, 1, 7,
			"called-ae-not-recognized", "Called AE Title Not Recognized"},
		{"backend down", p.clientCert, p.clientKey, "MODALITY1", "DOWNPACS", "down", "relay", "down", 2, 3, 1,
			"backend-unreachable", "Temporary Congestion"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := e.dcmtkAs(t, tc.cert, tc.key, "echoscu", "-aet", tc.calling, "-aec", tc.called, e.host(), e.port())
			if err == nil {
				t.Fatalf("echoscu succeeded; want a reject\n%s", out)
			}
			if !strings.Contains(out, "Association Rejected") || !strings.Contains(out, tc.dcmtkSays) {
				t.Errorf("echoscu output does not show the reject %q:\n%s", tc.dcmtkSays, out)
			}
			ev := e.waitEvent(t, "rejected "+tc.called, func(ev audit.Event) bool {
				return ev.Event == audit.EventRejected && ev.CalledAE == tc.called && ev.CallingAE == tc.calling
			})
			if ev.Action != tc.action || ev.Backend != tc.backend {
				t.Errorf("audit: action %q backend %q; want %q %q", ev.Action, ev.Backend, tc.action, tc.backend)
			}
			if ev.Rule != tc.rule || ev.Result != tc.result || ev.Source != tc.src || ev.ReasonCode != tc.code || ev.Reason != tc.reasonName {
				t.Errorf("audit: rule=%q result=%d source=%d reason=%d %q; want %q %d %d %d %q",
					ev.Rule, ev.Result, ev.Source, ev.ReasonCode, ev.Reason, tc.rule, tc.result, tc.src, tc.code, tc.reasonName)
			}
		})
	}
}

// A client certificate from a CA the edge does not trust never reaches the
// rules: the handshake fails and is audited with its classification.
func TestUntrustedClientFailsHandshake(t *testing.T) {
	testpeer.Require(t, "echoscu")
	e := startEdge(t, edgeOptions{})
	p := e.pki
	out, err := e.dcmtkAs(t, p.rogueCert, p.rogueKey, "echoscu", "-aet", "MODALITY1", "-aec", "DICOMEDGE", e.host(), e.port())
	if err == nil {
		t.Fatalf("echoscu with an untrusted certificate succeeded\n%s", out)
	}
	ev := e.waitEvent(t, "tls.failed", func(ev audit.Event) bool { return ev.Event == audit.EventTLSFailed })
	if ev.Reason != "unknown-ca" {
		t.Errorf("tls.failed reason = %q, want unknown-ca", ev.Reason)
	}
}

// findscu where the rule allows only C-ECHO and C-STORE: the edge answers
// the C-FIND itself with 0x0124 and the backend never sees it.
func TestDisallowedServiceRefused(t *testing.T) {
	testpeer.Require(t, "findscu")
	o := testpeer.StartOrthanc(t, "ORTHANC", nil)
	e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", o.DICOM, "ORTHANC"), Rules: storeRules(`"C-ECHO", "C-STORE"`)})
	out, _ := e.dcmtk(t, "findscu", "-v", "-S", "-aet", "MODALITY1", "-aec", "MAINPACS",
		"-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=PAT0", "-k", "StudyInstanceUID", e.host(), e.port())
	ev := e.waitEvent(t, "dimse C-FIND refused", func(ev audit.Event) bool { return ev.Event == audit.EventDIMSE && ev.Service == "C-FIND" })
	if ev.Status != "0x0124" || ev.Allowed == nil || *ev.Allowed {
		t.Errorf("C-FIND audit = status %s allowed %v; want 0x0124 refused", ev.Status, ev.Allowed)
	}
	if !strings.Contains(strings.ToLower(out), "0x124") {
		t.Errorf("findscu did not report the refusal:\n%s", out)
	}
	// The association stays usable and ends with a release.
	e.waitEvent(t, "released", func(ev audit.Event) bool { return ev.Event == audit.EventReleased })
	if strings.Contains(o.Output(), "Incoming Find request") {
		t.Errorf("the backend saw the refused C-FIND:\n%s", o.Output())
	}
}

// With max_associations = 1 and one association held open, the next gets
// the transient reject 2/3/2 (local limit exceeded).
func TestOverAssociationLimit(t *testing.T) {
	testpeer.Require(t, "echoscu")
	e := startEdge(t, edgeOptions{MaxAssociations: 1})
	p := e.pki
	hold := e.goClient(t, p.clientCert, p.clientKey)
	if err := association.WritePDU(hold, echoRQ("HOLDER", "DICOMEDGE")); err != nil {
		t.Fatal(err)
	}
	pdu, err := readPDU(t, hold, 5*time.Second)
	if err != nil {
		t.Fatalf("holder: %v", err)
	}
	if _, ok := pdu.(*association.AssociateAC); !ok {
		t.Fatalf("holder got %T, want A-ASSOCIATE-AC", pdu)
	}
	out, err := e.dcmtk(t, "echoscu", "-aet", "MODALITY1", "-aec", "DICOMEDGE", e.host(), e.port())
	if err == nil || !strings.Contains(out, "Local Limit Exceeded") {
		t.Fatalf("echoscu over the limit: err=%v, want Local Limit Exceeded:\n%s", err, out)
	}
	ev := e.waitEvent(t, "rejected over limit", func(ev audit.Event) bool { return ev.Event == audit.EventRejected && ev.CallingAE == "MODALITY1" })
	if ev.Result != 2 || ev.Source != 3 || ev.ReasonCode != 2 {
		t.Errorf("audit = %d/%d/%d, want 2/3/2", ev.Result, ev.Source, ev.ReasonCode)
	}
	// Release the held association: the slot is free again.
	if err := association.WritePDU(hold, &association.ReleaseRQ{}); err != nil {
		t.Fatal(err)
	}
	if pdu, err := readPDU(t, hold, 5*time.Second); err != nil {
		t.Fatalf("release: %v", err)
	} else if _, ok := pdu.(*association.ReleaseRP); !ok {
		t.Fatalf("got %T, want A-RELEASE-RP", pdu)
	}
	hold.Close()
	deadline := time.Now().Add(20 * time.Second)
	for e.Server.active.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if out, err := e.dcmtk(t, "echoscu", "-aet", "MODALITY1", "-aec", "DICOMEDGE", e.host(), e.port()); err != nil {
		t.Fatalf("echoscu after the slot was freed: %v\n%s", err, out)
	}
}
