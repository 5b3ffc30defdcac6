package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// The answer path's A-ASSOCIATE-AC, checked field by field.
func TestAnswerAssociateAC(t *testing.T) {
	e := startEdge(t, edgeOptions{MaxPDU: 65536})
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	rq := echoRQ("GOCLIENT", "DICOMEDGE")
	rq.PresentationContexts = []association.PresentationContextRQ{
		{ID: 1, AbstractSyntax: association.VerificationSOPClass, TransferSyntaxes: []string{association.ImplicitVRLittleEndian, association.ExplicitVRLittleEndian}},
		{ID: 3, AbstractSyntax: association.CTImageStorage, TransferSyntaxes: []string{association.ExplicitVRLittleEndian}},
		{ID: 5, AbstractSyntax: association.VerificationSOPClass, TransferSyntaxes: []string{association.ExplicitVRBigEndian}},
		{ID: 7, AbstractSyntax: association.VerificationSOPClass, TransferSyntaxes: []string{association.ImplicitVRLittleEndian}},
	}
	rq.UserInfo.AsyncOps = &association.AsyncOpsWindow{MaxInvoked: 5, MaxPerformed: 5}
	rq.UserInfo.RoleSelections = []association.RoleSelection{{SOPClassUID: association.VerificationSOPClass, SCU: true, SCP: true}}
	ac := associate(t, c, rq)
	if ac.CalledAE != "DICOMEDGE" || ac.CallingAE != "GOCLIENT" || ac.ApplicationContext != association.DICOMApplicationContext {
		t.Errorf("AE titles/app context: %q %q %q", ac.CalledAE, ac.CallingAE, ac.ApplicationContext)
	}
	want := map[uint8]struct {
		res association.PCResult
		ts  string
	}{
		1: {association.PCAcceptance, association.ExplicitVRLittleEndian}, // Explicit preferred over Implicit
		3: {association.PCAbstractSyntaxNotSupported, ""},
		5: {association.PCTransferSyntaxNotSupported, ""},
		7: {association.PCAcceptance, association.ImplicitVRLittleEndian},
	}
	if len(ac.PresentationContexts) != len(want) {
		t.Fatalf("%d contexts in AC, want %d", len(ac.PresentationContexts), len(want))
	}
	for _, pc := range ac.PresentationContexts {
		w := want[pc.ID]
		if pc.Result != w.res || (w.ts != "" && pc.TransferSyntax != w.ts) {
			t.Errorf("context %d: result %v ts %q, want %v %q", pc.ID, pc.Result, pc.TransferSyntax, w.res, w.ts)
		}
	}
	ui := ac.UserInfo
	if !ui.HasMaxLength || ui.MaxLength != 65536 {
		t.Errorf("max length %v %d, want 65536", ui.HasMaxLength, ui.MaxLength)
	}
	if ui.ImplementationClassUID != association.ImplementationClassUID || ui.ImplementationVersionName != association.ImplementationVersionName {
		t.Errorf("implementation %q %q", ui.ImplementationClassUID, ui.ImplementationVersionName)
	}
	if ui.AsyncOps == nil || ui.AsyncOps.MaxInvoked != 1 || ui.AsyncOps.MaxPerformed != 1 {
		t.Errorf("async ops answer = %+v, want 1/1", ui.AsyncOps)
	}
	// PS3.7 D.3.3.4: the requestor may be SCU; the edge does not act as SCU.
	if len(ui.RoleSelections) != 1 || !ui.RoleSelections[0].SCU || ui.RoleSelections[0].SCP {
		t.Errorf("role selection answer = %+v, want SCU=1 SCP=0", ui.RoleSelections)
	}
	// C-ECHO on the accepted context, then release.
	echo := &dimse.Command{CommandField: dimse.CEchoRQ, MessageID: 7, AffectedSOPClassUID: association.VerificationSOPClass, CommandDataSetType: dimse.NoDataSet}
	if err := dimse.WriteMessage(c, 1, echo, nil, 65536); err != nil {
		t.Fatal(err)
	}
	p, err := readPDU(t, c, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pd, ok := p.(*association.PDataTF)
	if !ok || len(pd.PDVs) != 1 || !pd.PDVs[0].Command {
		t.Fatalf("got %#v, want one command PDV", p)
	}
	rsp, err := dimse.DecodeCommand(pd.PDVs[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	if rsp.CommandField != dimse.CEchoRSP || rsp.MessageIDBeingRespondedTo != 7 || rsp.Status != 0 {
		t.Errorf("C-ECHO-RSP = %+v", rsp)
	}
	if err := association.WritePDU(c, &association.ReleaseRQ{}); err != nil {
		t.Fatal(err)
	}
	if p, err := readPDU(t, c, 5*time.Second); err != nil {
		t.Fatal(err)
	} else if _, ok := p.(*association.ReleaseRP); !ok {
		t.Fatalf("got %T, want A-RELEASE-RP", p)
	}
	// docs/audit.md: the audit's contexts are the accepted abstract syntaxes;
	// Verification, accepted in contexts 1 and 7, is listed once.
	ev := e.waitEvent(t, "association.accepted", func(ev audit.Event) bool { return ev.Event == audit.EventAccepted })
	if len(ev.Contexts) != 1 || ev.Contexts[0] != association.VerificationSOPClass {
		t.Errorf("audit contexts = %q, want [%s]", ev.Contexts, association.VerificationSOPClass)
	}
}

// Bad input gets the A-ABORT the PS3.8 state machine prescribes.
func TestProtocolErrorsGetAbort(t *testing.T) {
	e := startEdge(t, edgeOptions{MaxPDU: 16384, ARTIM: shortARTIM})
	pdata := func(n int) []byte {
		b := make([]byte, 6, 6+n)
		b[0] = byte(association.TypePDataTF)
		binary.BigEndian.PutUint32(b[2:], uint32(n))
		// One well-formed PDV item: length, context 1, command+last.
		pdv := make([]byte, n)
		if n >= 6 {
			binary.BigEndian.PutUint32(pdv, uint32(n-4))
			pdv[4], pdv[5] = 1, 3
		}
		return append(b, pdv...)
	}
	established := func(t *testing.T, c net.Conn) {
		t.Helper()
		associate(t, c, echoRQ("GOCLIENT", "DICOMEDGE"))
	}
	cases := []struct {
		name   string
		setup  func(*testing.T, net.Conn)
		send   []byte
		reason association.AbortReason
	}{
		{"garbage instead of an RQ", nil, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), association.AbortUnrecognizedPDU},
		{"P-DATA before the RQ", nil, pdata(10), association.AbortUnexpectedPDU},
		{"oversized PDU before the RQ", nil, []byte{0x01, 0, 0x7f, 0xff, 0xff, 0xff}, association.AbortInvalidPDUParameterValue},
		{"oversized P-DATA in an association", established, pdata(16384 + 100), association.AbortInvalidPDUParameterValue},
		{"A-ASSOCIATE-RQ in an association", established, mustAppend(t, echoRQ("A", "DICOMEDGE")), association.AbortUnexpectedPDU},
		{"unknown PDU type in an association", established, []byte{0x42, 0, 0, 0, 0, 2, 0, 0}, association.AbortUnrecognizedPDU},
		{"truncated RQ items", nil, []byte{0x01, 0, 0, 0, 0, 8, 0, 1, 0, 0, 'A', 'B', 'C', 'D'}, association.AbortInvalidPDUParameterValue},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
			if tc.setup != nil {
				tc.setup(t, c)
			}
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			p, err := readPDU(t, c, 5*time.Second)
			if err != nil {
				t.Fatalf("want A-ABORT, read error %v", err)
			}
			ab, ok := p.(*association.Abort)
			if !ok {
				t.Fatalf("got %T, want A-ABORT", p)
			}
			if ab.Source != association.AbortSourceServiceProvider || ab.Reason != tc.reason {
				t.Errorf("A-ABORT source %v reason %v, want service-provider %v", ab.Source, ab.Reason, tc.reason)
			}
			// Then the edge closes the connection.
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
				t.Errorf("after A-ABORT: read %v, want EOF", err)
			}
		})
	}
	// Still serving after all that.
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	associate(t, c, echoRQ("GOCLIENT", "DICOMEDGE"))
}

func mustAppend(t *testing.T, p association.PDU) []byte {
	t.Helper()
	b, err := association.Append(nil, p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A client that connects and sends nothing is dropped when ARTIM expires,
// both before the TLS handshake and after it.
func TestSilentClientDroppedAtARTIM(t *testing.T) {
	e := startEdge(t, edgeOptions{ARTIM: shortARTIM})
	for _, tc := range []struct {
		name string
		dial func(*testing.T) net.Conn
	}{
		{"no TLS handshake", func(t *testing.T) net.Conn {
			c, err := net.Dial("tcp", e.Addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c
		}},
		{"TLS but no RQ", func(t *testing.T) net.Conn { return e.goClient(t, e.pki.clientCert, e.pki.clientKey) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.dial(t)
			start := time.Now()
			_ = c.SetReadDeadline(time.Now().Add(9 * time.Second))
			_, err := io.Copy(io.Discard, c)
			if err != nil && !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
				t.Fatalf("read: %v (want the edge to close)", err)
			}
			if d := time.Since(start); d > 8*time.Second { // loose for loaded machines; the default ARTIM is 30s
				t.Errorf("closed after %v, want about ARTIM (%s)", d, shortARTIM)
			}
		})
	}
	ev := e.waitEvent(t, "tls.failed timeout", func(ev audit.Event) bool { return ev.Event == audit.EventTLSFailed })
	if ev.Reason != "timeout" {
		t.Errorf("tls.failed reason %q, want timeout", ev.Reason)
	}
}

// The idle timer aborts an established association with no PDUs.
func TestIdleAssociationAborted(t *testing.T) {
	e := startEdge(t, edgeOptions{Idle: "300ms"})
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	if err := association.WritePDU(c, echoRQ("GOCLIENT", "DICOMEDGE")); err != nil {
		t.Fatal(err)
	}
	r := association.NewReader(c, 1<<20)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if p, err := r.ReadPDU(); err != nil {
		t.Fatal(err)
	} else if _, ok := p.(*association.AssociateAC); !ok {
		t.Fatalf("got %T", p)
	}
	p, err := r.ReadPDU()
	if err != nil {
		t.Fatalf("want A-ABORT after idle, got %v", err)
	}
	if _, ok := p.(*association.Abort); !ok {
		t.Fatalf("got %T, want A-ABORT", p)
	}
	ev := e.waitEvent(t, "aborted idle", func(ev audit.Event) bool { return ev.Event == audit.EventAborted })
	if ev.AbortReason != "idle-timeout" {
		t.Errorf("abort reason %q", ev.AbortReason)
	}
}

// The backend killed in the middle of a store: the client gets A-ABORT
// and the edge keeps serving other associations.
func TestBackendKilledMidTransfer(t *testing.T) {
	testpeer.Require(t, "storescu", "storescp", "echoscu")
	scp := testpeer.StartStoreSCP(t, "STORESCP")
	e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", scp.Addr, "STORESCP"), Rules: storeRules(`"C-ECHO", "C-STORE"`)})
	t0 := time.Now()
	paths, _ := testpeer.WriteDICOMFiles(t, filepath.Join(t.TempDir(), "kill"), "KILL", 20, 1024, 1024)
	t.Logf("generated in %v", time.Since(t0))
	ctx := testpeer.Context(t, 2*time.Minute)
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		args := append(e.tlsArgs(e.pki.clientCert, e.pki.clientKey), "-aet", "MODALITY1", "-aec", "MAINPACS", e.host(), e.port())
		out, err := testpeer.Run(ctx, "storescu", append(args, paths...)...)
		done <- result{out, err}
	}()
	// Kill once the backend has stored a couple of instances.
	deadline := time.Now().Add(30 * time.Second)
	for scp.Count() < 3 {
		if time.Now().After(deadline) {
			t.Fatal("storescp received nothing")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = scp.Cmd.Process.Kill()
	t.Logf("killed at %v", time.Since(t0))
	var res result
	select {
	case res = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("storescu did not end after the backend died")
	}
	t.Logf("storescu ended at %v", time.Since(t0))
	if res.err == nil {
		t.Fatalf("storescu succeeded although the backend died:\n%s", res.out)
	}
	if !strings.Contains(strings.ToLower(res.out), "abort") {
		t.Errorf("storescu did not report an A-ABORT:\n%s", res.out)
	}
	ev := e.waitEvent(t, "aborted by backend", func(ev audit.Event) bool { return ev.Event == audit.EventAborted })
	if ev.AbortSource != "backend" {
		t.Errorf("abort source %q, want backend", ev.AbortSource)
	}
	if out, err := e.dcmtk(t, "echoscu", "-aet", "MODALITY1", "-aec", "DICOMEDGE", e.host(), e.port()); err != nil {
		t.Fatalf("edge stopped serving after the backend died: %v\n%s", err, out)
	}
}

// Shutdown with open associations: they are aborted after drain_timeout
// and no goroutine is left behind.
func TestShutdownDrainsAndLeavesNoGoroutines(t *testing.T) {
	testpeer.Require(t, "storescp")
	scp := testpeer.StartStoreSCP(t, "STORESCP")
	e := startEdge(t, edgeOptions{Drain: "300ms", Backends: backendBlock("pacs", scp.Addr, "STORESCP"), Rules: storeRules(`"C-ECHO"`)})
	// Baseline with the edge serving (its accept loop, the audit writer and
	// the TLS file watcher are running and stay until cleanup, except the
	// accept loop, which Shutdown ends).
	before := runtime.NumGoroutine()
	func() {
		var conns []net.Conn
		for i := 0; i < 4; i++ {
			called := "DICOMEDGE"
			if i == 3 {
				called = "MAINPACS" // one relayed: both pumps must end too
			}
			c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
			if err := association.WritePDU(c, echoRQ("MODALITY1", called)); err != nil {
				t.Fatal(err)
			}
			if p, err := readPDU(t, c, 5*time.Second); err != nil {
				t.Fatal(err)
			} else if _, ok := p.(*association.AssociateAC); !ok {
				t.Fatalf("%s: got %T, want AC", called, p)
			}
			conns = append(conns, c)
		}
		idle, err := net.Dial("tcp", e.Addr) // one still before its handshake
		if err != nil {
			t.Fatal(err)
		}
		defer idle.Close()
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Server.Shutdown(ctx); err != nil {
			t.Fatalf("shutdown: %v", err)
		}
		if d := time.Since(start); d < 250*time.Millisecond || d > 9*time.Second {
			t.Errorf("shutdown took %v, want about drain_timeout (300ms)", d)
		}
		for _, c := range conns {
			p, err := readPDU(t, c, 2*time.Second)
			if err != nil {
				t.Errorf("want A-ABORT on shutdown, got %v", err)
				continue
			}
			if _, ok := p.(*association.Abort); !ok {
				t.Errorf("got %T, want A-ABORT", p)
			}
			c.Close()
		}
		if _, err := net.DialTimeout("tcp", e.Addr, time.Second); err == nil {
			t.Errorf("edge still accepting after Shutdown")
		}
		ev := e.waitEvent(t, "aborted by shutdown", func(ev audit.Event) bool { return ev.Event == audit.EventAborted })
		if ev.AbortSource != "service-provider" || ev.AbortReason != "shutdown" {
			t.Errorf("shutdown abort audited as %q/%q", ev.AbortSource, ev.AbortReason)
		}
	}()
	// Bounded wait for goroutines of the closed connections to finish.
	deadline := time.Now().Add(20 * time.Second)
	var now int
	for {
		runtime.GC()
		now = runtime.NumGoroutine()
		if now <= before || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if now > before {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Errorf("goroutines: %d before, %d after Shutdown\n%s", before, now, buf[:n])
	}
}

// A relayed association with no PDU in either direction for idle_timeout
// is aborted towards both sides.
func TestRelayIdleAborted(t *testing.T) {
	testpeer.Require(t, "storescp")
	scp := testpeer.StartStoreSCP(t, "STORESCP", "-v")
	e := startEdge(t, edgeOptions{Idle: "500ms", Backends: backendBlock("pacs", scp.Addr, "STORESCP"), Rules: storeRules(`"C-ECHO"`)})
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	// Timed from before the RQ: the edge starts its idle timer before it
	// sends the AC, so a test slow to read the AC on a loaded machine would
	// otherwise see the abort sooner than idle_timeout after "start".
	start := time.Now()
	if err := association.WritePDU(c, echoRQ("MODALITY1", "MAINPACS")); err != nil {
		t.Fatal(err)
	}
	r := association.NewReader(c, 1<<20)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if p, err := r.ReadPDU(); err != nil {
		t.Fatal(err)
	} else if _, ok := p.(*association.AssociateAC); !ok {
		t.Fatalf("got %T, want AC", p)
	}
	p, err := r.ReadPDU()
	if err != nil {
		t.Fatalf("want A-ABORT, got %v", err)
	}
	if _, ok := p.(*association.Abort); !ok {
		t.Fatalf("got %T, want A-ABORT", p)
	}
	if d := time.Since(start); d < 400*time.Millisecond || d > 10*time.Second {
		t.Errorf("aborted after %v, want about idle_timeout (500ms)", d)
	}
	ev := e.waitEvent(t, "relay aborted idle", func(ev audit.Event) bool { return ev.Event == audit.EventAborted })
	if ev.AbortReason != "idle-timeout" {
		t.Errorf("abort reason %q, want idle-timeout", ev.AbortReason)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(scp.Output(), "Abort") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(scp.Output(), "Abort") {
		t.Errorf("storescp was not told about the abort:\n%s", scp.Output())
	}
}
