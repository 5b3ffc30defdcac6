package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// wayOut is the way out with real peers: Orthanc as the hospital's PACS
// (MAINPACS), whose AE table points the outside workstation CLINA_WS1 (and
// CLINB_WS9, for which no rule routes out) at the edge's plain inside
// listener; the clinic's workstation a DCMTK storescp over TLS that
// requires a client certificate from the hospital's CA; and a stunnel
// client for the clinic's movescu, which has no +tls.
type wayOut struct {
	e        *testEdge
	orthanc  *testpeer.Orthanc
	ws       *testpeer.StoreSCP
	tunnel   *testpeer.StunnelClient
	inside   string
	edgeCN   string // the subject CN of the edge's client certificate on the way out
	studyID  string // Orthanc's ID of the loaded study
	studyUID string
	want     map[string][]byte
}

func startWayOut(t *testing.T) *wayOut {
	t.Helper()
	testpeer.Require(t, "storescp", "storescu", "movescu", "echoscu", "stunnel4")
	p := sharedPKI(t)
	w := &wayOut{edgeCN: "edge-out.hospital.test"}
	// The clinic's own CA signs its workstation's server certificate; the
	// edge's client certificate comes from the hospital's CA, which the
	// workstation trusts.
	clinic := testpeer.NewPKI(t, "clinic-a")
	wsCert, wsKey := clinic.Issue(t, "ws1", testpeer.CertOptions{CN: "ws1.clinic-a.test", DNS: []string{"localhost"}, IPs: []string{"127.0.0.1"}, Server: true})
	edgeCert, edgeKey := p.issuer.Issue(t, "edge-out", testpeer.CertOptions{CN: w.edgeCN})
	// -d: storescp prints the TLS details, with the peer's certificate.
	w.ws = testpeer.StartStoreSCP(t, "CLINA_WS1", "-d", "+tls", wsKey, wsCert, "+cf", p.ca, "--require-peer-cert")

	w.inside = testpeer.FreeAddr(t)
	w.orthanc = testpeer.StartOrthanc(t, "MAINPACS", map[string]testpeer.OrthancModality{
		"clina_ws1": {AETitle: "CLINA_WS1", Host: "127.0.0.1", Port: testpeer.Port(w.inside)},
		"clinb_ws9": {AETitle: "CLINB_WS9", Host: "127.0.0.1", Port: testpeer.Port(w.inside)},
	})
	paths, want := testpeer.WriteDICOMFiles(t, t.TempDir(), "PATOUT", 3, 128, 128)
	w.want = want
	ctx := testpeer.Context(t, time.Minute)
	args := append([]string{"-aet", "LOADER", "-aec", "MAINPACS", testpeer.Host(w.orthanc.DICOM), fmt.Sprint(testpeer.Port(w.orthanc.DICOM))}, paths...)
	if out, err := testpeer.Run(ctx, "storescu", args...); err != nil {
		t.Fatalf("loading Orthanc (DICOM %s, HTTP %s; inside %s, workstation %s): %v\n%s", w.orthanc.DICOM, w.orthanc.HTTP, w.inside, w.ws.Addr, err, out)
	}
	for uid := range want {
		w.studyUID = uid[:strings.LastIndex(uid, ".3.")] + ".1"
	}
	var studies []string
	w.orthancGET(t, "/studies", &studies)
	if len(studies) != 1 {
		t.Fatalf("Orthanc holds %d studies, want 1", len(studies))
	}
	w.studyID = studies[0]

	w.e = startEdge(t, edgeOptions{
		Listeners: fmt.Sprintf(`
listener "inside" {
  listen     = %q
  tls        = false
  allow_cidr = ["127.0.0.1/32"]
}
`, w.inside),
		Backends: backendBlock("pacs", w.orthanc.DICOM, "MAINPACS") + fmt.Sprintf(`
backend "clinic-a-ws1" {
  address  = %q
  ae_title = "CLINA_WS1"
  tls {
    ca          = [%q]
    cert_file   = %q
    key_file    = %q
    server_name = "localhost"
  }
}
`, w.ws.Addr, clinic.CACert, edgeCert, edgeKey),
		Rules: `
rule "pacs-to-clinic-a" {
  when {
    listener    = ["inside"]
    source_cidr = ["127.0.0.1/32"]
    calling_ae  = ["MAINPACS"]
    called_ae   = ["CLINA_WS1"]
  }
  relay {
    backend  = "clinic-a-ws1"
    services = ["C-ECHO", "C-STORE"]
  }
}
rule "clinic-a-retrieve" {
  when {
    client_cn = ["client"]
    called_ae = ["MAINPACS"]
  }
  relay {
    backend           = "pacs"
    services          = ["C-ECHO", "C-FIND", "C-MOVE"]
    move_destinations = ["CLINA_WS1", "CLINB_WS9"]
  }
}
# No listener: applies on the TLS listener only, never on "inside".
rule "echo-ws1" {
  when { called_ae = ["CLINA_WS1"] }
  answer {}
}
`,
	})
	if got := w.e.listenerAddr(t, "inside"); got != w.inside {
		t.Fatalf("inside listener on %s, want %s", got, w.inside)
	}
	w.tunnel = testpeer.StartStunnelClient(t, w.e.Addr, w.e.pki.clientCert, w.e.pki.clientKey, w.e.pki.ca)
	return w
}

func (w *wayOut) orthancGET(t *testing.T, path string, v any) {
	t.Helper()
	resp, err := http.Get("http://" + w.orthanc.HTTP + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// clearWorkstation empties the workstation's directory.
func (w *wayOut) clearWorkstation(t *testing.T) {
	t.Helper()
	entries, _ := os.ReadDir(w.ws.Dir)
	for _, en := range entries {
		if err := os.Remove(filepath.Join(w.ws.Dir, en.Name())); err != nil {
			t.Fatal(err)
		}
	}
}

// waitArrived waits (bounded) for n files at the workstation and checks
// that the study arrived byte-identical.
func (w *wayOut) waitArrived(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for w.ws.Count() < len(w.want) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the last file's write finishes
	got := w.ws.Received(t)
	if len(got) != len(w.want) {
		t.Fatalf("the workstation has %d instances, want %d\nstorescp:\n%s", len(got), len(w.want), w.ws.Output())
	}
	for uid, ds := range w.want {
		if !bytes.Equal(got[uid], ds) {
			t.Errorf("instance %s differs at the workstation (%d bytes, want %d)", uid, len(got[uid]), len(ds))
		}
	}
}

// movescu runs a C-MOVE of the study from the clinic, through its stunnel
// client and the edge's TLS listener, to dest.
func (w *wayOut) movescu(t *testing.T, dest string) (string, error) {
	t.Helper()
	ctx := testpeer.Context(t, 2*time.Minute)
	return testpeer.Run(ctx, "movescu", "-v", "-S", "-aet", "CLINA_CT1", "-aec", "MAINPACS", "-aem", dest,
		"-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+w.studyUID,
		testpeer.Host(w.tunnel.Accept), fmt.Sprint(testpeer.Port(w.tunnel.Accept)))
}

func TestWayOutEndToEnd(t *testing.T) {
	w := startWayOut(t)
	e := w.e

	t.Run("the PACS sends a study out over TLS with the edge's certificate", func(t *testing.T) {
		resp, err := http.Post("http://"+w.orthanc.HTTP+"/modalities/clina_ws1/store", "application/json", strings.NewReader(`["`+w.studyID+`"]`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("Orthanc store: %s\n%s\nOrthanc:\n%s", resp.Status, body, w.orthanc.Output())
		}
		w.waitArrived(t)
		out := w.ws.Output()
		if !strings.Contains(out, "Protocol    : TLS") || !strings.Contains(out, "CN="+w.edgeCN) {
			t.Errorf("the workstation did not see TLS with the edge's client certificate (CN %s):\n%s", w.edgeCN, out)
		}
		acc := e.waitEvent(t, "outbound association.accepted", func(ev audit.Event) bool {
			return ev.Event == audit.EventAccepted && ev.Listener == "inside" && ev.CalledAE == "CLINA_WS1"
		})
		if acc.CallingAE != "MAINPACS" || acc.Backend != "clinic-a-ws1" || acc.Rule != "pacs-to-clinic-a" || acc.Client != nil ||
			!strings.HasPrefix(acc.Remote, "127.0.0.1:") {
			t.Errorf("outbound record %+v: want listener inside, calling MAINPACS, backend clinic-a-ws1, no client certificate", acc)
		}
	})

	t.Run("an outside client moves a study to its own workstation", func(t *testing.T) {
		w.clearWorkstation(t)
		before := len(e.events(t))
		out, err := w.movescu(t, "CLINA_WS1")
		if err != nil {
			t.Fatalf("movescu: %v\n%s\nOrthanc:\n%s", err, out, w.orthanc.Output())
		}
		w.waitArrived(t)
		mv := e.waitEvent(t, "dimse C-MOVE", func(ev audit.Event) bool {
			return ev.Event == audit.EventDIMSE && ev.Service == "C-MOVE" && ev.MoveDestination == "CLINA_WS1"
		})
		if mv.Status != "0x0000" || mv.Listener != "edge" || mv.Client == nil || mv.Client.CN != "client" {
			t.Errorf("C-MOVE record %+v", mv)
		}
		// Orthanc's sub-association came back in through the inside listener.
		n := 0
		for _, ev := range e.events(t)[before:] {
			if ev.Event == audit.EventAccepted && ev.Listener == "inside" && ev.CallingAE == "MAINPACS" && ev.CalledAE == "CLINA_WS1" {
				n++
			}
		}
		if n == 0 {
			t.Error("no association of Orthanc's on the inside listener for the C-MOVE")
		}
	})

	t.Run("a destination no rule routes out moves nothing", func(t *testing.T) {
		w.clearWorkstation(t)
		// Allowed by move_destinations, but no inside rule relays CLINB_WS9:
		// Orthanc's sub-association is rejected at the inside listener.
		out, _ := w.movescu(t, "CLINB_WS9")
		rej := e.waitEvent(t, "inside association.rejected", func(ev audit.Event) bool {
			return ev.Event == audit.EventRejected && ev.Listener == "inside" && ev.CalledAE == "CLINB_WS9"
		})
		if rej.Rule != "" || rej.CallingAE != "MAINPACS" {
			t.Errorf("rejected record %+v", rej)
		}
		// Not in move_destinations: refused by the edge, never reaches Orthanc.
		out2, err2 := w.movescu(t, "EVIL")
		if !strings.Contains(strings.ToLower(out2), "0x124") {
			t.Errorf("movescu to EVIL did not report the refusal (%v):\n%s", err2, out2)
		}
		time.Sleep(500 * time.Millisecond)
		if n := w.ws.Count(); n != 0 {
			t.Errorf("%d files reached the workstation\nmovescu:\n%s", n, out)
		}
	})

	t.Run("an inside association no rule naming the listener allows is rejected", func(t *testing.T) {
		ctx := testpeer.Context(t, time.Minute)
		// "echo-ws1" (no listener) matches these AE titles, but applies to
		// the TLS listener only.
		out, err := testpeer.Run(ctx, "echoscu", "-v", "-aet", "OTHER", "-aec", "CLINA_WS1", testpeer.Host(w.inside), fmt.Sprint(testpeer.Port(w.inside)))
		if err == nil || !strings.Contains(out, "Rejected") {
			t.Errorf("echoscu on the inside listener: %v\n%s", err, out)
		}
		rej := e.waitEvent(t, "rejected OTHER", func(ev audit.Event) bool {
			return ev.Event == audit.EventRejected && ev.Listener == "inside" && ev.CallingAE == "OTHER"
		})
		if rej.Rule != "" || rej.ReasonCode != int(association.RejectUserCallingAENotRecognized) {
			t.Errorf("rejected record %+v", rej)
		}
		// The same AE titles over the TLS listener: answered by echo-ws1.
		if out, err := e.dcmtk(t, "echoscu", "-aet", "OTHER", "-aec", "CLINA_WS1", e.host(), e.port()); err != nil {
			t.Errorf("echoscu +tls: %v\n%s", err, out)
		}
	})

	t.Run("an inside connection from outside allow_cidr is closed and audited", func(t *testing.T) {
		c := dialPlain(t, w.inside, "127.0.0.2")
		_ = association.WritePDU(c, echoRQ("MAINPACS", "CLINA_WS1"))
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 64)); n != 0 || err == nil {
			t.Errorf("read %d bytes, %v: want the connection closed without an answer", n, err)
		}
		ev := e.waitEvent(t, "connection.refused", func(ev audit.Event) bool {
			return ev.Event == audit.EventConnectionRefused && ev.Listener == "inside"
		})
		if ev.Reason != RefusedSourceNotAllowed || !strings.HasPrefix(ev.Remote, "127.0.0.2:") {
			t.Errorf("refusal record %+v", ev)
		}
	})

	e.Server.Audit.Close() // flush; the cleanup's second Close is harmless
	if n, err := audit.Verify(audit.Files(e.AuditFile)); err != nil || n == 0 {
		t.Errorf("audit.Verify = %d, %v; want the trail intact", n, err)
	}
}
