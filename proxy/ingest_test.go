package proxy

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/internal/testpeer"
	"github.com/dicomedge/dicomedge/spool"
)

// On a store-and-forward rule the edge answers C-ECHO itself and each
// C-STORE from the spool: four storescu +tls at once, the backend down;
// every instance is in the queue with its data set byte for byte as sent,
// its File Meta naming the sender, one spool.stored and one dimse record
// (success) each.
func TestStoreAndForwardIngestWithDCMTK(t *testing.T) {
	testpeer.Require(t, "storescu", "echoscu")
	p := sharedPKI(t)
	e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", testpeer.FreeAddr(t), "STORESCP"), Rules: sfRule()})
	tlsArgs := []string{"+tls", p.clientKey, p.clientCert, "+cf", p.ca}
	args := func(tool string, extra ...string) []string {
		return append(append(append([]string{}, tlsArgs...), "-aet", "MODALITY1", "-aec", "MAINPACS", e.host(), strconv.Itoa(testpeer.Port(e.Addr))), extra...)
	}
	if out, err := testpeer.Run(testpeer.Context(t, 30*time.Second), "echoscu", args("echoscu")...); err != nil {
		t.Fatalf("echoscu answered by the store-and-forward rule: %v\n%s", err, out)
	}
	files, sent := testpeer.WriteDICOMFiles(t, filepath.Join(t.TempDir(), "img"), "PAT-INGEST", 20, 64, 64)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			var mine []string
			for i := g; i < len(files); i += 4 {
				mine = append(mine, files[i])
			}
			out, err := testpeer.Run(testpeer.Context(t, time.Minute), "storescu", args("storescu", mine...)...)
			if err != nil {
				t.Errorf("storescu: %v\n%s", err, out)
			}
		})
	}
	wg.Wait()
	list, err := e.Server.Spool.List("pacs", spool.Queued)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(files) {
		t.Fatalf("the queue holds %d instances, %d were sent", len(list), len(files))
	}
	for _, en := range list {
		b, err := os.ReadFile(en.Path)
		if err != nil {
			t.Fatal(err)
		}
		fm, err := spool.ReadFileMeta(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b[fm.DataOffset:], sent[fm.SOPInstance]) {
			t.Errorf("%s: the spooled data set differs from what was sent", fm.SOPInstance)
		}
		if fm.TransferSyntax != testpeer.ExplicitVRLittleEndian || en.Meta.CallingAE != "MODALITY1" || en.Meta.CalledAE != "MAINPACS" || en.Meta.Rule != "modalities" || en.Meta.Listener != "edge" {
			t.Errorf("%s: meta %+v", fm.SOPInstance, en.Meta)
		}
	}
	// spool.stored is written before each acknowledgement; the dimse
	// record follows the response.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		n := 0
		for _, ev := range e.events(t) {
			if ev.Event == audit.EventDIMSE && ev.Service == "C-STORE" {
				n++
			}
		}
		if n == len(files) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d C-STORE dimse records, want %d", n, len(files))
		}
	}
	stored := 0
	for _, ev := range e.events(t) {
		if ev.Event == audit.EventSpoolStored {
			stored++
		}
	}
	if stored != len(files) {
		t.Errorf("%d spool.stored records, want %d", stored, len(files))
	}
	stores := 0
	for _, ev := range e.events(t) {
		if ev.Event == audit.EventDIMSE && ev.Service == "C-STORE" {
			stores++
			if ev.Status != "0x0000" || ev.Backend != "pacs" || ev.Bytes == 0 {
				t.Errorf("dimse record %+v", ev)
			}
		}
	}
	if stores != len(files) {
		t.Errorf("%d C-STORE dimse records, want %d", stores, len(files))
	}
}
