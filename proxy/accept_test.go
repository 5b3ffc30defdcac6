package proxy

import (
	"crypto/tls"
	"fmt"
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

// Running out of descriptors (EMFILE/ENFILE) or a client that
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
			associate(t, c, echoRQ("GOCLIENT", "DICOMEDGE"))
		})
	}
}

// Connections that have not associated yet (here: TCP only, never a TLS
// byte) are capped: one source (IPv4 address) may hold 1/16 of the
// pre-association budget (at least 8), all sources together twice
// max_associations (at least 64; docs/limits.md). Connections beyond
// either cap are closed at once instead of holding descriptors and
// goroutines until ARTIM; others still get in, and a freed slot is usable
// again.
func TestPreAssociationConnectionsCapped(t *testing.T) {
	e := startEdge(t, edgeOptions{MaxAssociations: 16, ARTIM: "10s"})
	adm := e.Server.current().Edge.Admission()
	limit, perSource := adm.PreAssociation, adm.PerSource
	if limit != 64 || perSource != 8 {
		t.Fatalf("limits %d/%d, want 64/8", limit, perSource)
	}
	// sourceHeld is the per-source slots taken: each connection's goroutine
	// takes its own after Serve counted it in preActive, so both must
	// settle before the next dial, or that one may win the race for the
	// last per-source slot and an earlier one be refused in its place.
	sourceHeld := func() int64 {
		e.Server.preMu.Lock()
		defer e.Server.preMu.Unlock()
		var n int64
		for _, v := range e.Server.preSource {
			n += int64(v)
		}
		return n
	}
	waitPre := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); e.Server.preActive.Load() != int64(n) || sourceHeld() != int64(n); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d pre-association connections (%d per-source slots) after 20s, want %d", e.Server.preActive.Load(), sourceHeld(), n)
			}
		}
	}
	idleFrom := func(src string, n int) []net.Conn {
		t.Helper()
		var out []net.Conn
		for range n {
			out = append(out, dialFrom(t, e.Addr, src))
		}
		return out
	}
	closedAtOnce := func(what, src string) {
		t.Helper()
		start := time.Now()
		c := dialFrom(t, e.Addr, src)
		_ = c.SetReadDeadline(time.Now().Add(9 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("%s: read %v, want the connection closed by the edge", what, err)
		}
		if d := time.Since(start); d > 8*time.Second { // loose for loaded machines
			t.Errorf("%s closed after %v, want at once (ARTIM is 10s)", what, d)
		}
	}
	associates := func(src string) {
		t.Helper()
		c := tlsClientFrom(t, e, src)
		if err := association.WritePDU(c, echoRQ("GOCLIENT", "DICOMEDGE")); err != nil {
			t.Fatal(err)
		}
		if p, err := readPDU(t, c, 5*time.Second); err != nil {
			t.Fatalf("client from %s: %v", src, err)
		} else if _, ok := p.(*association.AssociateAC); !ok {
			t.Fatalf("client from %s: got %T, want AC", src, p)
		}
	}

	// One source at its share: its next connection is closed, others are served.
	idleFrom("127.0.0.2", perSource)
	waitPre(perSource)
	closedAtOnce("a 5th connection from one source", "127.0.0.2")
	associates("127.0.0.1")
	waitPre(perSource) // established: it no longer holds a pre-association slot

	// All slots taken by several sources: anyone's next connection is closed.
	var held []net.Conn
	for i := range limit/perSource - 1 {
		held = append(held, idleFrom(fmt.Sprintf("127.0.1.%d", i+1), perSource)...)
	}
	waitPre(limit)
	closedAtOnce("a connection over the global limit", "127.0.0.6")

	// Free one slot: a genuine client gets through.
	held[0].Close()
	waitPre(limit - 1)
	associates("127.0.0.1")
}

// dialFrom opens a TCP connection to addr from the loopback address src.
func dialFrom(t *testing.T, addr, src string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// tlsClientFrom is goClient from the loopback address src.
func tlsClientFrom(t *testing.T, e *testEdge, src string) *tls.Conn {
	t.Helper()
	c := tls.Client(dialFrom(t, e.Addr, src), e.clientTLS(t, e.pki.clientCert, e.pki.clientKey))
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.Handshake(); err != nil {
		t.Fatalf("handshake from %s: %v", src, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c
}
