package proxy

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
)

// A client that floods C-ECHO-RQs and never reads blocks the
// answerer in a write (bounded only by idle_timeout). Shutdown must still
// end within about drain_timeout: the abort cuts the blocked write short
// instead of queueing behind it. (One client: with two on loopback, the
// second's TCP stream sometimes stalls for unrelated reasons and the test
// cannot tell.)
func TestShutdownNotHeldByNonReadingClient(t *testing.T) {
	e := startEdge(t, edgeOptions{Idle: "30s", Drain: "500ms", NoAudit: true})
	var clients int
	for range 1 {
		c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
		if err := association.WritePDU(c, echoRQ("MODALITY1", "DICOMEDGE")); err != nil {
			t.Fatal(err)
		}
		if _, err := readPDU(t, c, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		cmd := (&dimse.Command{CommandField: dimse.CEchoRQ, MessageID: 1, AffectedSOPClassUID: association.VerificationSOPClass, CommandDataSetType: dimse.NoDataSet}).Encode()
		pdu, err := association.Append(nil, &association.PDataTF{PDVs: []association.PDV{{ContextID: 1, Command: true, Last: true, Data: cmd}}})
		if err != nil {
			t.Fatal(err)
		}
		var batch []byte
		for range 1000 {
			batch = append(batch, pdu...)
		}
		// Write without reading until the edge's responses fill the path and
		// it blocks in a write; the writer ends when the connection closes
		// (Shutdown's abort or the test's cleanup), and is bounded in count.
		writerDone := make(chan struct{})
		go func() {
			defer close(writerDone)
			for range 10000 {
				if _, err := c.Write(batch); err != nil {
					return
				}
			}
		}()
		t.Cleanup(func() {
			c.Close()
			<-writerDone
		})
		clients++
		// Wait until this answerer is blocked in a socket write, the
		// situation this test is about.
		waitBlockedWriters(t, clients)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := e.Server.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	// drain 500 ms + one bounded A-ABORT write (2 s) + slack; before the
	// fix this took about idle_timeout (30 s) per client.
	d := time.Since(start)
	t.Logf("Shutdown took %v", d)
	if d > 15*time.Second {
		t.Errorf("Shutdown with %d non-reading clients took %v, want about drain_timeout (500ms)", clients, d)
	}
	// Each ended as aborted by the shutdown, not by a failed write.
	if n := strings.Count(e.Logs.String(), "abort_source=service-provider abort_reason=shutdown"); n != clients {
		t.Errorf("%d associations ended as aborted by shutdown, want %d", n, clients)
	}
}

// waitBlockedWriters waits (bounded) until n goroutines are blocked in a
// pduWriter's socket write.
func waitBlockedWriters(t *testing.T, n int) {
	t.Helper()
	buf := make([]byte, 4<<20)
	deadline := time.Now().Add(40 * time.Second)
	for {
		got := 0
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "(*pduWriter).writeLocked") && strings.Contains(g, "waitWrite") {
				got++
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
				if strings.Contains(g, "answerer") {
					t.Log(g)
				}
			}
			t.Fatalf("%d writers blocked after 40s, want %d", got, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
