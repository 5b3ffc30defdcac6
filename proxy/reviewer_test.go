package proxy

import (
	"bytes"
	"crypto/tls"
	"net"
	"os"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
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
