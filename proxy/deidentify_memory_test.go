package proxy

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// TestDeidentifyLargeInstanceBounded relays a multi-frame CT of 1 GiB of
// pixel data (256 MiB under the race detector, which slows every copy)
// de-identified, from a Go client over TLS to a real storescp: the edge's
// memory (this process's RSS, sampled throughout) grows by less than
// 16 MiB, the pixel data never being held, and the sender hears success
// for its own SOP Instance UID.
func TestDeidentifyLargeInstanceBounded(t *testing.T) {
	testpeer.Require(t, "storescp")
	frames := 2048 // 512 × 512 × 16 bits: 512 KiB a frame
	if raceEnabled {
		frames = 512
	}
	scp := testpeer.StartStoreSCP(t, "STORESCP", "--ignore")
	keyFile := filepath.Join(t.TempDir(), "deid.key")
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	e := startEdge(t, edgeOptions{Quiet: true, Backends: backendBlock("pacs", scp.Addr, "STORESCP") + fmt.Sprintf(`
deidentify "big" {
  key_file = %q
}
`, keyFile), Rules: modalityRelayRule(`services = ["C-ECHO", "C-STORE"]
    deidentify = "big"`)})

	res := storeLargeCT(t, e, frames)
	t.Logf("%d MiB of pixel data relayed de-identified; RSS before %.1f MiB, peak %.1f MiB (grew %.1f MiB); Go heap in use before %.1f MiB, peak %.1f MiB",
		res.pixelLen>>20, mib(res.before.rss), mib(res.peakRSS), float64(res.rssGrew())/(1<<20), mib(res.before.heap), mib(res.peakHeap))
	if res.rsp.Status != dimse.StatusSuccess || res.rsp.AffectedSOPInstanceUID != largeCTUID {
		t.Fatalf("response status 0x%04X for %q, want success for %q", res.rsp.Status, res.rsp.AffectedSOPInstanceUID, largeCTUID)
	}
	grew, heapGrew := res.rssGrew(), res.heapGrew()
	switch {
	case raceEnabled && heapGrew > 16<<20:
		// The race detector's shadow memory follows every byte touched, so
		// RSS says little there; the Go heap is what the edge holds.
		t.Errorf("Go heap in use grew %.1f MiB relaying the instance, bound 16 MiB", float64(heapGrew)/(1<<20))
	case !raceEnabled && grew > 16<<20:
		t.Errorf("RSS grew %.1f MiB relaying the instance, bound 16 MiB", float64(grew)/(1<<20))
	}
}

// largeCT is what storeLargeCT saw: the response, and this process's
// memory before and at its peak while the instance went through.
type largeCT struct {
	rsp               *dimse.Command
	before            memSample
	peakRSS, peakHeap uint64
	header            []byte
	pixelLen          int
}

func (r largeCT) rssGrew() int64  { return int64(r.peakRSS) - int64(r.before.rss) }
func (r largeCT) heapGrew() int64 { return int64(r.peakHeap) - int64(r.before.heap) }

// pcCT is the presentation context of CT Image Storage (Explicit VR
// Little Endian) that ctAssociation proposes.
const pcCT = 3

// ctAssociation opens a Go client's TLS association through e as
// MODALITY1 → MAINPACS with Verification and CT Image Storage (pcCT)
// proposed, and fails unless the CT context is accepted.
func ctAssociation(t *testing.T, e *testEdge) (*tls.Conn, *association.AssociateAC) {
	t.Helper()
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	rq := echoRQ("MODALITY1", "MAINPACS")
	rq.PresentationContexts = append(rq.PresentationContexts, association.PresentationContextRQ{ID: pcCT,
		AbstractSyntax: ctImageStorage, TransferSyntaxes: []string{association.ExplicitVRLittleEndian}})
	ac := associate(t, c, rq)
	if pc, ok := ac.AcceptedContext(pcCT); !ok || pc.Result != association.PCAcceptance {
		t.Fatalf("CT context not accepted: %+v", ac.PresentationContexts)
	}
	return c, ac
}

// largeCTUID is the SOP Instance UID of the instance storeLargeCT sends.
const largeCTUID = "1.2.826.0.1.3680043.10.543.77"

// storeLargeCT sends one C-STORE of a multi-frame CT of frames × 512 KiB
// from a Go client over TLS through e, the pixel data in PDVs as large as
// the edge's AC allows from one reused buffer (the client makes no
// garbage), sampling this process's RSS and Go heap every 20 ms, and
// returns the response.
func storeLargeCT(t *testing.T, e *testEdge, frames int) largeCT {
	t.Helper()
	c, ac := ctAssociation(t, e)
	cmd := &dimse.Command{CommandField: dimse.CStoreRQ, MessageID: 1, AffectedSOPClassUID: ctImageStorage,
		AffectedSOPInstanceUID: largeCTUID, CommandDataSetType: 0} // any value but 0x0101: a data set follows
	res := largeCT{header: buildLargeHeader(frames), pixelLen: frames * 512 * 512 * 2}
	var mu sync.Mutex
	done := make(chan struct{})
	res.before = memNow()
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
				r := rssNow()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				mu.Lock()
				res.peakRSS, res.peakHeap = max(res.peakRSS, r), max(res.peakHeap, ms.HeapInuse)
				mu.Unlock()
			}
		}
	}()
	_ = c.SetDeadline(time.Now().Add(10 * time.Minute))
	if err := dimse.WriteMessage(c, pcCT, cmd, nil, ac.UserInfo.MaxLength); err != nil {
		t.Fatal(err)
	}
	// The edge holds the client to the maximum length its AC announced.
	chunk := make([]byte, min(int(ac.UserInfo.MaxLength), 256<<10)-12)
	pdu := make([]byte, 0, len(chunk)+64)
	send := func(data []byte, last bool) {
		mch := byte(0)
		if last {
			mch = 2
		}
		pdu = append(pdu[:0], byte(association.TypePDataTF), 0)
		pdu = binary.BigEndian.AppendUint32(pdu, uint32(len(data)+6))
		pdu = binary.BigEndian.AppendUint32(pdu, uint32(len(data)+2))
		pdu = append(pdu, pcCT, mch)
		pdu = append(pdu, data...)
		if _, err := c.Write(pdu); err != nil {
			t.Fatalf("writing the data set: %v", err)
		}
	}
	send(res.header, false)
	for sent := 0; sent < res.pixelLen; {
		n := min(len(chunk), res.pixelLen-sent)
		sent += n
		send(chunk[:n], sent == res.pixelLen)
	}
	res.rsp = readResponseWithin(t, c, 0)
	close(done)
	mu.Lock()
	defer mu.Unlock()
	return res
}

// buildLargeHeader is a multi-frame CT's data set up to the header of a
// Pixel Data element of frames × 512 KiB.
func buildLargeHeader(frames int) []byte {
	var b []byte
	b = leakElement(b, 0x00080016, "UI", []byte(ctImageStorage))
	b = leakElement(b, 0x00080018, "UI", []byte(largeCTUID))
	b = leakElement(b, 0x00080020, "DA", []byte("20260101"))
	b = leakElement(b, 0x00080050, "SH", []byte("ACCBIG"))
	b = leakElement(b, 0x00080060, "CS", []byte("CT"))
	b = leakElement(b, 0x00100010, "PN", []byte("BIG^PATIENT"))
	b = leakElement(b, 0x00100020, "LO", []byte("BIGPAT"))
	b = leakElement(b, 0x0020000D, "UI", []byte("1.2.826.0.1.3680043.10.543.78"))
	b = leakElement(b, 0x0020000E, "UI", []byte("1.2.826.0.1.3680043.10.543.79"))
	b = leakElement(b, 0x00280002, "US", []byte{1, 0})
	b = leakElement(b, 0x00280004, "CS", []byte("MONOCHROME2"))
	b = leakElement(b, 0x00280008, "IS", []byte(fmt.Sprint(frames)))
	b = leakElement(b, 0x00280010, "US", []byte{0, 2})
	b = leakElement(b, 0x00280011, "US", []byte{0, 2})
	b = leakElement(b, 0x00280100, "US", []byte{16, 0})
	b = leakElement(b, 0x00280101, "US", []byte{16, 0})
	b = leakElement(b, 0x00280102, "US", []byte{15, 0})
	b = leakElement(b, 0x00280103, "US", []byte{0, 0})
	b = append(b, 0xe0, 0x7f, 0x10, 0x00, 'O', 'W', 0, 0)
	return binary.LittleEndian.AppendUint32(b, uint32(frames*512*512*2))
}

// TestDeidentifyOffersOnlyWhatItRewrites: on a de-identifying rule the
// backend is never offered Deflated Explicit VR Little Endian or Explicit
// VR Big Endian (the transform cannot rewrite them): a context proposing
// only those is refused, one proposing them beside Explicit VR Little
// Endian is accepted with that.
func TestDeidentifyOffersOnlyWhatItRewrites(t *testing.T) {
	testpeer.Require(t, "storescp")
	scp := testpeer.StartStoreSCP(t, "STORESCP")
	keyFile := filepath.Join(t.TempDir(), "deid.key")
	if err := os.WriteFile(keyFile, make([]byte, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", scp.Addr, "STORESCP") + fmt.Sprintf(`
deidentify "d" {
  key_file = %q
}
`, keyFile), Rules: modalityRelayRule(`services = ["C-ECHO", "C-STORE"]
    deidentify = "d"`)})
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	rq := echoRQ("MODALITY1", "MAINPACS")
	const deflated, bigEndian = "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"
	rq.PresentationContexts = append(rq.PresentationContexts,
		association.PresentationContextRQ{ID: 3, AbstractSyntax: ctImageStorage, TransferSyntaxes: []string{deflated, bigEndian}},
		association.PresentationContextRQ{ID: 5, AbstractSyntax: ctImageStorage, TransferSyntaxes: []string{deflated, association.ExplicitVRLittleEndian}})
	ac := associate(t, c, rq)
	if pc, ok := ac.AcceptedContext(3); ok && pc.Result == association.PCAcceptance {
		t.Errorf("a context of deflated and big endian only was accepted: %+v", pc)
	}
	if pc, ok := ac.AcceptedContext(5); !ok || pc.Result != association.PCAcceptance || pc.TransferSyntax != association.ExplicitVRLittleEndian {
		t.Errorf("context 5: %+v, want Explicit VR Little Endian accepted", pc)
	}
}
