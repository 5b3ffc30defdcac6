package proxy

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/audit"
)

// A TLS 1.3 session resumed through the edge is audited with the identity
// of the certificate verified when its ticket was issued.
func TestResumedAssociationAuditsVerifiedIdentity(t *testing.T) {
	e := startEdge(t, edgeOptions{})
	cfg := e.clientTLS(t, e.pki.clientCert, e.pki.clientKey)
	cfg.MinVersion = tls.VersionTLS13
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(2)
	pemBytes, err := os.ReadFile(e.pki.clientCert)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemBytes)
	sum := sha256.Sum256(blk.Bytes)
	want := "sha256:" + hex.EncodeToString(sum[:])
	for i := range 2 {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.Addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		calling := fmt.Sprintf("RESUME%d", i)
		associate(t, c, echoRQ(calling, "DICOMEDGE")) // reading the AC also reads the ticket
		if err := association.WritePDU(c, &association.ReleaseRQ{}); err != nil {
			t.Fatal(err)
		}
		if _, err := readPDU(t, c, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if got, want := c.ConnectionState().DidResume, i == 1; got != want {
			t.Fatalf("association %d: resumed=%v, want %v", i, got, want)
		}
		c.Close()
		ev := e.waitEvent(t, "accepted "+calling, func(ev audit.Event) bool {
			return ev.Event == audit.EventAccepted && ev.CallingAE == calling
		})
		if ev.Client == nil || ev.Client.Fingerprint != want || ev.Client.CN != "client" {
			t.Fatalf("association %d audited client %+v, want CN client and fingerprint %s", i, ev.Client, want)
		}
	}
}
