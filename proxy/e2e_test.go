package proxy

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// storeRules relays MAINPACS to a storescp with echo and store allowed.
func storeRules(services string) string {
	return fmt.Sprintf(`
rule "modalities" {
  when {
    client_cn  = ["client"]
    calling_ae = ["MODALITY*"]
    called_ae  = ["MAINPACS"]
  }
  relay {
    backend  = "pacs"
    services = [%s]
  }
}
`, services)
}

func TestAnswerEchoWithDCMTK(t *testing.T) {
	testpeer.Require(t, "echoscu")
	e := startEdge(t, edgeOptions{})
	out, err := e.dcmtk(t, "echoscu", "-v", "-aet", "MODALITY1", "-aec", "DICOMEDGE", e.host(), e.port())
	if err != nil {
		t.Fatalf("echoscu +tls to the edge's AE: %v\n%s", err, out)
	}
	acc := e.waitEvent(t, "association.accepted (answer)", func(ev audit.Event) bool { return ev.Event == audit.EventAccepted })
	if acc.Action != "answer" || acc.Rule != "echo" || acc.Client == nil || acc.Client.CN != "client" || acc.CallingAE != "MODALITY1" {
		t.Errorf("accepted event = %+v", acc)
	}
	d := e.waitEvent(t, "dimse C-ECHO", func(ev audit.Event) bool { return ev.Event == audit.EventDIMSE })
	if d.Service != "C-ECHO" || d.Status != "0x0000" || d.Allowed == nil || !*d.Allowed {
		t.Errorf("dimse event = %+v", d)
	}
	e.waitEvent(t, "association.released", func(ev audit.Event) bool { return ev.Event == audit.EventReleased })
}

func TestRelayEchoToStoreSCP(t *testing.T) {
	testpeer.Require(t, "echoscu", "storescp")
	scp := testpeer.StartStoreSCP(t, "STORESCP")
	e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", scp.Addr, "STORESCP"), Rules: storeRules(`"C-ECHO", "C-STORE"`)})
	out, err := e.dcmtk(t, "echoscu", "-v", "-aet", "MODALITY1", "-aec", "MAINPACS", e.host(), e.port())
	if err != nil {
		t.Fatalf("echoscu +tls through the edge: %v\n%s", err, out)
	}
	acc := e.waitEvent(t, "association.accepted (relay)", func(ev audit.Event) bool { return ev.Event == audit.EventAccepted })
	if acc.Action != "relay" || acc.Backend != "pacs" || acc.CalledAE != "MAINPACS" {
		t.Errorf("accepted event = %+v", acc)
	}
	d := e.waitEvent(t, "dimse C-ECHO", func(ev audit.Event) bool { return ev.Event == audit.EventDIMSE })
	if d.Service != "C-ECHO" || d.Status != "0x0000" {
		t.Errorf("dimse event = %+v", d)
	}
	rel := e.waitEvent(t, "association.released", func(ev audit.Event) bool { return ev.Event == audit.EventReleased })
	if rel.BytesIn == 0 || rel.BytesOut == 0 {
		t.Errorf("released without byte counts: %+v", rel)
	}
}

// 50 large instances (512 KiB to 2 MiB of pixel data) through the edge
// must arrive with byte-identical data sets, each audited with its status.
func TestRelayStoreFiftyLargeInstances(t *testing.T) {
	testpeer.Require(t, "storescu", "storescp")
	scp := testpeer.StartStoreSCP(t, "STORESCP")
	e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", scp.Addr, "STORESCP"), Rules: storeRules(`"C-ECHO", "C-STORE"`)})
	dir := t.TempDir()
	var paths []string
	want := map[string][]byte{}
	// Three sizes: 512 KiB, 1 MiB and 2 MiB of pixel data.
	for i, dims := range [][2]int{{512, 512}, {512, 1024}, {1024, 1024}} {
		n := []int{30, 12, 8}[i]
		p, ds := testpeer.WriteDICOMFiles(t, filepath.Join(dir, fmt.Sprint(i)), fmt.Sprintf("PAT%d", i), n, dims[0], dims[1])
		paths = append(paths, p...)
		for k, v := range ds {
			want[k] = v
		}
	}
	if len(want) != 50 {
		t.Fatalf("generated %d instances, want 50", len(want))
	}
	args := append([]string{"-aet", "MODALITY1", "-aec", "MAINPACS", e.host(), e.port()}, paths...)
	out, err := e.dcmtk(t, "storescu", args...)
	if err != nil {
		t.Fatalf("storescu +tls through the edge: %v\n%s", err, out)
	}
	got := scp.Received(t)
	if len(got) != len(want) {
		t.Fatalf("storescp received %d instances, want %d", len(got), len(want))
	}
	for uid, ds := range want {
		if !bytes.Equal(got[uid], ds) {
			t.Errorf("instance %s: data set differs after the relay (got %d bytes, want %d)", uid, len(got[uid]), len(ds))
		}
	}
	e.waitEvent(t, "association.released", func(ev audit.Event) bool { return ev.Event == audit.EventReleased })
	stores := 0
	for _, ev := range e.events(t) {
		if ev.Event == audit.EventDIMSE && ev.Service == "C-STORE" {
			stores++
			if ev.Status != "0x0000" || ev.SOPInstance == "" || want[ev.SOPInstance] == nil || ev.Bytes < 512<<10 ||
				!strings.HasPrefix(ev.PatientID, "PAT") {
				t.Errorf("C-STORE audit record = %+v", ev)
			}
		}
	}
	if stores != 50 {
		t.Errorf("%d C-STORE audit records, want 50", stores)
	}
}
