package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/policy"
)

// discardConn is a net.Conn that swallows writes and counts the PDUs.
type discardConn struct {
	net.Conn
	writes int
	last   []byte
}

func (d *discardConn) Write(b []byte) (int, error) {
	d.writes++
	d.last = append(d.last[:0], b...)
	return len(b), nil
}
func (d *discardConn) Close() error                     { return nil }
func (d *discardConn) SetWriteDeadline(time.Time) error { return nil }
func (d *discardConn) SetReadDeadline(time.Time) error  { return nil }
func (d *discardConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// fuzzRelay is a relay in its established state, not connected to
// anything: the client side's P-DATA inspection can run on arbitrary bytes.
func fuzzRelay(t testing.TB) (*relay, *discardConn, *discardConn) {
	t.Helper()
	cfg, diags := policy.Load("fuzz.hcl", []byte(`
tls {
  client_ca = ["ca.pem"]
  cert_file = "edge.pem"
  key_file  = "edge-key.pem"
}
backend "pacs" {
  address  = "127.0.0.1:104"
  ae_title = "PACS"
}
rule "store-only" {
  relay {
    backend  = "pacs"
    services = ["C-ECHO", "C-STORE"]
  }
}
`))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	s := &Server{Config: cfg, Logger: hclog.NewNullLogger()}
	s.init()
	toClient, toBackend := &discardConn{}, &discardConn{}
	c := &conn{s: s, raw: toClient, log: s.log, rq: echoRQ("FUZZ", "PACS")}
	d := cfg.Policy.Evaluate(&policy.Input{CallingAE: "FUZZ", CalledAE: "PACS"})
	r := &relay{c: c, cfg: cfg, d: d, b: toBackend,
		cw: &pduWriter{c: toClient}, bw: &pduWriter{c: toBackend},
		contexts: map[uint8]pcInfo{
			1: {abstract: association.SecondaryCaptureImageStorage, transfer: association.ExplicitVRLittleEndian},
			3: {abstract: association.StudyRootQueryRetrieveFind, transfer: association.ImplicitVRLittleEndian},
		},
		clientMax: 16384, pending: map[uint16]*pendingOp{},
		inBytes:  s.Metrics.RelayBytes.WithLabelValues("in"),
		outBytes: s.Metrics.RelayBytes.WithLabelValues("out"),
	}
	return r, toClient, toBackend
}

func pdvItem(ctx uint8, mch byte, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(data)+2))
	return append(append(b, ctx, mch), data...)
}

func pdataPDU(body []byte) []byte {
	b := []byte{byte(association.TypePDataTF), 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[2:], uint32(len(body)))
	return append(b, body...)
}

func FuzzRelayClientPData(f *testing.F) {
	store := (&dimse.Command{CommandField: dimse.CStoreRQ, MessageID: 1, AffectedSOPClassUID: association.SecondaryCaptureImageStorage,
		AffectedSOPInstanceUID: "1.2.3", CommandDataSetType: 0}).Encode()
	find := (&dimse.Command{CommandField: dimse.CFindRQ, MessageID: 2, AffectedSOPClassUID: association.StudyRootQueryRetrieveFind,
		CommandDataSetType: 0}).Encode()
	f.Add(pdvItem(1, 3, store), []byte{})
	f.Add(append(pdvItem(1, 3, store), pdvItem(1, 2, []byte{0x10, 0, 0x20, 0, 'L', 'O', 4, 0, 'P', 'A', 'T', '1'})...), []byte{})
	f.Add(pdvItem(3, 3, find), pdvItem(3, 2, []byte{1, 2, 3, 4}))
	f.Add(pdvItem(1, 1, store[:10]), pdvItem(1, 3, store[10:]))
	f.Add(pdvItem(9, 3, store), []byte{})
	f.Add([]byte{0, 0, 0, 1, 1}, []byte{0xff, 0xff, 0xff, 0xff})
	// A C-service naming another context's SOP
	// class, a reused Message ID, C-CANCEL with and without a data set.
	f.Add(pdvItem(3, 3, store), []byte{})
	f.Add(pdvItem(1, 3, store), pdvItem(1, 3, store))
	cancel := func(ds uint16) []byte {
		return (&dimse.Command{CommandField: dimse.CCancelRQ, MessageIDBeingRespondedTo: 1, CommandDataSetType: ds}).Encode()
	}
	f.Add(pdvItem(1, 3, store), pdvItem(1, 3, cancel(dimse.NoDataSet)))
	f.Add(pdvItem(1, 3, store), pdvItem(1, 3, cancel(0)))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		r, _, _ := fuzzRelay(t)
		asm := &dimse.Assembler{}
		st := &clientState{}
		for _, body := range [][]byte{a, b} {
			err := r.clientPData(pdataPDU(body), asm, st)
			var pe *association.ProtocolError
			if err != nil && !errors.As(err, &pe) && !errors.Is(err, errEnded) {
				t.Fatalf("non-protocol error %T %v", err, err)
			}
			if err != nil {
				return
			}
		}
		if len(st.held) > 0 && !asm.Pending() {
			t.Fatalf("held command fragments with no command pending")
		}
	})
}

// The refusal path decided by clientPData: a C-FIND under a store-only rule
// is answered 0x0124 to the client and its PDUs are not forwarded; a C-STORE
// is forwarded unchanged (one Write of the raw PDU).
func TestRelayClientPDataDecisions(t *testing.T) {
	find := (&dimse.Command{CommandField: dimse.CFindRQ, MessageID: 2, AffectedSOPClassUID: association.StudyRootQueryRetrieveFind}).Encode()
	store := (&dimse.Command{CommandField: dimse.CStoreRQ, MessageID: 3, AffectedSOPClassUID: association.SecondaryCaptureImageStorage,
		AffectedSOPInstanceUID: "1.2.3"}).Encode()
	cases := []struct {
		name              string
		pdus              [][]byte
		wantBackendWrites int
		wantRefusal       bool
	}{
		{"C-FIND refused, identifier dropped", [][]byte{pdvItem(3, 3, find), pdvItem(3, 2, []byte{1, 2, 3, 4})}, 0, true},
		{"C-STORE forwarded raw", [][]byte{pdvItem(1, 3, store), pdvItem(1, 2, make([]byte, 100))}, 2, false},
		{"fragmented C-STORE command held then forwarded", [][]byte{pdvItem(1, 1, store[:12]), pdvItem(1, 3, store[12:]), pdvItem(1, 2, []byte{0, 0})}, 3, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, toClient, toBackend := fuzzRelay(t)
			asm, st := &dimse.Assembler{}, &clientState{}
			for _, body := range tc.pdus {
				if err := r.clientPData(pdataPDU(body), asm, st); err != nil {
					t.Fatal(err)
				}
				// As the client side's wait hook does when nothing more is waiting.
				if err := r.bw.flush(); err != nil {
					t.Fatal(err)
				}
			}
			if toBackend.writes != tc.wantBackendWrites {
				t.Errorf("%d writes to the backend, want %d", toBackend.writes, tc.wantBackendWrites)
			}
			if !tc.wantRefusal {
				if toClient.writes != 0 {
					t.Errorf("%d writes to the client, want none", toClient.writes)
				}
				return
			}
			if toClient.writes != 1 {
				t.Fatalf("%d writes to the client, want one refusal", toClient.writes)
			}
			p, err := association.Decode(association.PDUType(toClient.last[0]), toClient.last[association.HeaderLen:])
			if err != nil {
				t.Fatal(err)
			}
			rsp, err := dimse.DecodeCommand(p.(*association.PDataTF).PDVs[0].Data)
			if err != nil {
				t.Fatal(err)
			}
			if rsp.CommandField != dimse.CFindRSP || rsp.MessageIDBeingRespondedTo != 2 || rsp.Status != dimse.StatusRefusedNotAuthorized {
				t.Errorf("refusal = %+v", rsp)
			}
		})
	}
}

// recordConn records every write.
type recordConn struct {
	discardConn
	all [][]byte
}

func (r *recordConn) Write(b []byte) (int, error) {
	r.all = append(r.all, append([]byte(nil), b...))
	return r.discardConn.Write(b)
}

// The queue of forwarded PDUs: consecutive PDUs go out in one write at the
// flush, in order and byte for byte; a PDU the edge re-encodes (held
// command fragments) first sends what is queued; the queue never grows past
// queueMax, and a PDU of more than half of it is written without a copy.
func TestPDUWriterQueue(t *testing.T) {
	pdu := func(n int, fill byte) []byte {
		return pdataPDU(pdvItem(1, 2, bytes.Repeat([]byte{fill}, n)))
	}
	cases := []struct {
		name       string
		ops        func(w *pduWriter) error
		wantWrites [][]byte
	}{
		{"two PDUs, one flush", func(w *pduWriter) error {
			_ = w.writeQueued(pdu(100, 'a'))
			_ = w.writeQueued(pdu(200, 'b'))
			return w.flush()
		}, [][]byte{append(pdu(100, 'a'), pdu(200, 'b')...)}},
		{"flush with nothing queued writes nothing", func(w *pduWriter) error { return w.flush() }, nil},
		{"an unqueued write sends the queue first", func(w *pduWriter) error {
			_ = w.writeQueued(pdu(10, 'a'))
			return w.writeRaw(pdu(20, 'b'))
		}, [][]byte{pdu(10, 'a'), pdu(20, 'b')}},
		{"full queue goes out before the PDU that would overflow it", func(w *pduWriter) error {
			for range 3 {
				_ = w.writeQueued(pdu(100<<10, 'x'))
			}
			return w.flush()
		}, [][]byte{append(pdu(100<<10, 'x'), pdu(100<<10, 'x')...), pdu(100<<10, 'x')}},
		{"large PDU written directly after the queue", func(w *pduWriter) error {
			_ = w.writeQueued(pdu(10, 'a'))
			_ = w.writeQueued(pdu(queueMax/2+1, 'L'))
			return w.flush()
		}, [][]byte{pdu(10, 'a'), pdu(queueMax/2+1, 'L')}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc := &recordConn{}
			w := &pduWriter{c: rc}
			if err := tc.ops(w); err != nil {
				t.Fatal(err)
			}
			if len(rc.all) != len(tc.wantWrites) {
				t.Fatalf("%d writes, want %d", len(rc.all), len(tc.wantWrites))
			}
			for i := range rc.all {
				if !bytes.Equal(rc.all[i], tc.wantWrites[i]) {
					t.Errorf("write %d: %d bytes, want %d", i, len(rc.all[i]), len(tc.wantWrites[i]))
				}
			}
			if w.qbox != nil || int(w.bytes.Load()) != func() (n int) {
				for _, b := range tc.wantWrites {
					n += len(b)
				}
				return n
			}() {
				t.Errorf("after flush: queue held %v, bytes %d", w.qbox != nil, w.bytes.Load())
			}
		})
	}
}

// An A-ABORT discards what is queued and nothing is written after it.
func TestPDUWriterAbortDropsQueue(t *testing.T) {
	r, _, toBackend := fuzzRelay(t)
	_ = r.bw.writeQueued(pdataPDU(pdvItem(1, 2, []byte{1, 2, 3})))
	r.abortTo(r.bw, association.AbortReasonNotSpecified)
	if err := r.bw.writeQueued(pdataPDU(pdvItem(1, 2, []byte{4}))); !errors.Is(err, errEnded) {
		t.Fatalf("write after abort: %v", err)
	}
	_ = r.bw.flush()
	if toBackend.writes != 1 || association.PDUType(toBackend.last[0]) != association.TypeAbort {
		t.Fatalf("%d writes, last % x", toBackend.writes, toBackend.last)
	}
}

func FuzzRelayBackendPData(f *testing.F) {
	sub := (&dimse.Command{CommandField: dimse.CStoreRQ, MessageID: 1001, AffectedSOPClassUID: association.SecondaryCaptureImageStorage,
		AffectedSOPInstanceUID: "1.2.3.4", CommandDataSetType: 0}).Encode()
	pending := (&dimse.Command{CommandField: dimse.CGetRSP, MessageIDBeingRespondedTo: 7, Status: 0xff00, CommandDataSetType: dimse.NoDataSet}).Encode()
	f.Add(pdvItem(1, 3, sub), pdvItem(1, 2, []byte{0x10, 0, 0x20, 0, 'L', 'O', 4, 0, 'P', 'A', 'T', '1'}))
	f.Add(pdvItem(1, 1, sub[:9]), pdvItem(1, 3, sub[9:]))
	f.Add(pdvItem(3, 3, pending), []byte{})
	f.Add([]byte{0, 0, 0, 1, 1}, []byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		r, _, _ := fuzzRelay(t)
		r.pending[7] = &pendingOp{service: "C-GET", msgID: 7, start: time.Now()}
		asm, st := &dimse.Assembler{}, &backendState{}
		for _, body := range [][]byte{a, b} {
			err := r.backendPData(pdataPDU(body), asm, st)
			var pe *association.ProtocolError
			if err != nil && !errors.As(err, &pe) {
				t.Fatalf("non-protocol error %T %v", err, err)
			}
			if err != nil {
				return
			}
		}
		if len(r.subOps) > 2 {
			t.Fatalf("%d sub-operations from two PDUs", len(r.subOps))
		}
	})
}

// C-STORE requests from the backend are tracked as C-GET sub-operations
// (their data set's size counted) until the client's C-STORE-RSP.
func TestRelayCGetSubOperations(t *testing.T) {
	store := func(id, origin uint16) []byte {
		return pdvItem(1, 3, (&dimse.Command{CommandField: dimse.CStoreRQ, MessageID: id, AffectedSOPClassUID: association.SecondaryCaptureImageStorage,
			AffectedSOPInstanceUID: fmt.Sprintf("1.2.3.%d", id), CommandDataSetType: 0, MoveOriginatorMessageID: origin}).Encode())
	}
	rsp := func(id uint16, status uint16) []byte {
		return pdvItem(1, 3, (&dimse.Command{CommandField: dimse.CStoreRSP, MessageIDBeingRespondedTo: id, Status: status,
			AffectedSOPClassUID: association.SecondaryCaptureImageStorage, CommandDataSetType: dimse.NoDataSet}).Encode())
	}
	cases := []struct {
		name       string
		gets       []uint16 // client C-GETs outstanding
		backend    [][]byte // backend P-DATA-TF bodies
		wantDetail string
		wantBytes  int64
	}{
		{"one C-GET", []uint16{7}, [][]byte{store(1001, 0), pdvItem(1, 0, make([]byte, 100)), pdvItem(1, 2, make([]byte, 50))},
			"C-GET sub-operation of message 7", 150},
		{"command and data in one PDU", []uint16{7}, [][]byte{append(store(1001, 0), pdvItem(1, 2, make([]byte, 10))...)},
			"C-GET sub-operation of message 7", 10},
		{"two C-GETs, no originator", []uint16{9, 3}, [][]byte{store(1001, 0), pdvItem(1, 2, nil)},
			"C-GET sub-operation of one of messages 3, 9", 0},
		{"two C-GETs, originator names one", []uint16{9, 3}, [][]byte{store(1001, 9), pdvItem(1, 2, nil)},
			"C-GET sub-operation of message 9", 0},
		{"no C-GET", nil, [][]byte{store(1001, 0), pdvItem(1, 2, nil)},
			"C-STORE request from the backend outside any C-GET", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, _, _ := fuzzRelay(t)
			for _, id := range tc.gets {
				r.pending[id] = &pendingOp{service: "C-GET", msgID: id}
			}
			asm, st := &dimse.Assembler{}, &backendState{}
			for _, body := range tc.backend {
				if err := r.backendPData(pdataPDU(body), asm, st); err != nil {
					t.Fatal(err)
				}
			}
			op := r.subOps[1001]
			if op == nil {
				t.Fatalf("sub-operation not tracked: %v", r.subOps)
			}
			if op.detail != tc.wantDetail || op.bytes != tc.wantBytes || op.sopInstance != "1.2.3.1001" || op.service != "C-STORE" {
				t.Errorf("tracked %+v, want detail %q bytes %d", op, tc.wantDetail, tc.wantBytes)
			}
			if err := r.clientPData(pdataPDU(rsp(1001, 0xb000)), &dimse.Assembler{}, &clientState{}); err != nil {
				t.Fatal(err)
			}
			if len(r.subOps) != 0 {
				t.Errorf("still tracked after the client's C-STORE-RSP: %v", r.subOps)
			}
		})
	}
}

// A sub-operation whose data went to the client but which the client never
// answered (the association ended first) is still audited, without a
// status, when the association ends.
func TestRelayCGetSubOperationUnanswered(t *testing.T) {
	r, _, _ := fuzzRelay(t)
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	aw, err := audit.Open(audit.Config{File: file, PatientIDs: "plain"})
	if err != nil {
		t.Fatal(err)
	}
	r.c.s.Audit = aw
	r.c.start = time.Now()
	r.outcome = endOutcome{abortSource: "client", abortReason: "connection-closed"}
	r.pending[7] = &pendingOp{service: "C-GET", msgID: 7, start: time.Now()}
	sub := (&dimse.Command{CommandField: dimse.CStoreRQ, MessageID: 1001, AffectedSOPClassUID: association.SecondaryCaptureImageStorage,
		AffectedSOPInstanceUID: "1.2.3.1001", CommandDataSetType: 0}).Encode()
	body := append(pdvItem(1, 3, sub), pdvItem(1, 2, []byte{0x10, 0, 0x20, 0, 'L', 'O', 4, 0, 'P', 'A', 'T', '1'})...)
	if err := r.backendPData(pdataPDU(body), &dimse.Assembler{}, &backendState{}); err != nil {
		t.Fatal(err)
	}
	r.finish()
	if err := aw.Close(); err != nil {
		t.Fatal(err)
	}
	var got []audit.Event
	if err := audit.ReadFiles(audit.Files(file), audit.Filter{}, func(ev audit.Event, _ []byte) error {
		got = append(got, ev)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The C-GET itself, never answered, is recorded too (pending
	// operations are flushed with no status).
	if len(got) != 3 || got[0].Event != audit.EventDIMSE || got[1].Event != audit.EventDIMSE || got[2].Event != audit.EventAborted {
		t.Fatalf("records %+v, want the C-GET, the sub-operation, then association.aborted", got)
	}
	if get := got[0]; get.Service != "C-GET" || get.MessageID != 7 || get.Status != "" {
		t.Errorf("unanswered C-GET record %+v", get)
	}
	ev := got[1]
	if ev.Service != "C-STORE" || ev.SOPInstance != "1.2.3.1001" || ev.Status != "" || ev.Bytes != 12 || ev.PatientID != "PAT1" ||
		ev.Detail != "C-GET sub-operation of message 7; no C-STORE-RSP from the client" {
		t.Errorf("unanswered sub-operation record %+v", ev)
	}
}
