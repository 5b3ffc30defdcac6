package proxy

import (
	"crypto/tls"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/internal/testpeer"
	"github.com/dicomedge/dicomedge/proxy/inspect"
	"github.com/dicomedge/dicomedge/spool"
)

// The answer path's A-ASSOCIATE-AC echoes the RQ's called AE
// title (PS3.8 9.3.3: the AC's called and calling AE fields are those of
// the RQ), even when the rule answers under a title other than the edge's
// own; and a C-CANCEL-RQ, which has no response (PS3.7 9.3.2.3), is
// ignored rather than answered with an invented command.
func TestAnswerEchoesCalledAEAndIgnoresCancel(t *testing.T) {
	e := startEdge(t, edgeOptions{Rules: `
rule "alias" {
  when {
    client_cn = ["client"]
    called_ae = ["ALIASAE"]
  }
  answer {}
}
`})
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	ac := associate(t, c, echoRQ("GOCLIENT", "ALIASAE"))
	if ac.CalledAE != "ALIASAE" || ac.CallingAE != "GOCLIENT" {
		t.Errorf("AC called/calling AE = %q/%q, want the RQ's ALIASAE/GOCLIENT", ac.CalledAE, ac.CallingAE)
	}

	cancel := &dimse.Command{CommandField: dimse.CCancelRQ, MessageIDBeingRespondedTo: 3, CommandDataSetType: dimse.NoDataSet}
	if err := dimse.WriteMessage(c, 1, cancel, nil, 16384); err != nil {
		t.Fatal(err)
	}
	echo := &dimse.Command{CommandField: dimse.CEchoRQ, MessageID: 4, AffectedSOPClassUID: association.VerificationSOPClass, CommandDataSetType: dimse.NoDataSet}
	if err := dimse.WriteMessage(c, 1, echo, nil, 16384); err != nil {
		t.Fatal(err)
	}
	// The first message back must be the C-ECHO-RSP: nothing for the cancel.
	p, err := readPDU(t, c, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pd, ok := p.(*association.PDataTF)
	if !ok || len(pd.PDVs) != 1 {
		t.Fatalf("got %#v, want one PDV", p)
	}
	rsp, err := dimse.DecodeCommand(pd.PDVs[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	if rsp.CommandField != dimse.CEchoRSP || rsp.MessageIDBeingRespondedTo != 4 {
		t.Errorf("first response = %v to %d (status 0x%04X), want C-ECHO-RSP to 4", rsp.CommandField, rsp.MessageIDBeingRespondedTo, rsp.Status)
	}
}

// An A-RELEASE-RQ in the middle of a DIMSE message (a command whose last
// fragment has not come, a data set whose last fragment has not come) is
// unexpected in PS3.8 Sta6, as docs/refusals.md has it: A-ABORT (2, 2),
// not an A-RELEASE-RP telling the requestor its association ended cleanly
// while the half-received C-STORE was dropped.
func TestAnswerReleaseMidMessageAborted(t *testing.T) {
	t.Run("store-and-forward data set", func(t *testing.T) {
		e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", testpeer.FreeAddr(t), "STORESCP"), Rules: sfRule()})
		c, _ := ctAssociation(t, e)
		cmd := &dimse.Command{CommandField: dimse.CStoreRQ, MessageID: 1, AffectedSOPClassUID: ctImageStorage,
			AffectedSOPInstanceUID: "1.2.3.4", CommandDataSetType: 0}
		ds := leakElement(leakElement(nil, 0x00080016, "UI", []byte(ctImageStorage)), 0x00080018, "UI", []byte("1.2.3.4"))
		writeRaw(t, c, pdataPDU(append(pdvItemBytes(pcCT, true, true, cmd.Encode()), pdvItemBytes(pcCT, false, false, ds)...)))
		writeRaw(t, c, mustAppend(t, &association.ReleaseRQ{}))
		expectAbortAfter(t, c, association.AbortUnexpectedPDU)
		abortedEvent(t, e, "client:unexpected-pdu")
		if list, _ := e.Server.Spool.List("pacs", spool.Queued); len(list) != 0 {
			t.Errorf("%d spooled, want none", len(list))
		}
	})
	t.Run("answer command fragment", func(t *testing.T) {
		e := startEdge(t, edgeOptions{})
		c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
		associate(t, c, echoRQ("GOCLIENT", "DICOMEDGE"))
		cmd := cEchoRQ(t, 1)
		writeRaw(t, c, pdataPDU(pdvItemBytes(1, true, false, cmd[:10])))
		writeRaw(t, c, mustAppend(t, &association.ReleaseRQ{}))
		expectAbortAfter(t, c, association.AbortUnexpectedPDU)
		abortedEvent(t, e, "client:unexpected-pdu")
	})
}

// A command PDV while a C-STORE data set is still arriving interleaves two
// messages (PS3.8 E.2, PS3.7 6.3.1): A-ABORT (2, 5), as on a relay, not an
// answer to the inner request followed by more of the data set; nothing of
// the instance is spooled.
func TestStoreAndForwardCommandInsideDataSetAborted(t *testing.T) {
	e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", testpeer.FreeAddr(t), "STORESCP"), Rules: sfRule()})
	c, _ := ctAssociation(t, e)
	cmd := &dimse.Command{CommandField: dimse.CStoreRQ, MessageID: 1, AffectedSOPClassUID: ctImageStorage,
		AffectedSOPInstanceUID: "1.2.3.4", CommandDataSetType: 0}
	ds := leakElement(leakElement(nil, 0x00080016, "UI", []byte(ctImageStorage)), 0x00080018, "UI", []byte("1.2.3.4"))
	writeRaw(t, c, pdataPDU(append(pdvItemBytes(pcCT, true, true, cmd.Encode()), pdvItemBytes(pcCT, false, false, ds)...)))
	writeRaw(t, c, pdataPDU(pdvItemBytes(1, true, true, cEchoRQ(t, 2))))
	expectAbortAfter(t, c, association.AbortUnexpectedPDUParameter)
	abortedEvent(t, e, "client:unexpected-pdu-parameter")
	if list, _ := e.Server.Spool.List("pacs", spool.Queued); len(list) != 0 {
		t.Errorf("%d spooled, want none", len(list))
	}
}

// countConn counts the bytes read from the socket, TLS records included.
type countConn struct {
	net.Conn
	n atomic.Int64
}

func (c *countConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// A requestor that announced the PS3.8 minimum of 7 bytes gets each
// answer in one-byte PDVs: about 90 PDUs of 13 bytes for a C-ECHO-RSP. One
// PDU packed with C-ECHO-RQs used to cost the edge a write call and a TLS
// record (22 bytes of overhead) per PDU, nearly 3 bytes on the wire and a
// seal per byte of answer; each answer now goes out in one write.
func TestAnswerTinyMaxLengthAnswersNotOneRecordPerPDU(t *testing.T) {
	e := startEdge(t, edgeOptions{Quiet: true})
	raw, err := net.DialTimeout("tcp", e.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cc := &countConn{Conn: raw}
	c := tls.Client(cc, e.clientTLS(t, e.pki.clientCert, e.pki.clientKey))
	t.Cleanup(func() { c.Close() })
	rq := echoRQ("GOCLIENT", "DICOMEDGE")
	rq.UserInfo.MaxLength = association.MinMaxLength
	associate(t, c, rq)
	const n = 64
	var body []byte
	for i := 1; i <= n; i++ {
		body = append(body, pdvItemBytes(1, true, true, cEchoRQ(t, uint16(i)))...)
	}
	before := cc.n.Load()
	writeRaw(t, c, pdataPDU(body))
	var pduBytes int64
	asm := &dimse.Assembler{}
	for got := 0; got < n; {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		typ, b, err := association.NewReader(c, 1<<20).Next()
		if err != nil {
			t.Fatalf("after %d answers: %v", got, err)
		}
		pduBytes += int64(len(b))
		p, err := association.Decode(typ, b[association.HeaderLen:])
		if err != nil {
			t.Fatal(err)
		}
		pd, ok := p.(*association.PDataTF)
		if !ok || len(b) > association.HeaderLen+association.MinMaxLength {
			t.Fatalf("got %T of %d bytes, want P-DATA-TF within the announced 7", p, len(b))
		}
		for _, v := range pd.PDVs {
			if _, done, err := asm.Add(v); err != nil {
				t.Fatal(err)
			} else if done {
				got++
			}
		}
	}
	wire := cc.n.Load() - before
	t.Logf("%d C-ECHO-RSP: %d bytes of PDUs, %d bytes on the wire", n, pduBytes, wire)
	if wire > pduBytes*3/2 {
		t.Fatalf("%d bytes on the wire for %d bytes of PDUs: a TLS record per 13-byte PDU", wire, pduBytes)
	}
}

// One P-DATA-TF carries at most 256 messages on the answer path, as on a
// relay: every one is sent before the requestor can have read an answer,
// where one operation at a time was negotiated (PS3.7 D.3.3.3). Past that
// the PDU is A-ABORT (2, 5) before any is answered, so one PDU cannot make
// the edge write and audit thousands of answers.
func TestAnswerMessagesPerPDUBound(t *testing.T) {
	e := startEdge(t, edgeOptions{Quiet: true})
	for _, n := range []int{inspect.MaxOutstanding, inspect.MaxOutstanding + 1} {
		c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
		associate(t, c, echoRQ("GOCLIENT", "DICOMEDGE"))
		var body []byte
		for i := 1; i <= n; i++ {
			body = append(body, pdvItemBytes(1, true, true, cEchoRQ(t, uint16(i)))...)
		}
		writeRaw(t, c, pdataPDU(body))
		if n > inspect.MaxOutstanding {
			expectAbortAfter(t, c, association.AbortUnexpectedPDUParameter)
			continue
		}
		for i := 1; i <= n; i++ {
			if rsp := readResponse(t, c); rsp.CommandField != dimse.CEchoRSP || rsp.MessageIDBeingRespondedTo != uint16(i) {
				t.Fatalf("answer %d: %v to %d", i, rsp.CommandField, rsp.MessageIDBeingRespondedTo)
			}
		}
	}
}
