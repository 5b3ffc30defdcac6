package proxy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// qrSetup is Orthanc with a study loaded, a storescp as the C-MOVE
// destination, the edge relaying QRPACS to Orthanc, and a stunnel client
// for the DCMTK tools that have no +tls.
type qrSetup struct {
	e        *testEdge
	orthanc  *testpeer.Orthanc
	dest     *testpeer.StoreSCP
	tunnel   *testpeer.StunnelClient
	studyUID string
	want     map[string][]byte
}

func startQR(t *testing.T) *qrSetup {
	t.Helper()
	testpeer.Require(t, "storescu", "storescp", "findscu", "getscu", "movescu", "stunnel4")
	dest := testpeer.StartStoreSCP(t, "MOVEDEST")
	o := testpeer.StartOrthanc(t, "ORTHANC", map[string]testpeer.OrthancModality{
		"movedest":  {AETitle: "MOVEDEST", Host: "127.0.0.1", Port: testpeer.Port(dest.Addr)},
		"otherdest": {AETitle: "OTHERDEST", Host: "127.0.0.1", Port: testpeer.Port(dest.Addr)},
	})
	paths, want := testpeer.WriteDICOMFiles(t, t.TempDir(), "PATQR", 3, 256, 256)
	ctx := testpeer.Context(t, time.Minute)
	args := append([]string{"-aet", "LOADER", "-aec", "ORTHANC", testpeer.Host(o.DICOM), fmt.Sprint(testpeer.Port(o.DICOM))}, paths...)
	if out, err := testpeer.Run(ctx, "storescu", args...); err != nil {
		t.Fatalf("loading Orthanc: %v\n%s", err, out)
	}
	var studyUID string
	for uid := range want {
		studyUID = uid[:strings.LastIndex(uid, ".3.")] + ".1"
	}
	e := startEdge(t, edgeOptions{
		Backends: backendBlock("orthanc", o.DICOM, "ORTHANC"),
		Rules: `
rule "qr" {
  when {
    client_cn = ["client"]
    called_ae = ["QRPACS"]
  }
  relay {
    backend           = "orthanc"
    services          = ["C-ECHO", "C-FIND", "C-GET", "C-MOVE", "C-STORE"]
    move_destinations = ["MOVEDEST"]
  }
}
`,
	})
	tun := testpeer.StartStunnelClient(t, e.Addr, e.pki.clientCert, e.pki.clientKey, e.pki.ca)
	return &qrSetup{e: e, orthanc: o, dest: dest, tunnel: tun, studyUID: studyUID, want: want}
}

// plain runs a DCMTK tool through the stunnel client (no +tls).
func (q *qrSetup) plain(t *testing.T, tool string, args ...string) (string, error) {
	t.Helper()
	ctx := testpeer.Context(t, 2*time.Minute)
	args = append(args, testpeer.Host(q.tunnel.Accept), fmt.Sprint(testpeer.Port(q.tunnel.Accept)))
	return testpeer.Run(ctx, tool, args...)
}

func TestQueryRetrieveThroughTheEdge(t *testing.T) {
	q := startQR(t)
	e := q.e

	t.Run("findscu +tls", func(t *testing.T) {
		out, err := e.dcmtk(t, "findscu", "-v", "-S", "-aet", "MODALITY1", "-aec", "QRPACS",
			"-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=PATQR", "-k", "StudyInstanceUID", "-k", "RetrieveAETitle", e.host(), e.port())
		if err != nil {
			t.Fatalf("findscu: %v\n%s", err, out)
		}
		if !strings.Contains(out, q.studyUID) {
			t.Errorf("findscu did not return study %s:\n%s", q.studyUID, out)
		}
		if strings.Contains(out, "[ORTHANC]") {
			t.Errorf("the backend's AE title reached the client:\n%s", out)
		}
		ev := e.waitEvent(t, "dimse C-FIND", func(ev audit.Event) bool { return ev.Event == audit.EventDIMSE && ev.Service == "C-FIND" })
		if ev.Status != "0x0000" || ev.Allowed == nil || !*ev.Allowed {
			t.Errorf("C-FIND audit = %+v", ev)
		}
	})

	t.Run("getscu via stunnel, role selection carried through", func(t *testing.T) {
		dir := t.TempDir()
		out, err := q.plain(t, "getscu", "-v", "-S", "-aet", "MODALITY1", "-aec", "QRPACS", "-od", dir,
			"-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+q.studyUID)
		if err != nil {
			t.Fatalf("getscu: %v\n%s", err, out)
		}
		got := readDataSets(t, dir)
		if len(got) != len(q.want) {
			t.Fatalf("getscu received %d instances, want %d\n%s", len(got), len(q.want), out)
		}
		for uid, ds := range q.want {
			if !bytes.Equal(got[uid], ds) {
				t.Errorf("C-GET instance %s differs (%d bytes, want %d)", uid, len(got[uid]), len(ds))
			}
		}
		ev := e.waitEvent(t, "dimse C-GET", func(ev audit.Event) bool { return ev.Event == audit.EventDIMSE && ev.Service == "C-GET" })
		if ev.Status != "0x0000" {
			t.Errorf("C-GET audit status %s", ev.Status)
		}
		// What was fetched: one dimse record per C-STORE sub-operation,
		// with the client's status, before the C-GET's own record.
		var subs []audit.Event
		for _, x := range e.events(t) {
			if x.Event == audit.EventDIMSE && x.Service == "C-STORE" && x.Assoc == ev.Assoc {
				subs = append(subs, x)
			}
		}
		if len(subs) != len(q.want) {
			t.Fatalf("%d C-STORE sub-operation records for the C-GET, want %d: %+v", len(subs), len(q.want), subs)
		}
		seen := map[string]bool{}
		for _, x := range subs {
			want, ok := q.want[x.SOPInstance]
			switch {
			case !ok || seen[x.SOPInstance]:
				t.Errorf("sub-operation record for unexpected or repeated instance %q", x.SOPInstance)
			case x.Status != "0x0000" || x.Allowed == nil || !*x.Allowed:
				t.Errorf("sub-operation %s: status %q allowed %v", x.SOPInstance, x.Status, x.Allowed)
			case x.SOPClass != testpeer.SecondaryCaptureImageStorage:
				t.Errorf("sub-operation %s: sop_class %q", x.SOPInstance, x.SOPClass)
			case x.Detail != fmt.Sprintf("C-GET sub-operation of message %d", ev.MessageID):
				t.Errorf("sub-operation %s: detail %q, want the C-GET's message %d", x.SOPInstance, x.Detail, ev.MessageID)
			case x.PatientID != "PATQR":
				t.Errorf("sub-operation %s: patient_id %q", x.SOPInstance, x.PatientID)
			case x.Bytes != int64(len(want)):
				t.Errorf("sub-operation %s: bytes %d, want the data set's %d", x.SOPInstance, x.Bytes, len(want))
			case x.Seq > ev.Seq:
				t.Errorf("sub-operation %s recorded after the C-GET (seq %d > %d)", x.SOPInstance, x.Seq, ev.Seq)
			}
			seen[x.SOPInstance] = true
		}
	})

	t.Run("movescu via stunnel to an allowed destination", func(t *testing.T) {
		out, err := q.plain(t, "movescu", "-v", "-S", "-aet", "MODALITY1", "-aec", "QRPACS", "-aem", "MOVEDEST",
			"-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+q.studyUID)
		if err != nil {
			t.Fatalf("movescu: %v\n%s", err, out)
		}
		deadline := time.Now().Add(10 * time.Second)
		for q.dest.Count() < len(q.want) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		got := q.dest.Received(t)
		for uid, ds := range q.want {
			if !bytes.Equal(got[uid], ds) {
				t.Errorf("C-MOVE instance %s differs or missing (%d bytes)", uid, len(got[uid]))
			}
		}
		ev := e.waitEvent(t, "dimse C-MOVE", func(ev audit.Event) bool {
			return ev.Event == audit.EventDIMSE && ev.Service == "C-MOVE" && ev.MoveDestination == "MOVEDEST"
		})
		if ev.Status != "0x0000" || ev.Allowed == nil || !*ev.Allowed {
			t.Errorf("C-MOVE audit = %+v", ev)
		}
	})

	t.Run("movescu to a destination outside move_destinations", func(t *testing.T) {
		out, _ := q.plain(t, "movescu", "-v", "-S", "-aet", "MODALITY1", "-aec", "QRPACS", "-aem", "OTHERDEST",
			"-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+q.studyUID)
		if !strings.Contains(strings.ToLower(out), "0x124") && !strings.Contains(out, "Refused") {
			t.Errorf("movescu did not report the refusal:\n%s", out)
		}
		ev := e.waitEvent(t, "dimse C-MOVE refused", func(ev audit.Event) bool {
			return ev.Event == audit.EventDIMSE && ev.Service == "C-MOVE" && ev.MoveDestination == "OTHERDEST"
		})
		if ev.Status != "0x0124" || ev.Allowed == nil || *ev.Allowed {
			t.Errorf("refused C-MOVE audit = %+v", ev)
		}
		if strings.Contains(q.orthanc.Output(), "OTHERDEST") {
			t.Errorf("Orthanc saw the refused C-MOVE:\n%s", q.orthanc.Output())
		}
	})
}

func readDataSets(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		b, err := os.ReadFile(filepath.Join(dir, en.Name()))
		if err != nil {
			t.Fatal(err)
		}
		ds, uid, err := testpeer.SplitPart10(b)
		if err != nil {
			t.Fatalf("%s: %v", en.Name(), err)
		}
		out[uid] = ds
	}
	return out
}

// A backend that fills Retrieve AE Title (dcmqrscp names itself there): the
// client sees the AE title it called instead, in either transfer syntax, so
// a C-MOVE or C-GET it aims there reaches the edge again.
func TestRetrieveAETitleRewritten(t *testing.T) {
	testpeer.Require(t, "dcmqrscp", "storescu", "findscu")
	qr := testpeer.StartQRSCP(t, "QRSCP")
	paths, _ := testpeer.WriteDICOMFiles(t, t.TempDir(), "PATRAE", 1, 16, 16)
	ctx := testpeer.Context(t, time.Minute)
	args := append([]string{"-aec", "QRSCP", testpeer.Host(qr.Addr), fmt.Sprint(testpeer.Port(qr.Addr))}, paths...)
	if out, err := testpeer.Run(ctx, "storescu", args...); err != nil {
		t.Fatalf("loading dcmqrscp: %v\n%s", err, out)
	}
	e := startEdge(t, edgeOptions{
		Backends: backendBlock("qr", qr.Addr, "QRSCP"),
		Rules: `
rule "qr" {
  when {
    client_cn = ["client"]
    called_ae = ["QRPACS"]
  }
  relay {
    backend  = "qr"
    services = ["C-ECHO", "C-FIND"]
  }
}
`,
	})
	for _, ts := range []struct{ name, flag string }{{"explicit VR", "-xe"}, {"implicit VR", "-xi"}} {
		t.Run(ts.name, func(t *testing.T) {
			out, err := e.dcmtk(t, "findscu", "-v", "-S", ts.flag, "-aet", "MODALITY1", "-aec", "QRPACS",
				"-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=PATRAE", "-k", "StudyInstanceUID", "-k", "RetrieveAETitle", e.host(), e.port())
			if err != nil {
				t.Fatalf("findscu: %v\n%s", err, out)
			}
			if !strings.Contains(out, "(0008,0054) AE [QRPACS]") || strings.Contains(out, "QRSCP") {
				t.Errorf("Retrieve AE Title not rewritten to the called AE title QRPACS:\n%s", out)
			}
		})
	}
	// Directly, the backend answers with its own title: the test would
	// see the difference.
	out, err := testpeer.Run(ctx, "findscu", "-S", "-aec", "QRSCP", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=PATRAE", "-k", "RetrieveAETitle",
		testpeer.Host(qr.Addr), fmt.Sprint(testpeer.Port(qr.Addr)))
	if err != nil || !strings.Contains(out, "(0008,0054) AE [QRSCP ]") {
		t.Errorf("dcmqrscp directly does not name itself (%v):\n%s", err, out)
	}
}
