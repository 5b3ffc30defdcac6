package proxy

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/internal/testpeer"
)

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// The edge certificate replaced on disk: audited as cert.renewed, new
// handshakes present the new certificate, the live association goes on.
func TestEdgeCertificateRotationAudited(t *testing.T) {
	p := sharedPKI(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "edge.pem"), filepath.Join(dir, "edge-key.pem")
	copyFile(t, p.edgeCert, cert)
	copyFile(t, p.edgeKey, key)
	e := startEdge(t, edgeOptions{CertFile: cert, KeyFile: key})
	// Established before the rotation: a bare TLS connection would be
	// closed at ARTIM (5s), which issuing a certificate and waiting for the
	// watcher can exceed on a loaded machine.
	old := e.goClient(t, p.clientCert, p.clientKey)
	if err := writeEchoRQ(old); err != nil {
		t.Fatal(err)
	}
	if pdu, err := readPDU(t, old, 5*time.Second); err != nil {
		t.Fatal(err)
	} else if _, ok := pdu.(*association.AssociateAC); !ok {
		t.Fatalf("got %T, want A-ASSOCIATE-AC", pdu)
	}

	newCert, newKey := p.issuer.Issue(t, "edge-rotated-"+filepath.Base(dir), testpeer.CertOptions{
		CN: "localhost", DNS: []string{"localhost"}, IPs: []string{"127.0.0.1"}, Server: true})
	copyFile(t, newKey, key)
	copyFile(t, newCert, cert)
	ev := e.waitEvent(t, "cert.renewed", func(ev audit.Event) bool { return ev.Event == audit.EventCertRenewed })
	if ev.Detail == "" {
		t.Errorf("cert.renewed without detail")
	}
	b, _ := os.ReadFile(newCert)
	blk, _ := pem.Decode(b)
	want, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	c := e.goClient(t, p.clientCert, p.clientKey)
	if got := c.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(want.SerialNumber) != 0 {
		t.Errorf("new handshake presents serial %v, want the rotated %v", got, want.SerialNumber)
	}
	// The association established before the rotation still works.
	echo := &dimse.Command{CommandField: dimse.CEchoRQ, MessageID: 1, AffectedSOPClassUID: association.VerificationSOPClass, CommandDataSetType: dimse.NoDataSet}
	if err := dimse.WriteMessage(old, 1, echo, nil, 16384); err != nil {
		t.Fatalf("old association: %v", err)
	}
	if pdu, err := readPDU(t, old, 5*time.Second); err != nil {
		t.Fatalf("old association after rotation: %v", err)
	} else if _, ok := pdu.(*association.PDataTF); !ok {
		t.Fatalf("old association after rotation: got %T, want the C-ECHO-RSP", pdu)
	}
}

func writeEchoRQ(c interface{ Write([]byte) (int, error) }) error {
	b, err := association.Append(nil, echoRQ("GOCLIENT", "DICOMEDGE"))
	if err != nil {
		return err
	}
	_, err = c.Write(b)
	return err
}
