package inspect

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
)

type outcome int

const (
	pass      outcome = iota // forwarded as it came
	rewritten                // forwarded, but not as it came
	dropped                  // nothing forwarded
	aborted                  // protocol violation
)

func (o outcome) String() string { return [...]string{"pass", "rewritten", "dropped", "aborted"}[o] }

type step struct {
	from    Side
	pdu     []byte
	want    outcome
	reply   int                       // status of the edge's reply to the sender, -1: none
	records int                       // dimse records this PDU completes
	abortOn association.AbortReason   // with aborted
	msg     string                    // with aborted: part of the violation's message
	check   func(*testing.T, Verdict) // more checks
	state   State                     // the sender's state after the PDU (not checked when aborted)
}

// R and A: a step from the requestor or acceptor side.
func R(p []byte, want outcome) step { return step{from: Requestor, pdu: p, want: want, reply: -1} }
func A(p []byte, want outcome) step { return step{from: Acceptor, pdu: p, want: want, reply: -1} }

func (s step) replies(status uint16) step            { s.reply = int(status); return s }
func (s step) recs(n int) step                       { s.records = n; return s }
func (s step) in(st State) step                      { s.state = st; return s }
func (s step) then(f func(*testing.T, Verdict)) step { s.check = f; return s }
func (s step) violates(reason association.AbortReason, msg string) step {
	s.want, s.abortOn, s.msg = aborted, reason, msg
	return s
}

func run(t *testing.T, in *Inspector, steps []step) {
	t.Helper()
	for i, s := range steps {
		v := in.Feed(s.from, s.pdu)
		got := pass
		switch {
		case v.Violation != nil:
			got = aborted
		case !v.Pass && len(v.Forward) == 0:
			got = dropped
		case !v.Pass:
			got = rewritten
		}
		if got != s.want {
			t.Fatalf("step %d (%s): %s, want %s (violation %v)", i, s.from, got, s.want, v.Violation)
		}
		if got == aborted {
			if v.Violation.Reason != s.abortOn || !strings.Contains(v.Violation.Msg, s.msg) || v.Violation.From != s.from {
				t.Fatalf("step %d: violation %+v, want reason %v from %s with %q", i, v.Violation, s.abortOn, s.from, s.msg)
			}
			continue
		}
		if s.reply < 0 && len(v.Reply) > 0 {
			t.Fatalf("step %d: unexpected reply % x", i, v.Reply)
		}
		if s.reply >= 0 {
			cmds := commands(t, parsePDUs(t, v.Reply, 16384))
			if len(cmds) != 1 || cmds[0].Status != uint16(s.reply) || !cmds[0].HasStatus {
				t.Fatalf("step %d: reply %+v, want one response with status 0x%04X", i, cmds, s.reply)
			}
		}
		if len(v.Records) != s.records {
			t.Fatalf("step %d: %d records %+v, want %d", i, len(v.Records), v.Records, s.records)
		}
		if st := in.State(s.from); st != s.state {
			t.Fatalf("step %d: sender in state %s, want %s", i, st, s.state)
		}
		if s.check != nil {
			s.check(t, v)
		}
		in.Release(s.from)
	}
}

func TestInspector(t *testing.T) {
	all := rulePolicy{services: allServices, moveDests: []string{"GOODAE"}}
	ct := storeRQ(1, ctStorage)
	ds := patientDataSet("PAT-1")
	nAction := func(affected, requested string) *dimse.Command {
		return &dimse.Command{CommandField: dimse.NActionRQ, MessageID: 4, AffectedSOPClassUID: affected,
			RequestedSOPClassUID: requested, RequestedSOPInstanceUID: instanceUID, CommandDataSetType: dimse.NoDataSet}
	}
	findRQ := withData(&dimse.Command{CommandField: dimse.CFindRQ, MessageID: 2, AffectedSOPClassUID: findModel})
	getRQ := withData(&dimse.Command{CommandField: dimse.CGetRQ, MessageID: 7, AffectedSOPClassUID: getModel})
	findRSP := withData(rsp(dimse.CFindRSP, 2, findModel, dimse.StatusPending))
	subStore := storeRQ(1001, ctStorage)
	subStore.MoveOriginatorMessageID = 7
	cmdBytes := ct.Encode()

	cases := []struct {
		name  string
		pol   Policy
		steps []step
	}{
		{"C-ECHO and its response pass unchanged", all, []step{
			R(pdu(cmdPDV(ctxEcho, echoRQ(1))), pass),
			A(pdu(cmdPDV(ctxEcho, rsp(dimse.CEchoRSP, 1, association.VerificationSOPClass, 0))), pass).recs(1).then(
				func(t *testing.T, v Verdict) {
					r := v.Records[0]
					if r.Service != "C-ECHO" || r.StatusHex() != "0x0000" || !r.Allowed || r.From != Requestor {
						t.Errorf("record %+v", r)
					}
				}),
		}},
		{"C-STORE with its data set: bytes and patient ID audited", all, []step{
			R(pdu(cmdPDV(ctxCT, ct), dataPDV(ctxCT, false, ds[:6])), pass).in(InDataSet),
			R(pdu(dataPDV(ctxCT, true, ds[6:])), pass),
			A(pdu(cmdPDV(ctxCT, rsp(dimse.CStoreRSP, 1, ctStorage, 0))), pass).recs(1).then(func(t *testing.T, v Verdict) {
				r := v.Records[0]
				if r.Bytes != int64(len(ds)) || r.PatientID != "PAT-1" || r.SOPInstance != instanceUID || r.Duration <= 0 {
					t.Errorf("record %+v", r)
				}
			}),
		}},
		{"the response before the end of the data set: the record waits for it", all, []step{
			R(pdu(cmdPDV(ctxCT, ct), dataPDV(ctxCT, false, ds[:6])), pass).in(InDataSet),
			A(pdu(cmdPDV(ctxCT, rsp(dimse.CStoreRSP, 1, ctStorage, 0xA700))), pass),
			R(pdu(dataPDV(ctxCT, true, ds[6:])), pass).recs(1),
		}},
		{"a refused C-STORE: 0x0124 from the edge, command and data set swallowed", rulePolicy{services: []string{"C-ECHO"}}, []step{
			R(pdu(cmdPDV(ctxCT, ct), dataPDV(ctxCT, false, ds[:4])), dropped).replies(0x0124).recs(1).in(DiscardDataSet).then(
				func(t *testing.T, v Verdict) {
					if v.Records[0].Allowed || v.Records[0].StatusHex() != "0x0124" {
						t.Errorf("record %+v", v.Records[0])
					}
				}),
			R(pdu(dataPDV(ctxCT, false, ds[4:8])), dropped).in(DiscardDataSet),
			R(pdu(dataPDV(ctxCT, true, ds[8:]), cmdPDV(ctxEcho, echoRQ(2))), rewritten).then(func(t *testing.T, v Verdict) {
				got := parsePDUs(t, v.Forward, 16384)
				if len(got) != 1 || got[0].ctx != ctxEcho || !got[0].command {
					t.Errorf("forwarded %+v, want only the C-ECHO-RQ", got)
				}
			}),
		}},
		{"data set with no command", all, []step{
			R(pdu(dataPDV(ctxCT, true, ds)), aborted).violates(association.AbortUnexpectedPDUParameter, "no command"),
		}},
		{"the data set of a refused request whose command said no data set", rulePolicy{services: []string{"C-ECHO"}}, []step{
			R(pdu(cmdPDV(ctxCT, &dimse.Command{CommandField: dimse.CStoreRQ, MessageID: 1, AffectedSOPClassUID: ctStorage,
				AffectedSOPInstanceUID: instanceUID, CommandDataSetType: dimse.NoDataSet})), dropped).replies(0x0124).recs(1),
			R(pdu(dataPDV(ctxCT, true, ds)), aborted).violates(association.AbortUnexpectedPDUParameter, "no command"),
		}},
		{"the data set on another context than its command", all, []step{
			R(pdu(cmdPDV(ctxCT, ct)), pass).in(InDataSet),
			R(pdu(dataPDV(ctxMR, true, ds)), aborted).violates(association.AbortUnexpectedPDUParameter, "its command came on 3"),
		}},
		{"a refused request's data set on another context", rulePolicy{services: []string{"C-ECHO"}}, []step{
			R(pdu(cmdPDV(ctxCT, ct)), dropped).replies(0x0124).recs(1).in(DiscardDataSet),
			R(pdu(dataPDV(ctxMR, true, ds)), aborted).violates(association.AbortUnexpectedPDUParameter, "its command came on 3"),
		}},
		{"a command in the middle of a data set", all, []step{
			R(pdu(cmdPDV(ctxCT, ct), dataPDV(ctxCT, false, ds)), pass).in(InDataSet),
			R(pdu(cmdPDV(ctxEcho, echoRQ(2))), aborted).violates(association.AbortUnexpectedPDUParameter, "data set in progress"),
		}},
		{"data inside a fragmented command", all, []step{
			R(pdu(pdv(ctxCT, true, false, cmdBytes[:10])), dropped).in(InCommand),
			R(pdu(dataPDV(ctxCT, true, ds)), aborted).violates(association.AbortUnexpectedPDUParameter, "before the command's last fragment"),
		}},
		{"command fragments on two contexts", all, []step{
			R(pdu(pdv(ctxCT, true, false, cmdBytes[:10])), dropped).in(InCommand),
			R(pdu(pdv(ctxMR, true, true, cmdBytes[10:])), aborted).violates(association.AbortUnexpectedPDUParameter, "contexts 3 and 5"),
		}},
		{"a PDV on a context not accepted", all, []step{
			R(pdu(cmdPDV(17, echoRQ(1))), aborted).violates(association.AbortInvalidPDUParameterValue, "not accepted"),
		}},
		{"a fragmented command is held, then forwarded whole in one PDV", all, []step{
			R(pdu(pdv(ctxCT, true, false, cmdBytes[:10]), pdv(ctxCT, true, false, cmdBytes[10:20])), dropped).in(InCommand),
			R(pdu(pdv(ctxCT, true, true, cmdBytes[20:]), dataPDV(ctxCT, true, ds)), rewritten).then(func(t *testing.T, v Verdict) {
				got := parsePDUs(t, v.Forward, 16384)
				if len(got) != 2 || !got[0].command || !got[0].last || !bytes.Equal(got[0].data, cmdBytes) ||
					got[1].command || !got[1].last || !bytes.Equal(got[1].data, ds) {
					t.Errorf("forwarded %+v", got)
				}
			}),
		}},
		{"empty command fragments count against the bound", all, func() []step {
			var items [][]byte
			for range MaxCommandFragments + 1 {
				items = append(items, pdv(ctxCT, true, false, nil))
			}
			return []step{R(pdu(items...), aborted).violates(association.AbortInvalidPDUParameterValue, "command set over")}
		}()},
		{"command bytes count their PDV headers", all, func() []step {
			var steps []step
			frag := make([]byte, 16000)
			for i := 0; i < 4; i++ {
				steps = append(steps, R(pdu(pdv(ctxCT, true, false, frag)), dropped).in(InCommand))
			}
			// 4 × (16000 + 6) = 64024 bytes; 1,512 more reach the bound with the headers, not without.
			steps = append(steps, R(pdu(pdv(ctxCT, true, false, make([]byte, 1507))), aborted).violates(
				association.AbortInvalidPDUParameterValue, "command set over"))
			return steps
		}()},
		{"requestor's C-STORE-RSP with no acceptor request", all, []step{
			R(pdu(cmdPDV(ctxCT, rsp(dimse.CStoreRSP, 1, ctStorage, 0))), aborted).violates(association.AbortUnexpectedPDUParameter, "has not sent"),
		}},
		{"requestor's C-GET-RSP with no acceptor request", all, []step{
			R(pdu(cmdPDV(ctxGet, rsp(dimse.CGetRSP, 1, getModel, 0))), aborted).violates(association.AbortUnexpectedPDUParameter, "has not sent"),
		}},
		{"requestor's C-FIND-RSP carrying an identifier, with no acceptor request", all, []step{
			R(pdu(cmdPDV(ctxFind, findRSP), dataPDV(ctxFind, true, ds)), aborted).violates(association.AbortUnexpectedPDUParameter, "has not sent"),
		}},
		{"requestor answers the acceptor's C-FIND-RSP's message ID: still not its request", all, []step{
			R(pdu(cmdPDV(ctxFind, findRQ), dataPDV(ctxFind, true, ds)), pass),
			R(pdu(cmdPDV(ctxFind, findRSP), dataPDV(ctxFind, true, ds)), aborted).violates(association.AbortUnexpectedPDUParameter, "has not sent"),
		}},
		{"C-FIND: pending responses with identifiers, then the final one", all, []step{
			R(pdu(cmdPDV(ctxFind, findRQ), dataPDV(ctxFind, true, ds)), pass),
			A(pdu(cmdPDV(ctxFind, findRSP), dataPDV(ctxFind, true, ds)), pass),
			A(pdu(cmdPDV(ctxFind, findRSP)), pass).in(InDataSet),
			A(pdu(dataPDV(ctxFind, true, ds)), pass),
			A(pdu(cmdPDV(ctxFind, rsp(dimse.CFindRSP, 2, findModel, 0))), pass).recs(1),
			A(pdu(cmdPDV(ctxFind, rsp(dimse.CFindRSP, 2, findModel, 0))), aborted).violates(association.AbortUnexpectedPDUParameter, "has not sent or had answered"),
		}},
		{"a response on another context than its request", all, []step{
			R(pdu(cmdPDV(ctxEcho, echoRQ(1))), pass),
			A(pdu(cmdPDV(ctxCT, rsp(dimse.CEchoRSP, 1, association.VerificationSOPClass, 0))), aborted).violates(
				association.AbortUnexpectedPDUParameter, "its request came on 1"),
		}},
		{"a response of another service than its request", all, []step{
			R(pdu(cmdPDV(ctxEcho, echoRQ(1))), pass),
			A(pdu(cmdPDV(ctxEcho, rsp(dimse.CStoreRSP, 1, association.VerificationSOPClass, 0))), aborted).violates(
				association.AbortUnexpectedPDUParameter, "a C-ECHO-RQ"),
		}},
		{"N-ACTION: allowed Affected, disallowed Requested SOP Class", rulePolicy{services: allServices, sopClasses: []string{printMgmt, commitPush}}, []step{
			R(pdu(cmdPDV(ctxPrint, nAction(printMgmt, printer))), dropped).replies(0x0124).recs(1).then(func(t *testing.T, v Verdict) {
				r := v.Records[0]
				if r.SOPClass != printer || r.SOPInstance != instanceUID || r.Service != "N-ACTION" || r.Allowed {
					t.Errorf("record %+v, want the Requested SOP Class and Instance", r)
				}
			}),
			R(pdu(cmdPDV(ctxCommit, nAction("", commitPush))), pass),
		}},
		{"N-SET on a disallowed Requested SOP Class", rulePolicy{services: allServices, sopClasses: []string{printMgmt}}, []step{
			R(pdu(cmdPDV(ctxPrint, withData(&dimse.Command{CommandField: dimse.NSetRQ, MessageID: 3, RequestedSOPClassUID: filmSession,
				RequestedSOPInstanceUID: instanceUID})), dataPDV(ctxPrint, true, ds)), dropped).replies(0x0124).recs(1),
		}},
		{"C-STORE whose SOP class is not its context's: 0x0122", all, []step{
			R(pdu(cmdPDV(ctxCT, storeRQ(1, mrStorage)), dataPDV(ctxCT, true, ds)), dropped).replies(0x0122).recs(1),
		}},
		{"C-STORE of a SOP class the rule does not list", rulePolicy{services: allServices, sopClasses: []string{mrStorage}}, []step{
			R(pdu(cmdPDV(ctxCT, ct)), dropped).replies(0x0124).recs(1).in(DiscardDataSet),
		}},
		{"C-MOVE to a destination the rule does not list", all, []step{
			R(pdu(cmdPDV(ctxMove, withData(&dimse.Command{CommandField: dimse.CMoveRQ, MessageID: 5, AffectedSOPClassUID: moveModel,
				MoveDestination: "EVIL"})), dataPDV(ctxMove, true, ds)), dropped).replies(0x0124).recs(1).then(func(t *testing.T, v Verdict) {
				if v.Records[0].MoveDestination != "EVIL" {
					t.Errorf("record %+v", v.Records[0])
				}
			}),
		}},
		{"a duplicate message ID: 0x0210", all, []step{
			R(pdu(cmdPDV(ctxEcho, echoRQ(1))), pass),
			R(pdu(cmdPDV(ctxEcho, echoRQ(1))), dropped).replies(0x0210).recs(1),
		}},
		{"C-GET: the acceptor's C-STORE sub-operation and the requestor's answer", all, []step{
			R(pdu(cmdPDV(ctxGet, getRQ), dataPDV(ctxGet, true, ds)), pass),
			A(pdu(cmdPDV(ctxCT, subStore), dataPDV(ctxCT, true, patientDataSet("SUB"))), pass),
			R(pdu(cmdPDV(ctxCT, rsp(dimse.CStoreRSP, 1001, ctStorage, 0))), pass).recs(1).then(func(t *testing.T, v Verdict) {
				r := v.Records[0]
				if r.Detail != "C-GET sub-operation of message 7" || r.From != Acceptor || r.PatientID != "SUB" || r.MessageID != 1001 {
					t.Errorf("record %+v", r)
				}
			}),
			A(pdu(cmdPDV(ctxGet, rsp(dimse.CGetRSP, 7, getModel, 0))), pass).recs(1),
		}},
		{"the acceptor's C-STORE-RQ where the requestor has no SCP role", all, []step{
			A(pdu(cmdPDV(ctxMR, storeRQ(1001, mrStorage))), aborted).violates(association.AbortUnexpectedPDUParameter, "SCP role"),
		}},
		{"the acceptor's C-FIND-RQ", all, []step{
			A(pdu(cmdPDV(ctxFind, findRQ)), aborted).violates(association.AbortUnexpectedPDUParameter, "SCP role"),
		}},
		{"N-EVENT-REPORT from the acceptor, answered by the requestor", all, []step{
			A(pdu(cmdPDV(ctxCommit, withData(&dimse.Command{CommandField: dimse.NEventReportRQ, MessageID: 9,
				AffectedSOPClassUID: commitPush, AffectedSOPInstanceUID: instanceUID})), dataPDV(ctxCommit, true, ds)), pass),
			R(pdu(cmdPDV(ctxCommit, rsp(dimse.NEventReportRSP, 9, commitPush, 0))), pass).recs(1),
			R(pdu(cmdPDV(ctxCommit, rsp(dimse.NEventReportRSP, 9, commitPush, 0))), aborted).violates(association.AbortUnexpectedPDUParameter, "has not sent"),
		}},
		{"C-CANCEL of an outstanding C-FIND is forwarded; of nothing, dropped", all, []step{
			R(pdu(cmdPDV(ctxFind, findRQ), dataPDV(ctxFind, true, ds)), pass),
			R(pdu(cmdPDV(ctxFind, &dimse.Command{CommandField: dimse.CCancelRQ, MessageIDBeingRespondedTo: 2, CommandDataSetType: dimse.NoDataSet})), pass),
			R(pdu(cmdPDV(ctxFind, &dimse.Command{CommandField: dimse.CCancelRQ, MessageIDBeingRespondedTo: 99, CommandDataSetType: dimse.NoDataSet})), dropped),
			R(pdu(cmdPDV(ctxFind, withData(&dimse.Command{CommandField: dimse.CCancelRQ, MessageIDBeingRespondedTo: 2}))), aborted).violates(
				association.AbortInvalidPDUParameterValue, "with a data set"),
		}},
		{"a data set on a message whose service has none, or none where it needs one (PS3.7)", all, []step{
			R(pdu(cmdPDV(ctxEcho, withData(echoRQ(1))), dataPDV(ctxEcho, true, ds)), aborted).violates(
				association.AbortUnexpectedPDUParameter, "C-ECHO-RQ with a data set"),
		}},
		{"a C-FIND-RQ without its identifier", all, []step{
			R(pdu(cmdPDV(ctxFind, &dimse.Command{CommandField: dimse.CFindRQ, MessageID: 2, AffectedSOPClassUID: findModel,
				CommandDataSetType: dimse.NoDataSet})), aborted).violates(association.AbortUnexpectedPDUParameter, "without the data set"),
		}},
		{"a pending C-STORE-RSP", all, []step{
			R(pdu(cmdPDV(ctxGet, withData(&dimse.Command{CommandField: dimse.CGetRQ, MessageID: 7, AffectedSOPClassUID: getModel})),
				dataPDV(ctxGet, true, ds)), pass),
			A(pdu(cmdPDV(ctxCT, storeRQ(1001, ctStorage)), dataPDV(ctxCT, true, ds)), pass),
			R(pdu(cmdPDV(ctxCT, rsp(dimse.CStoreRSP, 1001, ctStorage, dimse.StatusPending))), aborted).violates(
				association.AbortUnexpectedPDUParameter, "no pending responses"),
		}},
		{"a C-STORE-RSP with a data set", all, []step{
			R(pdu(cmdPDV(ctxGet, withData(&dimse.Command{CommandField: dimse.CGetRQ, MessageID: 7, AffectedSOPClassUID: getModel})),
				dataPDV(ctxGet, true, ds)), pass),
			A(pdu(cmdPDV(ctxCT, storeRQ(1001, ctStorage)), dataPDV(ctxCT, true, ds)), pass),
			R(pdu(cmdPDV(ctxCT, withData(rsp(dimse.CStoreRSP, 1001, ctStorage, 0))), dataPDV(ctxCT, true, ds)), aborted).violates(
				association.AbortUnexpectedPDUParameter, "C-STORE-RSP with a data set"),
		}},
		{"the acceptor's C-STORE-RQ with no C-GET outstanding", all, []step{
			A(pdu(cmdPDV(ctxCT, storeRQ(1001, ctStorage)), dataPDV(ctxCT, true, ds)), aborted).violates(
				association.AbortUnexpectedPDUParameter, "no C-GET outstanding"),
		}},
		{"a malformed command set", all, []step{
			R(pdu(pdv(ctxEcho, true, true, []byte{1, 2, 3})), aborted).violates(association.AbortInvalidPDUParameterValue, ""),
		}},
		{"after a violation, nothing is judged", all, []step{
			R(pdu(dataPDV(ctxCT, true, ds)), aborted).violates(association.AbortUnexpectedPDUParameter, "no command"),
			R(pdu(cmdPDV(ctxEcho, echoRQ(1))), aborted).violates(association.AbortUnexpectedPDUParameter, "no command"),
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			run(t, newTestInspector(tc.pol), tc.steps)
		})
	}
}

// TestInspectorFinish: what the association ended before completing is
// recorded, with no status.
func TestInspectorFinish(t *testing.T) {
	in := newTestInspector(rulePolicy{services: allServices})
	getRQ := withData(&dimse.Command{CommandField: dimse.CGetRQ, MessageID: 7, AffectedSOPClassUID: getModel})
	run(t, in, []step{
		R(pdu(cmdPDV(ctxCT, storeRQ(1, ctStorage)), dataPDV(ctxCT, false, []byte{1, 2})), pass).in(InDataSet),
	})
	in2 := newTestInspector(rulePolicy{services: allServices})
	run(t, in2, []step{
		R(pdu(cmdPDV(ctxGet, getRQ), dataPDV(ctxGet, true, []byte{1, 2})), pass),
		A(pdu(cmdPDV(ctxCT, storeRQ(1001, ctStorage)), dataPDV(ctxCT, true, []byte{1, 2})), pass),
	})
	recs := in.Finish()
	if len(recs) != 1 || recs[0].HasStatus || recs[0].Class() != "incomplete" || recs[0].Bytes != 2 {
		t.Errorf("records %+v", recs)
	}
	recs = in2.Finish()
	if len(recs) != 2 || recs[0].Service != "C-GET" || recs[1].Detail != "C-GET sub-operation of message 7; patient_id could not be determined: the data set ended inside an element; no response" || !recs[1].Unanswered {
		t.Errorf("records %+v", recs)
	}
	if v := in.Feed(Requestor, pdu(cmdPDV(ctxEcho, echoRQ(3)))); v.Violation == nil {
		t.Error("judged after Finish")
	}
}

// upperFilter stands for an attribute rewrite: it forwards each fragment
// upper-cased, plus a marker at the end.
type upperFilter struct{}

func (upperFilter) Filter(dst, data []byte, last bool) []byte {
	dst = append(dst, bytes.ToUpper(data)...)
	if last {
		dst = append(dst, "!!"...)
	}
	return dst
}

// TestInspectorFilter: a DataFilter's bytes are forwarded instead of the
// data set as it came (the way C-FIND responses get rewritten).
func TestInspectorFilter(t *testing.T) {
	in := newTestInspector(rulePolicy{services: allServices}, func(c *Config) {
		c.Filter = func(from Side, cmd *dimse.Command, ctx Context) DataFilter {
			if from == Acceptor && cmd.CommandField == dimse.CFindRSP {
				return upperFilter{}
			}
			return nil
		}
	})
	findRQ := withData(&dimse.Command{CommandField: dimse.CFindRQ, MessageID: 2, AffectedSOPClassUID: findModel})
	run(t, in, []step{
		R(pdu(cmdPDV(ctxFind, findRQ), dataPDV(ctxFind, true, []byte("query"))), pass),
		A(pdu(cmdPDV(ctxFind, withData(rsp(dimse.CFindRSP, 2, findModel, dimse.StatusPending))), dataPDV(ctxFind, false, []byte("abc"))), rewritten).in(InDataSet),
		A(pdu(dataPDV(ctxFind, true, []byte("de"))), rewritten).then(func(t *testing.T, v Verdict) {
			got := parsePDUs(t, v.Forward, 16384)
			if len(got) != 1 || string(got[0].data) != "DE!!" || !got[0].last {
				t.Errorf("forwarded %+v", got)
			}
		}),
	})
}

// TestInspectorSplitsHeldCommand: a command held from fragments goes out
// in PDUs the receiver accepts.
func TestInspectorSplitsHeldCommand(t *testing.T) {
	in := newTestInspector(rulePolicy{services: allServices}, func(c *Config) { c.MaxPDU[Acceptor] = 64 })
	cmd := storeRQ(1, ctStorage)
	b := cmd.Encode()
	v := in.Feed(Requestor, pdu(pdv(ctxCT, true, false, b[:50])))
	in.Release(Requestor)
	v = in.Feed(Requestor, pdu(pdv(ctxCT, true, true, b[50:])))
	got := parsePDUs(t, v.Forward, 64)
	if c := commands(t, got); len(c) != 1 || c[0].MessageID != 1 || len(got) < 2 {
		t.Fatalf("forwarded %d PDVs, commands %+v", len(got), c)
	}
}

// TestInspectorOutstandingBound: a side cannot keep more than
// MaxOutstanding requests open.
func TestInspectorOutstandingBound(t *testing.T) {
	in := newTestInspector(rulePolicy{services: allServices})
	for i := 1; i <= MaxOutstanding; i++ {
		if v := in.Feed(Requestor, pdu(cmdPDV(ctxEcho, echoRQ(uint16(i))))); !v.Pass {
			t.Fatalf("request %d: %+v", i, v)
		}
	}
	v := in.Feed(Requestor, pdu(cmdPDV(ctxEcho, echoRQ(uint16(MaxOutstanding+1)))))
	cmds := commands(t, parsePDUs(t, v.Reply, 16384))
	if len(cmds) != 1 || cmds[0].Status != dimse.StatusResourceLimitation {
		t.Fatalf("verdict %+v", v)
	}
}

// TestInspectorRefusalsPerPDUBound: the edge answers at most MaxOutstanding
// refused requests of one PDU; past that the PDU breaks the protocol, so a
// requestor that announced a 7-byte maximum cannot have one PDU of requests
// turned into megabytes of replies the edge holds.
func TestInspectorRefusalsPerPDUBound(t *testing.T) {
	for _, n := range []int{MaxOutstanding, MaxOutstanding + 1} {
		in := newTestInspector(rulePolicy{services: []string{"C-STORE"}}, func(c *Config) { c.MaxPDU[Requestor] = 7 })
		var items [][]byte
		for i := 1; i <= n; i++ {
			items = append(items, cmdPDV(ctxEcho, echoRQ(uint16(i))))
		}
		v := in.Feed(Requestor, pdu(items...))
		switch {
		case n <= MaxOutstanding && (v.Violation != nil || len(commands(t, parsePDUs(t, v.Reply, 7))) != n):
			t.Fatalf("%d refused requests in one PDU: violation %v, %d bytes of replies", n, v.Violation, len(v.Reply))
		case n > MaxOutstanding && (v.Violation == nil || v.Violation.Reason != association.AbortUnexpectedPDUParameter):
			t.Fatalf("%d refused requests in one PDU: violation %v, %d bytes of replies", n, v.Violation, len(v.Reply))
		}
		if len(v.Records) != min(n, MaxOutstanding) {
			t.Fatalf("%d refused requests in one PDU: %d records", n, len(v.Records))
		}
	}
}

func ExampleInspector() {
	in := New(Config{
		Contexts: []Context{{ID: 1, AbstractSyntax: association.VerificationSOPClass, TransferSyntax: association.ImplicitVRLittleEndian}},
		Policy:   rulePolicy{services: []string{"C-STORE"}}, Rule: "stores-only",
		MaxPDU: [2]uint32{16384, 16384},
	})
	v := in.Feed(Requestor, pdu(cmdPDV(1, echoRQ(1))))
	fmt.Println("forwarded:", v.Pass || len(v.Forward) > 0, "reply:", len(v.Reply) > 0, "allowed:", v.Records[0].Allowed, v.Records[0].StatusHex())
	// Output: forwarded: false reply: true allowed: false 0x0124
}

// A refusal earlier in a PDU that then breaks the protocol is still
// recorded, though nothing of the PDU is sent.
func TestInspectorViolationKeepsEarlierRecords(t *testing.T) {
	in := newTestInspector(rulePolicy{services: []string{"C-ECHO"}})
	v := in.Feed(Requestor, pdu(cmdPDV(ctxCT, storeRQ(1, ctStorage)), dataPDV(ctxCT, true, []byte{1, 2}),
		dataPDV(ctxCT, true, []byte{3, 4})))
	if v.Violation == nil || len(v.Records) != 1 || v.Records[0].Allowed || v.Pass || len(v.Forward) != 0 || len(v.Reply) != 0 {
		t.Fatalf("verdict %+v", v)
	}
}

// TestInspectorViolationUnforwardedRequests: a request allowed inside a PDU
// that then breaks the protocol is never forwarded (the verdict is the
// violation alone), so its record must not say it was allowed through,
// whether it comes with the violation or from Finish.
func TestInspectorViolationUnforwardedRequests(t *testing.T) {
	getRQ := withData(&dimse.Command{CommandField: dimse.CGetRQ, MessageID: 7, AffectedSOPClassUID: getModel})
	cases := []struct {
		name    string
		before  []step // PDUs forwarded first
		from    Side
		pdu     []byte
		service string
	}{
		{name: "C-ECHO then data with no command", from: Requestor,
			pdu:     pdu(cmdPDV(ctxEcho, echoRQ(1)), dataPDV(ctxEcho, true, []byte{1, 2})),
			service: "C-ECHO"},
		{name: "C-STORE then data on another context", from: Requestor,
			pdu:     pdu(cmdPDV(ctxCT, storeRQ(1, ctStorage)), dataPDV(ctxMR, true, []byte{1, 2})),
			service: "C-STORE"},
		{name: "C-STORE data set then a second last data PDV", from: Requestor,
			pdu: pdu(cmdPDV(ctxCT, storeRQ(1, ctStorage)), dataPDV(ctxCT, true, []byte{1, 2}),
				dataPDV(ctxCT, true, []byte{3, 4})),
			service: "C-STORE"},
		{name: "C-GET sub-operation then data on another context", from: Acceptor,
			before:  []step{R(pdu(cmdPDV(ctxGet, getRQ), dataPDV(ctxGet, true, []byte{1, 2})), pass)},
			pdu:     pdu(cmdPDV(ctxCT, storeRQ(1001, ctStorage)), dataPDV(ctxMR, true, []byte{1, 2})),
			service: "C-STORE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := newTestInspector(rulePolicy{services: allServices})
			run(t, in, tc.before)
			v := in.Feed(tc.from, tc.pdu)
			if v.Violation == nil || v.Pass || len(v.Forward) != 0 {
				t.Fatalf("verdict %+v, want a violation with nothing forwarded", v)
			}
			recs := append(slices.Clone(v.Records), in.Finish()...)
			n := 0
			for _, r := range recs {
				if r.Service != tc.service || r.From != tc.from {
					continue
				}
				n++
				if r.Allowed {
					t.Errorf("record %+v says allowed; the request never went across", r)
				}
				if !strings.Contains(r.Detail, "not forwarded") {
					t.Errorf("record detail %q does not say it was not forwarded", r.Detail)
				}
			}
			if n != 1 {
				t.Errorf("%d records of the %s, want 1: %+v", n, tc.service, recs)
			}
		})
	}
}

// implicitElement is one Implicit VR LE element.
func implicitElement(g, e uint16, v string) []byte {
	if len(v)%2 == 1 {
		v += " "
	}
	b := binary.LittleEndian.AppendUint16(binary.LittleEndian.AppendUint16(nil, g), e)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

// TestInspectorDataSetOrder: a C-STORE data set whose top-level elements
// are out of tag order, or repeat one (PS3.5 7.1), is a violation found in
// the PDU that shows it, so its last fragment never goes across; the
// record names the tags. A rule that allows it passes it, says so in the
// record and keeps the first Patient ID. The check runs whether or not the
// audit wants Patient ID.
func TestInspectorDataSetOrder(t *testing.T) {
	head := slices.Concat(implicitElement(0x0008, 0x0018, instanceUID), implicitElement(0x0008, 0x0060, "OT"))
	pixels := implicitElement(0x7FE0, 0x0010, strings.Repeat("\x00", 64))
	cases := []struct {
		name string
		rest []byte // after head, in the second data PDU
		tags string
		pid  string // the record's Patient ID when allowed
	}{
		{name: "patient ID repeated", tags: "(0010,0020) repeated", pid: "HARMLESS",
			rest: slices.Concat(implicitElement(0x0010, 0x0020, "HARMLESS"), implicitElement(0x0010, 0x0020, "OTHER"), pixels)},
		{name: "two elements swapped", tags: "(0010,0010) after (0010,0020)", pid: "P1",
			rest: slices.Concat(implicitElement(0x0010, 0x0020, "P1"), implicitElement(0x0010, 0x0010, "Doe^Jane"), pixels)},
	}
	for _, tc := range cases {
		for _, scan := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/scan=%v", tc.name, scan), func(t *testing.T) {
				in := newTestInspector(rulePolicy{services: allServices}, func(c *Config) { c.ScanPatientID = scan })
				v := in.Feed(Requestor, pdu(cmdPDV(ctxCT, storeRQ(1, ctStorage)), dataPDV(ctxCT, false, head)))
				if v.Violation != nil || !v.Pass {
					t.Fatalf("first PDU: %+v", v)
				}
				v = in.Feed(Requestor, pdu(dataPDV(ctxCT, true, tc.rest)))
				if v.Violation == nil || v.Pass || len(v.Forward) != 0 {
					t.Fatalf("second PDU: %+v, want a violation with nothing forwarded", v)
				}
				if v.Violation.Reason != association.AbortInvalidPDUParameterValue || v.Violation.From != Requestor ||
					!strings.HasPrefix(v.Violation.Msg, MalformedDataSet+": "+tc.tags) {
					t.Fatalf("violation %+v", v.Violation)
				}
				if len(v.Records) != 1 || v.Records[0].Allowed || v.Records[0].HasStatus ||
					v.Records[0].Detail != MalformedDataSet+": "+tc.tags {
					t.Fatalf("records %+v", v.Records)
				}
				if recs := in.Finish(); len(recs) != 0 {
					t.Fatalf("Finish recorded it again: %+v", recs)
				}
			})
		}
		t.Run(tc.name+"/allowed", func(t *testing.T) {
			in := newTestInspector(rulePolicy{services: allServices}, func(c *Config) { c.AllowUnsortedDataSets = true })
			run(t, in, []step{
				R(pdu(cmdPDV(ctxCT, storeRQ(1, ctStorage)), dataPDV(ctxCT, false, head)), pass).in(InDataSet),
				R(pdu(dataPDV(ctxCT, true, tc.rest)), pass).then(func(t *testing.T, v Verdict) {
					if len(v.Notes) != 1 || !strings.Contains(fmt.Sprint(v.Notes[0].Args...), tc.tags) {
						t.Fatalf("notes %+v, want one naming %s", v.Notes, tc.tags)
					}
				}),
			})
			v := in.Feed(Acceptor, pdu(cmdPDV(ctxCT, rsp(dimse.CStoreRSP, 1, ctStorage, 0))))
			if len(v.Records) != 1 {
				t.Fatalf("records %+v", v.Records)
			}
			r := v.Records[0]
			if !r.Allowed || r.PatientID != tc.pid || !r.HasPatientID ||
				r.Detail != UnsortedDataSet+" by rule r: "+tc.tags+" (PS3.5 7.1)" {
				t.Fatalf("record %+v", r)
			}
		})
	}
	// In order: no note, no violation.
	in := newTestInspector(rulePolicy{services: allServices})
	run(t, in, []step{R(pdu(cmdPDV(ctxCT, storeRQ(1, ctStorage)), dataPDV(ctxCT, false, head),
		dataPDV(ctxCT, true, slices.Concat(implicitElement(0x0010, 0x0010, "Doe^Jane"), implicitElement(0x0010, 0x0020, "P2"), pixels))), pass)})
	v := in.Feed(Acceptor, pdu(cmdPDV(ctxCT, rsp(dimse.CStoreRSP, 1, ctStorage, 0))))
	if len(v.Records) != 1 || v.Records[0].Detail != "" || v.Records[0].PatientID != "P2" {
		t.Fatalf("records %+v", v.Records)
	}
}
