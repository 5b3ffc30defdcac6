package association_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
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
	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// -update-seeds rewrites the DCMTK captures kept as testdata and fuzz seeds:
// getscu's RQ here, the command sets in dimse/testdata.
var updateSeeds = flag.Bool("update-seeds", false, "rewrite DCMTK captures in testdata and dimse/testdata")

// testSCP is a minimal acceptor built only from association and dimse: a
// listener, a Reader, Negotiate, and the Verification response. It also
// takes C-STOREs, streaming each data set through a PatientIDScanner, so
// real DCMTK peers exercise the whole codec.
type testSCP struct {
	t      *testing.T
	ln     net.Listener
	acc    *association.Acceptor
	reject *association.AssociateRJ // answer every RQ with this when set
	refuse uint16                   // status for requests other than C-ECHO/C-STORE (0: unrecognized operation)
	maxPDU uint32

	mu     sync.Mutex
	rqs    []*association.AssociateRQ
	rawRQs [][]byte
	acs    []*association.AssociateAC
	cmds   []*dimse.Command
	rawCmd [][]byte // single-fragment command PDVs as received
	stores []storeSeen
	ends   []string // how each association ended: "release", "abort", or an error
	wg     sync.WaitGroup
}

type storeSeen struct {
	sopInstance, transferSyntax, patientID string
	found                                  bool
	bytes, pdus                            int
}

// startSCP starts the SCP; opts adjust it before it accepts anything.
func startSCP(t *testing.T, acc *association.Acceptor, reject *association.AssociateRJ, opts ...func(*testSCP)) *testSCP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testSCP{t: t, ln: ln, acc: acc, reject: reject, maxPDU: 16384}
	for _, o := range opts {
		o(s)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for range 20 { // bounded: a test makes a handful of associations
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() { defer s.wg.Done(); s.serve(c) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *testSCP) port() string { return strconv.Itoa(s.ln.Addr().(*net.TCPAddr).Port) }

func (s *testSCP) end(how string) {
	s.mu.Lock()
	s.ends = append(s.ends, how)
	s.mu.Unlock()
}

func (s *testSCP) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	r := association.NewReader(c, 64<<10)
	typ, raw, err := r.Next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			// Closed before a byte: not an association but a port probe,
			// e.g. another test's wait for its own peer on a port the
			// kernel has since handed to this listener.
			return
		}
		abortAndClose(c, association.AbortFor(err))
		s.end("read RQ: " + err.Error())
		return
	}
	s.mu.Lock()
	s.rawRQs = append(s.rawRQs, bytes.Clone(raw))
	s.mu.Unlock()
	p, err := association.Decode(typ, raw[association.HeaderLen:])
	rq, ok := p.(*association.AssociateRQ)
	if err != nil || !ok {
		if err == nil {
			err = association.Unexpected(typ)
		}
		abortAndClose(c, association.AbortFor(err))
		s.end(fmt.Sprintf("first PDU %v: %v", typ, err))
		return
	}
	s.mu.Lock()
	s.rqs = append(s.rqs, rq)
	s.mu.Unlock()
	if rj := s.reject; rj != nil || association.CheckRQ(rq) != nil {
		if rj == nil {
			rj = association.CheckRQ(rq)
		}
		_ = association.WritePDU(c, rj)
		s.end("rejected")
		return
	}
	ac := s.acc.Accept(rq, association.UserInfo{HasMaxLength: true, MaxLength: s.maxPDU})
	s.mu.Lock()
	s.acs = append(s.acs, ac)
	s.mu.Unlock()
	if err := association.WritePDU(c, ac); err != nil {
		s.end("write AC: " + err.Error())
		return
	}
	peerMax, _ := rq.UserInfo.MaxPDULength()
	r.SetLimit(s.maxPDU)
	var asm dimse.Assembler
	var store *storeSeen
	var scan *dimse.PatientIDScanner
	var pending *dimse.Command // request whose data set is arriving
	respond := func(ctx uint8, cmd *dimse.Command) error {
		var rsp *dimse.Command
		switch {
		case cmd.CommandField == dimse.CEchoRQ:
			rsp = dimse.VerificationResponse(cmd)
		case cmd.CommandField == dimse.CStoreRQ:
			rsp = dimse.NewResponse(cmd, dimse.StatusSuccess)
		case s.refuse != 0:
			rsp = dimse.NewResponse(cmd, s.refuse)
		default:
			rsp = dimse.NewResponse(cmd, dimse.StatusUnrecognizedOperation)
		}
		return dimse.WriteMessage(c, ctx, rsp, nil, peerMax)
	}
	for {
		p, err := r.ReadPDU()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				abortAndClose(c, association.AbortFor(err))
			}
			s.end("read: " + err.Error())
			return
		}
		switch p := p.(type) {
		case *association.PDataTF:
			for _, v := range p.PDVs {
				pc, ok := ac.AcceptedContext(v.ContextID)
				if !ok {
					abortAndClose(c, &association.Abort{Source: association.AbortSourceServiceProvider, Reason: association.AbortInvalidPDUParameterValue})
					s.end("PDV on a context not accepted")
					return
				}
				if v.Command && v.Last && !asm.Pending() {
					s.mu.Lock()
					s.rawCmd = append(s.rawCmd, bytes.Clone(v.Data))
					s.mu.Unlock()
				}
				cmd, done, err := asm.Add(v)
				if err != nil {
					abortAndClose(c, association.AbortFor(err))
					s.end("assemble: " + err.Error())
					return
				}
				if !v.Command {
					if pending == nil {
						abortAndClose(c, association.AbortFor(&association.ProtocolError{Reason: association.AbortUnexpectedPDUParameter, Msg: "data set without a command"}))
						s.end("data set without a command")
						return
					}
					if store != nil {
						scan.Feed(v.Data)
						store.bytes += len(v.Data)
						store.pdus++
					}
					if !v.Last {
						continue
					}
					if store != nil {
						store.patientID, store.found = scan.PatientID()
						s.mu.Lock()
						s.stores = append(s.stores, *store)
						s.mu.Unlock()
						store = nil
					}
					if err := respond(v.ContextID, pending); err != nil {
						s.end("write response: " + err.Error())
						return
					}
					pending = nil
					continue
				}
				if !done {
					continue
				}
				s.mu.Lock()
				s.cmds = append(s.cmds, cmd)
				s.mu.Unlock()
				if !cmd.HasDataSet() {
					if err := respond(v.ContextID, cmd); err != nil {
						s.end("write response: " + err.Error())
						return
					}
					continue
				}
				pending = cmd
				if cmd.CommandField == dimse.CStoreRQ {
					store = &storeSeen{sopInstance: cmd.AffectedSOPInstanceUID, transferSyntax: pc.TransferSyntax}
					scan = dimse.NewPatientIDScanner(pc.TransferSyntax)
				}
			}
		case *association.ReleaseRQ:
			_ = association.WritePDU(c, &association.ReleaseRP{})
			s.end("release")
			return
		case *association.Abort:
			s.end("abort")
			return
		default:
			_ = association.WritePDU(c, association.AbortFor(association.Unexpected(p.Type())))
			s.end("unexpected " + p.Type().String())
			return
		}
	}
}

// abortAndClose sends a (if not nil) and closes c so that the peer actually
// receives it: closing a socket with unread input makes TCP send RST, which
// can destroy the A-ABORT in flight. It half-closes the write side (TCP FIN,
// or TLS close_notify), discards at most 1 MiB of input for a short linger,
// then closes; PS3.8 9.2 has the acceptor wait for the peer's close (ARTIM)
// after an A-ABORT in the same way.
func abortAndClose(c net.Conn, a *association.Abort) {
	if a != nil {
		_ = association.WritePDU(c, a)
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 1<<20))
	}
	_ = c.Close()
}

func (s *testSCP) snapshot() (rqs []*association.AssociateRQ, cmds []*dimse.Command, stores []storeSeen, ends []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rqs, s.cmds, s.stores, s.ends
}

// waitEnds waits until n associations have ended on the SCP side.
func (s *testSCP) waitEnds(n int) []string {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, _, _, ends := s.snapshot(); len(ends) >= n {
			return ends
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.t.Fatalf("SCP saw %d association ends, want %d", len(s.ends), n)
	return nil
}

func runPeer(t *testing.T, name string, args ...string) (string, int) {
	t.Helper()
	out, err := testpeer.Run(testpeer.Context(t, 30*time.Second), name, args...)
	return out, testpeer.ExitCode(err)
}

var verification = &association.Acceptor{AbstractSyntaxes: []string{association.VerificationSOPClass}}

func TestDCMTKEchoscuAgainstGoSCP(t *testing.T) {
	testpeer.Require(t, "echoscu")
	scp := startSCP(t, verification, nil)
	out, code := runPeer(t, "echoscu", "-v", "-aet", "ECHOSCU", "-aec", "DICOMEDGE", "127.0.0.1", scp.port())
	if code != 0 {
		t.Fatalf("echoscu exit %d:\n%s", code, out)
	}
	if ends := scp.waitEnds(1); ends[0] != "release" {
		t.Fatalf("association ended with %q", ends[0])
	}
	rqs, cmds, _, _ := scp.snapshot()
	checkDCMTKRQ(t, rqs[0], "DICOMEDGE", "ECHOSCU", 1)
	if len(cmds) != 1 {
		t.Fatalf("commands %+v", cmds)
	}
	c := cmds[0]
	if c.CommandField != dimse.CEchoRQ || c.AffectedSOPClassUID != association.VerificationSOPClass || c.MessageID == 0 || c.HasDataSet() {
		t.Fatalf("C-ECHO-RQ decoded as %+v", c)
	}
	saveSeed(t, scp, "c-echo-rq-echoscu.bin")
	if !strings.Contains(out, "Received Echo Response (Success)") {
		t.Fatalf("echoscu did not report success:\n%s", out)
	}
}

func TestDCMTKEchoscuRejected(t *testing.T) {
	testpeer.Require(t, "echoscu")
	cases := []struct {
		name   string
		acc    *association.Acceptor
		reject *association.AssociateRJ
		want   []string // in echoscu's output
		end    string
	}{
		{
			name:   "A-ASSOCIATE-RJ called AE not recognized",
			acc:    verification,
			reject: &association.AssociateRJ{Result: association.RejectPermanent, Source: association.RejectSourceServiceUser, Reason: association.RejectUserCalledAENotRecognized},
			want:   []string{"Association Rejected", "Rejected Permanent", "Service User", "Called AE Title Not Recognized"},
			end:    "rejected",
		},
		{
			name:   "A-ASSOCIATE-RJ transient congestion",
			acc:    verification,
			reject: &association.AssociateRJ{Result: association.RejectTransient, Source: association.RejectSourceServiceProviderPresentation, Reason: association.RejectPresentationTemporaryCongestion},
			want:   []string{"Association Rejected", "Rejected Transient", "Temporary Congestion"},
			end:    "rejected",
		},
		{
			name: "every presentation context refused",
			acc:  &association.Acceptor{AbstractSyntaxes: []string{association.CTImageStorage}},
			want: []string{"No Acceptable Presentation Contexts"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			scp := startSCP(t, tc.acc, tc.reject)
			out, code := runPeer(t, "echoscu", "-aet", "ECHOSCU", "-aec", "DICOMEDGE", "127.0.0.1", scp.port())
			if code == 0 {
				t.Fatalf("echoscu succeeded:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("echoscu output lacks %q:\n%s", w, out)
				}
			}
			ends := scp.waitEnds(1)
			if tc.end != "" && ends[0] != tc.end {
				t.Fatalf("SCP ended with %q, want %q", ends[0], tc.end)
			}
			if tc.end == "" && ends[0] != "abort" && ends[0] != "release" && !strings.Contains(ends[0], "EOF") {
				t.Fatalf("SCP ended with %q", ends[0])
			}
		})
	}
}

// makeDICOM writes a DICOM file with dump2dcm: a sequence before Patient ID
// (undefined length when undefinedLengths) and 70,000 bytes of pixel data,
// so the data set spans several 16 KiB PDUs.
func makeDICOM(t *testing.T, dir, name, patientID string, undefinedLengths bool) string {
	t.Helper()
	testpeer.Require(t, "dump2dcm")
	px := filepath.Join(dir, name+".raw")
	pixels := make([]byte, 70000)
	for i := range pixels {
		pixels[i] = byte(i * 7)
	}
	if err := os.WriteFile(px, pixels, 0o600); err != nil {
		t.Fatal(err)
	}
	dump := `(0008,0016) UI =SecondaryCaptureImageStorage
(0008,0018) UI [1.2.826.0.1.3680043.2.1143.777.` + strconv.Itoa(len(name)) + `]
(0008,0060) CS [OT]
(0008,1032) SQ (Sequence with undefined length #=1)
  (fffe,e000) na (Item with undefined length #=2)
    (0008,0100) SH [CODE1]
    (0008,0102) SH [L]
  (fffe,e00d) na (ItemDelimitationItem)
(fffe,e0dd) na (SequenceDelimitationItem)
(0010,0010) PN [Doe^Jane]
(0010,0020) LO [` + patientID + `]
(0010,0030) DA [19700101]
(0020,000d) UI [1.2.3.4.5]
(0020,000e) UI [1.2.3.4.6]
(0028,0002) US 1
(0028,0004) CS [MONOCHROME2]
(0028,0010) US 100
(0028,0011) US 350
(0028,0100) US 16
(0028,0101) US 16
(0028,0102) US 15
(0028,0103) US 0
(7fe0,0010) OW =` + px + `
`
	dumpFile := filepath.Join(dir, name+".dump")
	if err := os.WriteFile(dumpFile, []byte(dump), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name+".dcm")
	args := []string{"-q"}
	if undefinedLengths {
		args = append(args, "-e")
	}
	if o, code := runPeer(t, "dump2dcm", append(args, dumpFile, out)...); code != 0 {
		t.Fatalf("dump2dcm: %s", o)
	}
	return out
}

func TestDCMTKStorescuAgainstGoSCP(t *testing.T) {
	testpeer.Require(t, "storescu", "dump2dcm")
	dir := t.TempDir()
	acc := &association.Acceptor{
		AbstractSyntaxes: []string{association.VerificationSOPClass, association.SecondaryCaptureImageStorage},
		TransferSyntaxes: []string{association.ExplicitVRLittleEndian, association.ImplicitVRLittleEndian},
	}
	cases := []struct {
		name      string
		args      []string
		undefined bool
		wantTS    string
		contexts  int // proposed by storescu
	}{
		{"-xs lossless proposal, explicit VR, defined lengths", []string{"-xs"}, false, association.ExplicitVRLittleEndian, 128},
		{"-xi implicit VR only, undefined-length sequence", []string{"-xi"}, true, association.ImplicitVRLittleEndian, 64},
		{"-xe explicit VR, undefined-length sequence", []string{"-xe"}, true, association.ExplicitVRLittleEndian, 128},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pid := "PAT-" + strconv.Itoa(1000+i)
			file := makeDICOM(t, dir, "case"+strconv.Itoa(i), pid, tc.undefined)
			scp := startSCP(t, acc, nil)
			args := append(append([]string{"-aet", "STORESCU", "-aec", "STORESCP"}, tc.args...), "127.0.0.1", scp.port(), file)
			out, code := runPeer(t, "storescu", args...)
			if code != 0 {
				t.Fatalf("storescu exit %d:\n%s", code, out)
			}
			if ends := scp.waitEnds(1); ends[0] != "release" {
				t.Fatalf("association ended with %q", ends[0])
			}
			rqs, cmds, stores, _ := scp.snapshot()
			if len(rqs[0].PresentationContexts) != tc.contexts {
				t.Errorf("storescu proposed %d contexts, want %d", len(rqs[0].PresentationContexts), tc.contexts)
			}
			checkDCMTKRQ(t, rqs[0], "STORESCP", "STORESCU", len(rqs[0].PresentationContexts))
			if len(cmds) != 1 || cmds[0].CommandField != dimse.CStoreRQ || cmds[0].AffectedSOPClassUID != association.SecondaryCaptureImageStorage || !cmds[0].HasDataSet() {
				t.Fatalf("commands %+v", cmds)
			}
			if tc.args[0] == "-xs" { // the command set is the same for every -x option
				saveSeed(t, scp, "c-store-rq-storescu"+tc.args[0]+".bin")
			}
			if len(stores) != 1 {
				t.Fatalf("stores %+v", stores)
			}
			st := stores[0]
			if st.transferSyntax != tc.wantTS || !st.found || st.patientID != pid {
				t.Fatalf("store %+v, want patient %q in %s", st, pid, tc.wantTS)
			}
			if st.bytes < 70000 || st.pdus < 5 {
				t.Fatalf("data set of %d bytes in %d PDVs: not fragmented as expected", st.bytes, st.pdus)
			}
		})
	}
}

// checkDCMTKRQ asserts what DCMTK 3.6.7 puts in every A-ASSOCIATE-RQ.
func checkDCMTKRQ(t *testing.T, rq *association.AssociateRQ, called, calling string, contexts int) {
	t.Helper()
	if rq.CalledAE != called || rq.CallingAE != calling {
		t.Errorf("AEs %q/%q, want %q/%q", rq.CalledAE, rq.CallingAE, called, calling)
	}
	if rq.ProtocolVersion != 1 || rq.ApplicationContext != association.DICOMApplicationContext {
		t.Errorf("version %d, application context %q", rq.ProtocolVersion, rq.ApplicationContext)
	}
	if len(rq.PresentationContexts) != contexts {
		t.Errorf("%d presentation contexts, want %d", len(rq.PresentationContexts), contexts)
	}
	ui := rq.UserInfo
	if !ui.HasMaxLength || ui.MaxLength != 16384 {
		t.Errorf("max length %d (present %v), want DCMTK's default 16384", ui.MaxLength, ui.HasMaxLength)
	}
	if !strings.HasPrefix(ui.ImplementationClassUID, "1.2.276.0.7230010.3") || ui.ImplementationVersionName != "OFFIS_DCMTK_367" {
		t.Errorf("implementation %q %q", ui.ImplementationClassUID, ui.ImplementationVersionName)
	}
}

func saveSeed(t *testing.T, s *testSCP, name string) {
	t.Helper()
	if !*updateSeeds {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.rawCmd) == 0 {
		t.Fatal("no command captured")
	}
	if err := os.WriteFile(filepath.Join("dimse", "testdata", name), s.rawCmd[0], 0o644); err != nil {
		t.Fatal(err)
	}
}
