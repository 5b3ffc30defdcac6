package proxy

import (
	"encoding/binary"
	"io"
	"os"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/spool"
)

// FuzzStoreAndForwardIngest drives the edge's store-and-forward receiver
// with any sequence of PDVs after a real association over TLS: commands
// and data-set fragments on any presentation context, in any order, cut
// anywhere. Whatever comes, the edge answers or aborts without crashing,
// every file in the queue is a whole Part 10 file, and once the
// association is over no write is left half done (the spool's count of
// bytes is what its queue holds).
func FuzzStoreAndForwardIngest(f *testing.F) {
	store := (&dimse.Command{CommandField: dimse.CStoreRQ, MessageID: 1, AffectedSOPClassUID: ctImageStorage,
		AffectedSOPInstanceUID: "1.2.3.4", CommandDataSetType: 0}).Encode()
	echo := (&dimse.Command{CommandField: dimse.CEchoRQ, MessageID: 2, AffectedSOPClassUID: association.VerificationSOPClass,
		CommandDataSetType: dimse.NoDataSet}).Encode()
	var ds []byte
	ds = leakElement(ds, 0x00080018, "UI", []byte("1.2.3.4"))
	ds = leakElement(ds, 0x00100020, "LO", []byte("PAT"))
	pdv := func(ctrl byte, data []byte) []byte { return append([]byte{ctrl, byte(len(data))}, data...) }
	// ctrl: bit 0 command, bit 1 last, bits 2-3 the context (1, 3, 5 or 7).
	f.Add(append(append(pdv(0b0111, store), pdv(0b0110, ds[:10])...), pdv(0b0110|0, ds[10:])...))
	f.Add(append(pdv(0b0111, store), pdv(0b0010|0b0100, ds)...))
	f.Add(append(pdv(0b0011, echo), pdv(0b0111, store)...))
	f.Add(pdv(0b0110, ds))
	f.Add(append(pdv(0b0101, store[:20]), pdv(0b0111, store[20:])...))
	e := startEdge(f, edgeOptions{Quiet: true, Backends: backendBlock("pacs", "127.0.0.1:1", "PACS"), Rules: sfRule()})
	sp := e.Server.Spool
	f.Fuzz(func(t *testing.T, script []byte) {
		// Bounded, not skipped: a longer input is cut, so that every run
		// drives an association.
		script = script[:min(len(script), 4096)]
		c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
		rq := echoRQ("MODALITY1", "MAINPACS")
		rq.PresentationContexts = append(rq.PresentationContexts, association.PresentationContextRQ{ID: 3,
			AbstractSyntax: ctImageStorage, TransferSyntaxes: []string{association.ExplicitVRLittleEndian}})
		associate(t, c, rq)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		// The edge's answers are read as they come, so it never waits on a
		// client that does not read; its A-RELEASE-RP or A-ABORT ends the
		// association (after an A-ABORT the edge waits for the client to
		// close).
		drained, ended := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(drained)
			rd := association.NewReader(c, 1<<20)
			once := false
			for {
				typ, _, err := rd.Next()
				if err != nil {
					_, _ = io.Copy(io.Discard, c)
					break
				}
				if !once && (typ == association.TypeReleaseRP || typ == association.TypeAbort) {
					once = true
					close(ended)
				}
			}
			if !once {
				close(ended)
			}
		}()
		for len(script) >= 2 {
			ctrl, n := script[0], int(script[1])
			script = script[2:]
			n = min(n, len(script))
			data := script[:n]
			script = script[n:]
			pdu := []byte{byte(association.TypePDataTF), 0}
			pdu = binary.BigEndian.AppendUint32(pdu, uint32(len(data)+6))
			pdu = binary.BigEndian.AppendUint32(pdu, uint32(len(data)+2))
			pdu = append(pdu, 1+2*(ctrl>>2&3), ctrl&3)
			pdu = append(pdu, data...)
			if _, err := c.Write(pdu); err != nil {
				break // aborted by the edge
			}
		}
		_ = association.WritePDU(c, &association.ReleaseRQ{})
		// Released, the edge closes; after its A-ABORT it waits for us to.
		select {
		case <-ended:
		case <-time.After(5 * time.Second):
		}
		c.Close()
		<-drained
		// The association's goroutine ends shortly after the socket.
		deadline := time.Now().Add(5 * time.Second)
		for e.Server.active.Load() != 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if e.Server.active.Load() != 0 {
			t.Fatal("the association did not end")
		}
		list, err := sp.List("pacs", spool.Queued)
		if err != nil {
			t.Fatal(err)
		}
		var queued int64
		for _, en := range list {
			fi, err := os.Stat(en.Path)
			if err != nil {
				t.Fatal(err)
			}
			fh, _ := os.Open(en.Path)
			fm, err := spool.ReadFileMeta(fh)
			fh.Close()
			if err != nil || fm.DataOffset >= fi.Size() {
				t.Fatalf("a queued file is not a whole Part 10 file: %v", err)
			}
			queued += fi.Size()
		}
		if used := sp.Used(); used != queued {
			t.Fatalf("the spool counts %d bytes, its queue holds %d: a write was left open", used, queued)
		}
		if _, err := sp.Purge("", 0); err != nil {
			t.Fatal(err)
		}
	})
}
