package proxy

import (
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
)

// failingListener fails its first n Accepts with the given errno, then
// accepts normally.
type failingListener struct {
	net.Listener
	errno syscall.Errno
	left  atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.left.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", l.errno)}
	}
	return l.Listener.Accept()
}

// Finding 3: running out of descriptors (EMFILE/ENFILE) or a client that
// aborts in the backlog (ECONNABORTED) must not end Serve (and with it the
// edge); it backs off and serves the next connection.
func TestServeSurvivesAcceptErrors(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED} {
		t.Run(errno.Error(), func(t *testing.T) {
			e := startEdge(t, edgeOptions{})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			fl := &failingListener{Listener: ln, errno: errno}
			fl.left.Store(3)
			done := make(chan error, 1)
			go func() { done <- e.Server.Serve(fl) }()
			t.Cleanup(func() {
				e.Server.Close()
				select {
				case <-done:
				case <-time.After(5 * time.Second):
					t.Error("second Serve did not return after Close")
				}
			})
			// Serve must still be running after the failures ...
			select {
			case err := <-done:
				t.Fatalf("Serve returned %v after %v from accept", err, errno)
			case <-time.After(200 * time.Millisecond):
			}
			// ... and serve a client on that listener.
			e2 := *e
			e2.Addr = ln.Addr().String()
			c := e2.goClient(t, e.pki.clientCert, e.pki.clientKey)
			if err := association.WritePDU(c, echoRQ("GOCLIENT", "DICOMEDGE")); err != nil {
				t.Fatal(err)
			}
			if p, err := readPDU(t, c, 5*time.Second); err != nil {
				t.Fatal(err)
			} else if _, ok := p.(*association.AssociateAC); !ok {
				t.Fatalf("got %T, want AC", p)
			}
		})
	}
}

// Finding 3: connections that have not associated yet (here: TCP only,
// never a TLS byte) are capped at max_associations (at least 16); further
// ones are closed at once instead of holding descriptors and goroutines
// until ARTIM, and a slot freed is usable again.
func TestPreAssociationConnectionsCapped(t *testing.T) {
	e := startEdge(t, edgeOptions{MaxAssociations: 16, ARTIM: "10s"})
	limit := int(preAssociationLimit(16))
	var idle []net.Conn
	for range limit {
		c, err := net.DialTimeout("tcp", e.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		idle = append(idle, c)
	}
	// Bounded wait until the edge has accepted them all.
	for deadline := time.Now().Add(5 * time.Second); e.Server.preActive.Load() < int64(limit); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d pre-association connections after 5s, want %d", e.Server.preActive.Load(), limit)
		}
	}
	// One more: closed by the edge right away, well before ARTIM (10s).
	start := time.Now()
	over, err := net.DialTimeout("tcp", e.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	_ = over.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := over.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("connection over the limit: read %v, want closed by the edge", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("over-limit connection closed after %v, want at once", d)
	}
	// Free one slot: a genuine client gets through.
	idle[0].Close()
	for deadline := time.Now().Add(5 * time.Second); e.Server.preActive.Load() >= int64(limit); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("closing an idle connection did not free its slot")
		}
	}
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	if err := association.WritePDU(c, echoRQ("GOCLIENT", "DICOMEDGE")); err != nil {
		t.Fatal(err)
	}
	if p, err := readPDU(t, c, 5*time.Second); err != nil {
		t.Fatal(err)
	} else if _, ok := p.(*association.AssociateAC); !ok {
		t.Fatalf("got %T, want AC", p)
	}
	// Established, it no longer holds a pre-association slot.
	if n := e.Server.preActive.Load(); n != int64(limit-1) {
		t.Errorf("%d pre-association slots in use with one association established, want %d", n, limit-1)
	}
}
