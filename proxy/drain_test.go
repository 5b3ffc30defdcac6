package proxy

import (
	"context"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
)

// A load balancer health-checks /readyz: it must answer 503 from the first
// moment of a drain, while the admin listener still answers and open
// associations finish, so the balancer stops sending new associations
// before the edge is gone (README.md "Running a cluster").
func TestReadyzNotReadyDuringDrain(t *testing.T) {
	e := startEdge(t, edgeOptions{AdminListen: true, Drain: "20s"})
	base := "http://" + e.Server.AdminAddr().String()
	if code, body := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz = %d %s before the drain", code, body)
	}
	// An open association keeps the drain going.
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	associate(t, c, echoRQ("GOCLIENT", "DICOMEDGE"))

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done <- e.Server.Shutdown(ctx)
	}()
	deadline := time.Now().Add(20 * time.Second)
	code, body := get(t, base+"/readyz")
	for code == 200 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		code, body = get(t, base+"/readyz")
	}
	if code != 503 {
		t.Fatalf("/readyz = %d %s during the drain, want 503", code, body)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with an association open and 20s of drain left", err)
	default:
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d during the drain; the process is alive", code)
	}
	// The association ends with A-RELEASE, and the drain with it.
	if err := association.WritePDU(c, &association.ReleaseRQ{}); err != nil {
		t.Fatal(err)
	}
	if p, err := readPDU(t, c, 10*time.Second); err != nil {
		t.Fatalf("A-RELEASE-RP during the drain: %v", err)
	} else if _, ok := p.(*association.ReleaseRP); !ok {
		t.Fatalf("got %T during the drain, want A-RELEASE-RP", p)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown did not return after the last association ended")
	}
}
