package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// The fault suite: the running edge under a failing backend, failing or
// hostile clients, floods and reloads. Each case checks, besides its own
// outcome, what every fault must leave behind (faultBaseline.check): no
// goroutine or descriptor more than before, heap growth bounded, an end
// event for every association the trail shows accepted, and a
// well-behaved client served. Counts and times are bounded, so the suite
// runs in well under a minute.

// faultBaseline is what a case measures before the fault.
type faultBaseline struct {
	goroutines, fds int
	heap            uint64
}

func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

func takeBaseline() faultBaseline {
	return faultBaseline{goroutines: runtime.NumGoroutine(), fds: openFDs(), heap: heapInUse()}
}

// maxHeapGrowth bounds what a fault may leave the heap grown by.
const maxHeapGrowth = 64 << 20

// check waits (bounded) for the edge to settle after the fault, then
// checks that it leaked nothing, bounded its memory, recorded an end for
// every association it accepted, and still serves a well-behaved client.
func (b faultBaseline) check(t *testing.T, e *testEdge) {
	t.Helper()
	if err := serveOne(e, "127.0.0.1"); err != nil {
		t.Errorf("a well-behaved client after the fault: %v", err)
	}
	var g, fds int
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		runtime.GC()
		g, fds = runtime.NumGoroutine(), openFDs()
		if g <= b.goroutines && fds <= b.fds || time.Now().After(deadline) {
			break
		}
	}
	if g > b.goroutines {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Errorf("goroutines: %d before the fault, %d after\n%s", b.goroutines, g, buf[:n])
	}
	if fds > b.fds {
		t.Errorf("open descriptors: %d before the fault, %d after", b.fds, fds)
	}
	if h := heapInUse(); h > b.heap+maxHeapGrowth {
		t.Errorf("heap in use grew from %d to %d bytes", b.heap, h)
	}
	var missing []string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		missing = missing[:0]
		ended := map[string]bool{}
		var accepted []string
		for _, ev := range e.events(t) {
			switch ev.Event {
			case audit.EventAccepted:
				accepted = append(accepted, ev.Assoc)
			case audit.EventReleased, audit.EventAborted:
				ended[ev.Assoc] = true
			}
		}
		for _, a := range accepted {
			if !ended[a] {
				missing = append(missing, a)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d accepted associations have no end event in the audit trail: %v", len(missing), missing)
	}
}

// serveOne is a well-behaved client from loopback address src: TLS, an
// A-ASSOCIATE-RQ answered by the edge, A-RELEASE.
func serveOne(e *testEdge, src string) error {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	raw, err := d.Dial("tcp", e.Addr)
	if err != nil {
		return err
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(15 * time.Second))
	pair, err := tls.LoadX509KeyPair(e.pki.clientCert, e.pki.clientKey)
	if err != nil {
		return err
	}
	pem, err := os.ReadFile(e.pki.ca)
	if err != nil {
		return err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: poolOf(pem), ServerName: "localhost"}
	c := tls.Client(raw, cfg)
	if err := association.WritePDU(c, echoRQ("GOODCLIENT", "DICOMEDGE")); err != nil {
		return fmt.Errorf("A-ASSOCIATE-RQ: %w", err)
	}
	rd := association.NewReader(c, 1<<20)
	p, err := rd.ReadPDU()
	if err != nil {
		return fmt.Errorf("waiting for A-ASSOCIATE-AC: %w", err)
	}
	if _, ok := p.(*association.AssociateAC); !ok {
		return fmt.Errorf("got %T, want A-ASSOCIATE-AC", p)
	}
	if err := association.WritePDU(c, &association.ReleaseRQ{}); err != nil {
		return err
	}
	if p, err = rd.ReadPDU(); err != nil {
		return fmt.Errorf("waiting for A-RELEASE-RP: %w", err)
	}
	if _, ok := p.(*association.ReleaseRP); !ok {
		return fmt.Errorf("got %T, want A-RELEASE-RP", p)
	}
	return nil
}

// relayClient associates with the edge for a relay to MAINPACS, proposing
// Verification, Secondary Capture and Study Root FIND.
func relayClient(t *testing.T, e *testEdge) (*tls.Conn, association.PDU) {
	t.Helper()
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	rq := echoRQ("MODALITY1", "MAINPACS")
	rq.PresentationContexts = append(rq.PresentationContexts,
		association.PresentationContextRQ{ID: pcSC, AbstractSyntax: association.SecondaryCaptureImageStorage, TransferSyntaxes: []string{association.ExplicitVRLittleEndian}},
		association.PresentationContextRQ{ID: pcFind, AbstractSyntax: studyRootFind, TransferSyntaxes: []string{association.ExplicitVRLittleEndian}})
	if err := association.WritePDU(c, rq); err != nil {
		t.Fatal(err)
	}
	p, err := readPDU(t, c, 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return c, p
}

const faultRelay = `services = ["C-ECHO", "C-STORE", "C-FIND"]`

// A backend that refuses connections: every client gets A-ASSOCIATE-RJ
// 2/3/1 at once, audited.
func TestFaultBackendRefuses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", addr, "PACS"), Rules: modalityRelayRule(faultRelay)})
	b := takeBaseline()
	for range 20 {
		c, p := relayClient(t, e)
		rj, ok := p.(*association.AssociateRJ)
		if !ok || rj.Result != association.RejectTransient || rj.Source != association.RejectSourceServiceProviderPresentation || rj.Reason != 1 {
			t.Fatalf("got %+v, want A-ASSOCIATE-RJ 2/3/1", p)
		}
		c.Close()
	}
	e.waitEvent(t, "backend-unreachable", func(ev audit.Event) bool {
		return ev.Event == audit.EventRejected && ev.Reason == "backend-unreachable"
	})
	b.check(t, e)
}

// A backend that accepts but never answers the A-ASSOCIATE-RQ: each client
// gets A-ASSOCIATE-RJ 2/3/1 once ARTIM expires, and nothing is left
// waiting.
func TestFaultBackendStalls(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		held.Wait()
	})
	held.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // read nothing, answer nothing
			mu.Unlock()
		}
	})
	e := startEdge(t, edgeOptions{ARTIM: "2s", Backends: backendBlock("pacs", ln.Addr().String(), "PACS"), Rules: modalityRelayRule(faultRelay)})
	b := takeBaseline()
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 { // with the well-behaved client, within one source's share
		wg.Go(func() {
			c, p := relayClient(t, e)
			defer c.Close()
			if rj, ok := p.(*association.AssociateRJ); !ok || rj.Result != association.RejectTransient || rj.Reason != 1 {
				errs <- fmt.Errorf("got %+v, want A-ASSOCIATE-RJ 2/3/1", p)
			}
		})
	}
	if err := serveOne(e, "127.0.0.1"); err != nil { // served while the backend stalls others
		t.Errorf("a client of the edge's own answer path while the backend stalls: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mu.Lock() // the backend's own sockets are not the edge's
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	mu.Unlock()
	b.check(t, e)
}

// bigDataSet is a Secondary Capture data set of about n bytes of pixels.
func bigDataSet(n int) []byte {
	return testpeer.DICOMFile{PatientID: "FAULT-1", PatientName: "FAULT^TEST", StudyUID: "2.25.71", SeriesUID: "2.25.72",
		SOPInstanceUID: testInstanceUID, Rows: 512, Columns: n / 1024}.DataSet()
}

// The backend dies in the middle of a C-STORE's data set: the client gets
// A-ABORT and the association's end is audited.
func TestFaultBackendDiesMidStore(t *testing.T) {
	be := startScriptBackend(t, 16384, nil)
	e := inspectEdge(t, be, faultRelay)
	b := takeBaseline()
	c, p := relayClient(t, e)
	if _, ok := p.(*association.AssociateAC); !ok {
		t.Fatalf("got %T, want A-ASSOCIATE-AC", p)
	}
	ds := bigDataSet(4 << 20)
	sent := make(chan error, 1)
	go func() {
		sent <- dimse.WriteMessage(c, pcSC, storeCmd(1, association.SecondaryCaptureImageStorage), ds, 16384)
	}()
	for n := 0; n < 8; n++ { // the command and some of the data set reached the backend
		if be.next(t, 10*time.Second) == nil {
			t.Fatal("backend got no PDU")
		}
	}
	(<-be.conn).Close()
	if p, err := readPDU(t, c, 15*time.Second); err != nil {
		t.Fatalf("client: %v, want A-ABORT", err)
	} else if _, ok := p.(*association.Abort); !ok {
		t.Fatalf("client got %T, want A-ABORT", p)
	}
	c.Close()
	<-sent
	ev := e.waitEvent(t, "aborted", func(ev audit.Event) bool { return ev.Event == audit.EventAborted })
	if !strings.HasPrefix(ev.AbortSource, "backend") {
		t.Errorf("abort_source %q, want the backend's side", ev.AbortSource)
	}
	b.check(t, e)
}

// The client dies in the middle of a C-STORE's data set (its connection
// reset): the real storescp behind the edge gets A-ABORT, the end is
// audited.
func TestFaultClientDiesMidStore(t *testing.T) {
	testpeer.Require(t, "storescp")
	scp := testpeer.StartStoreSCP(t, "STORESCP")
	e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", scp.Addr, "STORESCP"), Rules: modalityRelayRule(faultRelay)})
	b := takeBaseline()
	for i := range 5 {
		c, p := relayClient(t, e)
		if _, ok := p.(*association.AssociateAC); !ok {
			t.Fatalf("got %T, want A-ASSOCIATE-AC", p)
		}
		ds := bigDataSet(1 << 20)
		// The command and half the data set, then the connection is gone.
		var w limitedWriter
		w.w, w.left = c, 512<<10
		_ = dimse.WriteMessage(&w, pcSC, storeCmd(uint16(i+1), association.SecondaryCaptureImageStorage), ds, 16384)
		if tc, ok := c.NetConn().(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // a reset, as when the client's host dies
		}
		c.Close()
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		n := 0
		for _, ev := range e.events(t) {
			if ev.Event == audit.EventAborted && strings.HasPrefix(ev.AbortSource, "client") {
				n++
			}
		}
		if n == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 5 associations audited as aborted by the client", n)
		}
	}
	// storescp +B writes a data set to its file as it arrives and removes
	// the file when the association is aborted: just after the edge's
	// record, the file of the last one may still be there for a moment.
	// None may stay.
	for deadline := time.Now().Add(5 * time.Second); scp.Count() != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("storescp kept %d files from cut data sets", scp.Count())
		}
	}
	b.check(t, e)
}

// limitedWriter passes on the first left bytes, then fails.
type limitedWriter struct {
	w    interface{ Write([]byte) (int, error) }
	left int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, errors.New("client gone")
	}
	n := min(len(p), l.left)
	n, err := l.w.Write(p[:n])
	l.left -= n
	if err == nil && n < len(p) {
		err = errors.New("client gone")
	}
	return n, err
}

// A client that stops reading while a large C-FIND answer comes: the edge
// holds a bounded amount (the backend is slowed down, not buffered for),
// and the association is aborted once a write to the client has waited
// idle_timeout.
func TestFaultClientStopsReading(t *testing.T) {
	be := startScriptBackend(t, 16384, nil)
	e := startEdge(t, edgeOptions{Idle: "3s", Backends: backendBlock("pacs", be.Addr, "SCRIPTED"), Rules: modalityRelayRule(faultRelay)})
	b := takeBaseline()
	c, p := relayClient(t, e)
	if _, ok := p.(*association.AssociateAC); !ok {
		t.Fatalf("got %T, want A-ASSOCIATE-AC", p)
	}
	find := &dimse.Command{CommandField: dimse.CFindRQ, MessageID: 1, AffectedSOPClassUID: studyRootFind,
		CommandDataSetType: dimse.DataSetPresent}
	if err := dimse.WriteMessage(c, pcFind, find, []byte{0x08, 0x00, 0x52, 0x00, 'C', 'S', 0x06, 0x00, 'S', 'T', 'U', 'D', 'Y', ' '}, 16384); err != nil {
		t.Fatal(err)
	}
	if _, pdus := be.nextCommand(t); len(pdus) == 0 {
		t.Fatal("backend got no C-FIND")
	}
	bc := <-be.conn
	be.conn <- bc
	// Pending responses, each with an 8 KiB identifier, until the writes
	// stall (the client reads nothing); the bytes the backend got out are
	// what the edge and the sockets between hold.
	ident := []byte{0x10, 0x00, 0x10, 0x00, 'P', 'N', 0x00, 0x20}
	ident = append(ident, []byte(strings.Repeat("X", 8192))...)
	var written atomic.Int64
	rsp := &dimse.Command{CommandField: dimse.CFindRSP, MessageIDBeingRespondedTo: 1, AffectedSOPClassUID: studyRootFind,
		CommandDataSetType: dimse.DataSetPresent, Status: dimse.StatusPending, HasStatus: true}
	for i := 0; i < 20000; i++ { // bounded: 160 MiB if nothing held back
		_ = bc.SetWriteDeadline(time.Now().Add(2 * time.Second))
		var cw countWriter
		cw.w = bc
		if err := dimse.WriteMessage(&cw, pcFind, rsp, ident, 16384); err != nil {
			written.Add(cw.n)
			break
		}
		written.Add(cw.n)
	}
	t.Logf("backend wrote %d KiB before the edge stopped reading it", written.Load()>>10)
	if w := written.Load(); w > 32<<20 {
		t.Errorf("the edge took %d MiB from the backend for a client that reads nothing, want a bound", w>>20)
	}
	ev := e.waitEvent(t, "aborted", func(ev audit.Event) bool { return ev.Event == audit.EventAborted })
	t.Logf("ended: %s %s %s", ev.AbortSource, ev.AbortReason, ev.Detail)
	c.Close()
	b.check(t, e)
}

type countWriter struct {
	w interface{ Write([]byte) (int, error) }
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Slowloris: connections that send their TLS handshake, or after it their
// A-ASSOCIATE-RQ, a byte at a time are closed by the handshake bound and
// ARTIM, while a well-behaved client is served.
func TestFaultSlowloris(t *testing.T) {
	e := startEdge(t, edgeOptions{ARTIM: "3s"})
	b := takeBaseline()
	hello := []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}
	rq, err := association.Append(nil, echoRQ("SLOW", "DICOMEDGE"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var closedEarly, stillOpen atomic.Int32
	slow := func(c net.Conn, b []byte) {
		defer c.Close()
		start := time.Now()
		for i := 0; time.Since(start) < 15*time.Second; i++ {
			if _, err := c.Write(b[i%len(b) : i%len(b)+1]); err != nil {
				closedEarly.Add(1)
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
				closedEarly.Add(1)
				return
			}
		}
		stillOpen.Add(1)
	}
	for i := range 16 {
		src := fmt.Sprintf("127.0.2.%d", i+1)
		wg.Go(func() { slow(dialFrom(t, e.Addr, src), hello) })
		wg.Go(func() {
			c := tlsClientFrom(t, e, src) // the handshake completes; the RQ crawls
			slow(c, rq)
		})
	}
	time.Sleep(500 * time.Millisecond)
	if err := serveOne(e, "127.0.0.1"); err != nil {
		t.Errorf("a well-behaved client during the slowloris: %v", err)
	}
	wg.Wait()
	if stillOpen.Load() > 0 {
		t.Errorf("%d slowloris connections still open after 15s (ARTIM 3s)", stillOpen.Load())
	}
	b.check(t, e)
}

// 10,000 connections that never complete a TLS handshake (a partial
// ClientHello, then nothing) from six addresses (their shares, 6 x 8, fit
// in the budget of 64, docs/limits.md), at most 128 open at a
// time: each is refused or closed, the audit trail stays small (the
// limiter), and well-behaved clients from elsewhere are served throughout.
func TestFaultTLSFlood(t *testing.T) {
	e := startEdge(t, edgeOptions{MaxAssociations: 16, ARTIM: "2s", Quiet: true})
	b := takeBaseline()
	const total, workers = 10000, 128
	hello := []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}
	var next atomic.Int32
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		src := &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("127.0.3.%d", w%6+1))}
		wg.Go(func() {
			d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: src}
			for next.Add(1) <= total {
				c, err := d.Dial("tcp", e.Addr)
				if err != nil {
					continue
				}
				_, _ = c.Write(hello)
				_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				_, _ = c.Read(make([]byte, 1))
				c.Close()
			}
		})
	}
	var served, failed atomic.Int32
	stop := make(chan struct{})
	var good sync.WaitGroup
	good.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if err := serveOne(e, "127.0.0.1"); err != nil {
				failed.Add(1)
				t.Logf("a well-behaved client during the flood: %v", err)
			} else {
				served.Add(1)
			}
		}
	})
	wg.Wait()
	close(stop)
	good.Wait()
	t.Logf("%d connections in %v; well-behaved clients served %d, failed %d", total, time.Since(start).Round(time.Millisecond), served.Load(), failed.Load())
	if failed.Load() > 0 || served.Load() == 0 {
		t.Errorf("well-behaved clients: %d served, %d failed during the flood", served.Load(), failed.Load())
	}
	e.Server.tlsFail.flush()
	e.Server.refused.flush()
	var records int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		records = 0
		for _, ev := range e.events(t) {
			if ev.Event == audit.EventTLSFailed || ev.Event == audit.EventConnectionRefused {
				records++
			}
		}
		if records > 0 || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("audit: %d tls.failed and connection.refused records for %d connections", records, total)
	if records > 6*(tlsFailBurst+10)*2 {
		t.Errorf("%d records for the flood: the per-source limit did not hold", records)
	}
	b.check(t, e)
}

// SIGHUP's work (policy reload and certificate rotation) during 1,000
// associations: every one is served and audited with its end; the reloads
// are audited.
func TestFaultReloadDuringAssociations(t *testing.T) {
	p := sharedPKI(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "edge.pem"), filepath.Join(dir, "edge-key.pem")
	for from, to := range map[string]string{p.edgeCert: cert, p.edgeKey: key} {
		if err := replaceFile(from, to); err != nil {
			t.Fatal(err)
		}
	}
	newCert, newKey := p.issuer.Issue(t, "edge-rotated", testpeer.CertOptions{CN: "localhost", DNS: []string{"localhost"}, IPs: []string{"127.0.0.1"}, Server: true})
	e := startEdge(t, edgeOptions{CertFile: cert, KeyFile: key, Quiet: true})
	b := takeBaseline()
	n := 1000
	if raceEnabled {
		n = 300 // the race detector makes each handshake several times slower
	}
	var next, failed atomic.Int32
	var wg sync.WaitGroup
	for range 6 { // within one source's share of the pre-association budget
		wg.Go(func() {
			for next.Add(1) <= int32(n) {
				if err := serveOne(e, "127.0.0.1"); err != nil {
					failed.Add(1)
					t.Logf("association during reloads: %v", err)
				}
			}
		})
	}
	done := make(chan struct{})
	var reloads int
	go func() {
		defer close(done)
		for i := 0; next.Load() < int32(n); i++ {
			if i%5 == 4 { // rotate the certificate now and then
				src, srcKey := p.edgeCert, p.edgeKey
				if i%10 == 4 {
					src, srcKey = newCert, newKey
				}
				if err := errors.Join(replaceFile(srcKey, key), replaceFile(src, cert)); err != nil {
					t.Error(err)
					return
				}
			}
			if _, err := e.Server.ReloadFile(e.file); err != nil {
				t.Errorf("reload: %v", err)
				return
			}
			reloads++
			time.Sleep(50 * time.Millisecond)
		}
	}()
	wg.Wait()
	<-done
	if failed.Load() > 0 {
		t.Errorf("%d of %d associations failed during %d reloads", failed.Load(), n, reloads)
	}
	accepted, reloaded := 0, 0
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		accepted, reloaded = 0, 0 // the writer may still be writing the last ones
		for _, ev := range e.events(t) {
			switch ev.Event {
			case audit.EventAccepted:
				accepted++
			case audit.EventPolicyReloaded:
				reloaded++
			}
		}
		if accepted >= n && reloaded >= reloads || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("%d associations, %d reloads (%d audited)", n, reloads, reloaded)
	if accepted < n || reloaded < reloads {
		t.Errorf("audit: %d accepted (want %d), %d policy.reloaded (want %d)", accepted, n, reloaded, reloads)
	}
	b.check(t, e)
}

// replaceFile puts a copy of from at to in one rename, as a certificate
// deployment does, so a reader never sees half a file.
func replaceFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	tmp := to + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, to)
}

func poolOf(pem []byte) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return pool
}
