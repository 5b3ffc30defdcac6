package proxy

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
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

// TestStoreAndForwardLargeInstanceBounded streams a 512 MiB multi-frame CT
// (128 MiB under the race detector) into the spool from a Go client over
// TLS: the Go heap in use grows by less than 16 MiB (the instance is
// never held), the sender hears success only once it is in the queue, and
// the queued file is the whole instance.
func TestStoreAndForwardLargeInstanceBounded(t *testing.T) {
	frames := 1024
	if raceEnabled {
		frames = 256
	}
	e := startEdge(t, edgeOptions{Quiet: true, Backends: backendBlock("pacs", testpeer.FreeAddr(t), "STORESCP"), Rules: sfRule()})
	res := storeLargeCT(t, e, frames)
	header, pixelLen, heapGrew := res.header, res.pixelLen, res.heapGrew()
	t.Logf("%d MiB of pixel data spooled; Go heap in use before %.1f MiB, peak %.1f MiB", pixelLen>>20, mib(res.before.heap), mib(res.peakHeap))
	if res.rsp.Status != dimse.StatusSuccess || res.rsp.AffectedSOPInstanceUID != largeCTUID {
		t.Fatalf("response status 0x%04X for %q, want success", res.rsp.Status, res.rsp.AffectedSOPInstanceUID)
	}
	if heapGrew > 16<<20 {
		t.Errorf("Go heap in use grew %.1f MiB spooling the instance, bound 16 MiB", float64(heapGrew)/(1<<20))
	}
	list, _ := e.Server.Spool.List("pacs", spool.Queued)
	if len(list) != 1 {
		t.Fatalf("queue holds %d instances", len(list))
	}
	fi, _ := os.Stat(list[0].Path)
	f, _ := os.Open(list[0].Path)
	defer f.Close()
	fm, err := spool.ReadFileMeta(f)
	if err != nil || fi.Size()-fm.DataOffset != int64(len(header)+pixelLen) {
		t.Fatalf("the queued file holds %d data set bytes, %d were sent (%v)", fi.Size()-fm.DataOffset, len(header)+pixelLen, err)
	}
}

// A data set out of tag order (PS3.5 7.1) on a store-and-forward rule is
// refused as on a relay: A-ABORT before the instance completes, nothing in
// the spool, the dimse record saying malformed-data-set.
func TestStoreAndForwardRefusesUnsortedDataSet(t *testing.T) {
	e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", testpeer.FreeAddr(t), "STORESCP"), Rules: sfRule()})
	c, ac := ctAssociation(t, e)
	var ds []byte
	ds = leakElement(ds, 0x00100020, "LO", []byte("PAT1"))
	ds = leakElement(ds, 0x00080018, "UI", []byte("1.2.3.4")) // before (0010,0020): out of order
	cmd := &dimse.Command{CommandField: dimse.CStoreRQ, MessageID: 7, AffectedSOPClassUID: ctImageStorage,
		AffectedSOPInstanceUID: "1.2.3.4", CommandDataSetType: 0}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := dimse.WriteMessage(c, pcCT, cmd, ds, ac.UserInfo.MaxLength); err != nil {
		t.Fatal(err)
	}
	expectAbort(t, c, association.AbortInvalidPDUParameterValue)
	if list, _ := e.Server.Spool.List("pacs", spool.Queued); len(list) != 0 {
		t.Fatalf("an unsorted data set was spooled: %+v", list)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		for _, ev := range e.events(t) {
			if ev.Event == audit.EventDIMSE && ev.MessageID == 7 {
				if !strings.Contains(ev.Detail, "malformed-data-set: (0008,0018) after (0010,0020)") || ev.Status != "" {
					t.Fatalf("dimse record %+v", ev)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no dimse record for the refused C-STORE")
		}
	}
}

// A backend that accepts the TCP connection and then says nothing holds
// the forwarder in its A-ASSOCIATE-RQ; a shutdown still ends at once.
func TestForwarderStopsPromptlyOnASilentBackend(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c // held open, never answered
		}
	}()
	e := startEdge(t, edgeOptions{Quiet: true, Backends: backendBlock("pacs", ln.Addr().String(), "SILENT"), Rules: sfRule()})
	w, err := e.Server.Spool.Create("pacs", spool.Meta{SOPClass: ctImageStorage, SOPInstance: "1.2.3", TransferSyntax: association.ExplicitVRLittleEndian})
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte{8, 0, 0x18, 0, 'U', 'I', 2, 0, '1', 0})
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-accepted:
		defer c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("the forwarder never connected")
	}
	start := time.Now()
	done := make(chan struct{})
	go func() { e.Server.stopForwarders(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("stopping the forwarders waited on the silent backend")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("stopping took %v", d)
	}
	if list, _ := e.Server.Spool.List("pacs", spool.Queued); len(list) != 1 {
		t.Errorf("the undelivered instance is no longer queued: %d", len(list))
	}
}

// A reload that moves the backend restarts its forwarder with the new
// address: what the spool held for the old one goes to the new one.
func TestForwarderFollowsAReloadedBackend(t *testing.T) {
	testpeer.Require(t, "storescp")
	e := startEdge(t, edgeOptions{Quiet: true, Backends: backendBlock("pacs", testpeer.FreeAddr(t), "STORESCP"), Rules: sfRule()})
	for i := range 3 {
		w, err := e.Server.Spool.Create("pacs", spool.Meta{SOPClass: ctImageStorage, SOPInstance: "1.2.3." + strconv.Itoa(i+1), TransferSyntax: association.ExplicitVRLittleEndian})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(leakElement(nil, 0x00080018, "UI", []byte("1.2.3."+strconv.Itoa(i+1))))
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	scp := testpeer.StartStoreSCP(t, "STORESCP")
	o := e.opts
	o.Backends = backendBlock("pacs", scp.Addr, "STORESCP")
	if err := os.WriteFile(e.file, []byte(o.source(e.pki, "", "")), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Server.ReloadFile(e.file); err != nil {
		t.Fatalf("reload: %v", err)
	}
	for deadline := time.Now().Add(20 * time.Second); scp.Count() < 3; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("storescp received %d of 3 after the reload", scp.Count())
		}
	}
	if list, _ := e.Server.Spool.List("pacs", spool.Queued); len(list) != 0 {
		t.Errorf("%d still queued", len(list))
	}
}

// The edge, receiving for the backend, acknowledges only a data set that
// is whole and names the instance and class of its command: an empty one,
// one cut inside an element, or one whose (0008,0018) or (0008,0016) is
// not the command's gets its failure status and nothing is spooled; the
// association goes on.
func TestStoreAndForwardJudgesTheDataSetBeforeTheAck(t *testing.T) {
	e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", testpeer.FreeAddr(t), "STORESCP"), Rules: sfRule()})
	c, ac := ctAssociation(t, e)
	dataSet := func(class, inst string) []byte {
		var ds []byte
		if class != "" {
			ds = leakElement(ds, 0x00080016, "UI", []byte(class))
		}
		if inst != "" {
			ds = leakElement(ds, 0x00080018, "UI", []byte(inst))
		}
		return leakElement(ds, 0x00100020, "LO", []byte("PAT1"))
	}
	whole := dataSet(ctImageStorage, "1.2.3.4")
	for i, tc := range []struct {
		name   string
		ds     []byte
		status uint16
	}{
		{"empty", nil, dimse.StatusDataSetMismatch},
		{"cut inside an element", whole[:len(whole)-2], dimse.StatusUnableToProcess},
		{"another SOP Instance UID", dataSet(ctImageStorage, "1.2.3.5"), dimse.StatusDataSetMismatch},
		{"no SOP Instance UID", dataSet(ctImageStorage, ""), dimse.StatusDataSetMismatch},
		{"another SOP Class UID", dataSet("1.2.840.10008.5.1.4.1.1.4", "1.2.3.4"), dimse.StatusDataSetMismatch},
		{"whole", whole, dimse.StatusSuccess},
	} {
		cmd := &dimse.Command{CommandField: dimse.CStoreRQ, MessageID: uint16(10 + i), AffectedSOPClassUID: ctImageStorage,
			AffectedSOPInstanceUID: "1.2.3.4", CommandDataSetType: 0}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := dimse.WriteMessage(c, pcCT, cmd, tc.ds, ac.UserInfo.MaxLength); err != nil {
			t.Fatal(err)
		}
		if len(tc.ds) == 0 {
			// One data-set PDV with no bytes, the last (PS3.8 E.2).
			if _, err := c.Write([]byte{byte(association.TypePDataTF), 0, 0, 0, 0, 6, 0, 0, 0, 2, pcCT, 0b10}); err != nil {
				t.Fatal(err)
			}
		}
		if rsp := readResponse(t, c); rsp.Status != tc.status {
			t.Errorf("%s: status %#04x (%q), want %#04x", tc.name, rsp.Status, rsp.ErrorComment, tc.status)
		}
		want := 0
		if tc.status == dimse.StatusSuccess {
			want = 1
		}
		if list, _ := e.Server.Spool.List("pacs", spool.Queued); len(list) != want {
			t.Errorf("%s: %d spooled, want %d", tc.name, len(list), want)
		}
	}
}
