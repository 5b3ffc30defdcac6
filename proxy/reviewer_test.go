package proxy

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/internal/testpeer"
	"github.com/dicomedge/dicomedge/tlslayer"
)

// Plain DICOM on the TLS port (an A-ASSOCIATE-RQ where a ClientHello
// belongs) is audited as tls.failed with reason not-tls.
func TestPlainDICOMOnTLSPortIsNotTLS(t *testing.T) {
	e := startEdge(t, edgeOptions{})
	c, err := net.DialTimeout("tcp", e.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := association.WritePDU(c, echoRQ("PLAIN", "DICOMEDGE")); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, c, "plain DICOM on the TLS port")
	ev := e.waitEvent(t, "tls.failed", func(ev audit.Event) bool { return ev.Event == audit.EventTLSFailed })
	if ev.Reason != tlslayer.ReasonNotTLS {
		t.Errorf("tls.failed reason %q, want %s", ev.Reason, tlslayer.ReasonNotTLS)
	}
}

// A client certificate whose subject has two CNs, made by openssl, is
// refused at the handshake (tls.failed multiple-cn), not matched on one of
// them: with "CN=harmless, CN=client" the rule for "client" used to match.
func TestMultipleCNRefused(t *testing.T) {
	p := sharedPKI(t)
	cert, key := p.issuer.Issue(t, "two-cn", testpeer.CertOptions{Subject: "/O=dicomedge tests/CN=harmless/CN=client"})
	e := startEdge(t, edgeOptions{})
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", e.Addr, e.clientTLS(t, cert, key))
	if err == nil {
		defer c.Close()
		// TLS 1.3: the client finishes before the server judges its certificate.
		if err = association.WritePDU(c, echoRQ("TWOCN", "DICOMEDGE")); err == nil {
			_, err = readPDU(t, c, 5*time.Second)
		}
	}
	if err == nil {
		t.Fatal("a certificate with two CNs was served")
	}
	ev := e.waitEvent(t, "tls.failed", func(ev audit.Event) bool { return ev.Event == audit.EventTLSFailed })
	if ev.Reason != tlslayer.ReasonMultipleCN {
		t.Errorf("tls.failed reason %q, want %s", ev.Reason, tlslayer.ReasonMultipleCN)
	}
	for _, ev := range e.events(t) {
		if ev.Event == audit.EventAccepted {
			t.Errorf("accepted with two CNs: %+v", ev)
		}
	}
}

// A right-to-left override (U+202E) in a certificate's CN reaches the
// audit file only escaped, as \u202e, inside the hashed line.
func TestBidiOverrideInCNEscaped(t *testing.T) {
	p := sharedPKI(t)
	cert, key := p.issuer.Issue(t, "rlo", testpeer.CertOptions{CN: "modality-\u202egnp.exe"})
	e := startEdge(t, edgeOptions{})
	c := e.goClient(t, cert, key)
	if err := association.WritePDU(c, echoRQ("RLO", "DICOMEDGE")); err != nil {
		t.Fatal(err)
	}
	if _, err := readPDU(t, c, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	ev := e.waitEvent(t, "rejected", func(ev audit.Event) bool { return ev.Event == audit.EventRejected })
	if ev.Client == nil || ev.Client.CN != "modality-\u202egnp.exe" {
		t.Fatalf("record's client %+v, want the CN as sent", ev.Client)
	}
	raw, err := os.ReadFile(e.AuditFile)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("\u202e")) || !bytes.Contains(raw, []byte(`modality-\u202egnp.exe`)) {
		t.Errorf("the audit file holds U+202E raw or not as \\u202e:\n%s", raw)
	}
}

// A C-STORE whose data set puts Patient ID (0010,0020) after group 0020
// and after the pixel data (out of PS3.5 order, as a crafted client sends
// it), on a rule that lets unsorted data sets through for a known device,
// is stored by a real storescp under that patient: the audit records that
// Patient ID too. (Without the opt-out the edge refuses such a data set:
// TestRelayRefusesUnsortedDataSets.)
func TestPatientIDAfterGroup0020Recorded(t *testing.T) {
	testpeer.Require(t, "storescp")
	scp := testpeer.StartStoreSCP(t, "STORESCP")
	rule := strings.Replace(scOnlyRule, `services    = ["C-ECHO", "C-STORE"]`, `services    = ["C-ECHO", "C-STORE"]
    allow_unsorted_data_sets = true`, 1)
	e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", scp.Addr, "STORESCP"), Rules: rule})
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	rq := echoRQ("MODALITY1", "MAINPACS")
	rq.PresentationContexts = append(rq.PresentationContexts, association.PresentationContextRQ{ID: 3,
		AbstractSyntax: association.SecondaryCaptureImageStorage, TransferSyntaxes: []string{association.ExplicitVRLittleEndian}})
	associate(t, c, rq)

	el := func(g, e uint16, vr string, v []byte) []byte {
		if len(v)%2 == 1 { // PS3.5 7.1.1: values have an even length
			v = append(v, map[bool]byte{true: 0, false: ' '}[vr == "UI"])
		}
		b := binary.LittleEndian.AppendUint16(binary.LittleEndian.AppendUint16(nil, g), e)
		b = append(b, vr...)
		if vr == "OW" {
			return append(binary.LittleEndian.AppendUint32(append(b, 0, 0), uint32(len(v))), v...)
		}
		return append(binary.LittleEndian.AppendUint16(b, uint16(len(v))), v...)
	}
	us := func(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
	ds := bytes.Join([][]byte{
		el(0x0008, 0x0016, "UI", []byte(association.SecondaryCaptureImageStorage)),
		el(0x0008, 0x0018, "UI", []byte(testInstanceUID)),
		el(0x0010, 0x0010, "PN", []byte("LATE^PATIENT")),
		el(0x0020, 0x000D, "UI", []byte("2.25.11")),
		el(0x0020, 0x000E, "UI", []byte("2.25.12")),
		el(0x0028, 0x0002, "US", us(1)), el(0x0028, 0x0004, "CS", []byte("MONOCHROME2 ")),
		el(0x0028, 0x0010, "US", us(8)), el(0x0028, 0x0011, "US", us(8)),
		el(0x0028, 0x0100, "US", us(16)), el(0x0028, 0x0101, "US", us(16)), el(0x0028, 0x0102, "US", us(15)), el(0x0028, 0x0103, "US", us(0)),
		el(0x7FE0, 0x0010, "OW", make([]byte, 128)),
		el(0x0010, 0x0020, "LO", []byte("LATE-PID")), // after group 0020 and the pixel data
	}, nil)
	cmd := &dimse.Command{CommandField: dimse.CStoreRQ, MessageID: 1, AffectedSOPClassUID: association.SecondaryCaptureImageStorage,
		AffectedSOPInstanceUID: testInstanceUID, CommandDataSetType: dimse.DataSetPresent}
	if err := dimse.WriteMessage(c, 3, cmd, ds, 16384); err != nil {
		t.Fatal(err)
	}
	if rsp := readResponse(t, c); rsp.Status != dimse.StatusSuccess {
		t.Fatalf("C-STORE status 0x%04X", rsp.Status)
	}
	_ = association.WritePDU(c, &association.ReleaseRQ{})
	_, _ = readPDU(t, c, 5*time.Second)

	var stored []byte
	for _, b := range scp.Received(t) {
		stored = b
	}
	if !bytes.Contains(stored, el(0x0010, 0x0020, "LO", []byte("LATE-PID"))) {
		t.Fatalf("storescp did not store Patient ID LATE-PID (%d bytes stored)", len(stored))
	}
	var rec *audit.Event
	for _, ev := range dimseEvents(t, e) {
		if ev.Service == "C-STORE" {
			rec = &ev
		}
	}
	if rec == nil || rec.PatientID != "LATE-PID" {
		t.Fatalf("dimse record %+v, want patient_id LATE-PID as the PACS stored it", rec)
	}
}
