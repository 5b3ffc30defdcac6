package proxy

import (
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
)

// TestOpenAssociations: an established association is listed with who holds
// it and what decided it, and leaves the list when it is released.
func TestOpenAssociations(t *testing.T) {
	e := startEdge(t, edgeOptions{})
	if got := e.Server.OpenAssociations(); len(got) != 0 {
		t.Fatalf("before any client: %+v", got)
	}
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	associate(t, c, echoRQ("MODALITY1", "DICOMEDGE"))
	// The AC reaches the client as the edge's write returns, before the
	// edge has counted its bytes: wait (bounded) for the count.
	got := e.Server.OpenAssociations()
	for deadline := time.Now().Add(5 * time.Second); len(got) == 1 && got[0].BytesOut == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
		got = e.Server.OpenAssociations()
	}
	if len(got) != 1 {
		t.Fatalf("one association held: listed %+v", got)
	}
	a := got[0]
	if a.CallingAE != "MODALITY1" || a.CalledAE != "DICOMEDGE" || a.Rule != "echo" || a.Action != "answer" ||
		a.Listener != "edge" || a.Client == nil || a.Client.CN != "client" || a.Conn == "" || a.Remote == "" {
		t.Errorf("listed %+v (client %+v)", a, a.Client)
	}
	if a.BytesIn == 0 || a.BytesOut == 0 || time.Since(a.Since) > time.Minute {
		t.Errorf("bytes in %d out %d since %v: the RQ and AC are counted", a.BytesIn, a.BytesOut, a.Since)
	}
	// A rejected request is never listed.
	c2 := e.goClient(t, e.pki.otherCert, e.pki.otherKey)
	if err := association.WritePDU(c2, echoRQ("INTRUDER", "DICOMEDGE")); err != nil {
		t.Fatal(err)
	}
	if _, err := readPDU(t, c2, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := e.Server.OpenAssociations(); len(got) != 1 {
		t.Errorf("after a reject: %d listed, want 1", len(got))
	}
	if err := association.WritePDU(c, &association.ReleaseRQ{}); err != nil {
		t.Fatal(err)
	}
	if _, err := readPDU(t, c, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	c.Close()
	for deadline := time.Now().Add(10 * time.Second); len(e.Server.OpenAssociations()) != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still listed after release: %+v", e.Server.OpenAssociations())
		}
	}
}
