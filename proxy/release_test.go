package proxy

import (
	"net"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/audit"
)

// goBackend is a one-association Go SCP on loopback: it accepts the RQ,
// then runs script with the connection and a reader on it.
func goBackend(t *testing.T, script func(net.Conn, *association.Reader) error) (addr string, done <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan error, 1)
	go func() {
		defer ln.Close()
		c, err := ln.Accept()
		if err != nil {
			ch <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		r := association.NewReader(c, 1<<20)
		p, err := r.ReadPDU()
		if err != nil {
			ch <- err
			return
		}
		rq, ok := p.(*association.AssociateRQ)
		if !ok {
			ch <- association.Unexpected(p.Type())
			return
		}
		ac := &association.AssociateAC{ProtocolVersion: 1, CalledAE: rq.CalledAE, CallingAE: rq.CallingAE,
			ApplicationContext: rq.ApplicationContext,
			UserInfo:           association.UserInfo{MaxLength: 16384, HasMaxLength: true, ImplementationClassUID: "1.2.3.4.5"}}
		for _, pc := range rq.PresentationContexts {
			ac.PresentationContexts = append(ac.PresentationContexts,
				association.PresentationContextAC{ID: pc.ID, Result: association.PCAcceptance, TransferSyntax: pc.TransferSyntaxes[0]})
		}
		if err := association.WritePDU(c, ac); err != nil {
			ch <- err
			return
		}
		ch <- script(c, r)
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String(), ch
}

func expectPDU[T association.PDU](r *association.Reader) error {
	p, err := r.ReadPDU()
	if err != nil {
		return err
	}
	if _, ok := p.(T); !ok {
		return association.Unexpected(p.Type())
	}
	return nil
}

// A release is a release even when the side that receives the
// A-RELEASE-RP closes its connection at once (as storescu and storescp do):
// CI once audited a 45 MB storescu session through storescp as aborted,
// connection-closed, because the client's close was seen before the edge
// recorded the release it had just forwarded. The hook holds the forwarding
// pump until the other pump has seen the close, so the old order fails
// every time.
func TestReleaseThenImmediateClose(t *testing.T) {
	cases := []struct {
		name string
		// backend runs after the AC; client runs after the test client has the AC.
		backend func(net.Conn, *association.Reader) error
		client  func(net.Conn, *association.Reader) error
	}{
		{
			name: "client releases",
			backend: func(c net.Conn, r *association.Reader) error {
				if err := expectPDU[*association.ReleaseRQ](r); err != nil {
					return err
				}
				if err := association.WritePDU(c, &association.ReleaseRP{}); err != nil {
					return err
				}
				_, err := r.ReadPDU() // the edge closes after the client does
				_ = err
				return nil
			},
			client: func(c net.Conn, r *association.Reader) error {
				if err := association.WritePDU(c, &association.ReleaseRQ{}); err != nil {
					return err
				}
				return expectPDU[*association.ReleaseRP](r)
			},
		},
		{
			name: "backend releases",
			backend: func(c net.Conn, r *association.Reader) error {
				if err := association.WritePDU(c, &association.ReleaseRQ{}); err != nil {
					return err
				}
				return expectPDU[*association.ReleaseRP](r)
				// closed at once by goBackend's deferred Close
			},
			client: func(c net.Conn, r *association.Reader) error {
				if err := expectPDU[*association.ReleaseRQ](r); err != nil {
					return err
				}
				return association.WritePDU(c, &association.ReleaseRP{})
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			testHookReleaseRPForwarded = func(r *relay) {
				// Wait (bounded) for the receiver's close to reach the other
				// pump: with the release recorded first, ended is already set.
				deadline := time.Now().Add(20 * time.Second)
				for !r.end.ended() && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
			}
			t.Cleanup(func() { testHookReleaseRPForwarded = nil }) // after the edge's own cleanup
			addr, backendDone := goBackend(t, tc.backend)
			e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", addr, "GOSCP"), Rules: storeRules(`"C-ECHO"`)})
			c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
			if err := association.WritePDU(c, echoRQ("MODALITY1", "MAINPACS")); err != nil {
				t.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			r := association.NewReader(c, 1<<20)
			if err := expectPDU[*association.AssociateAC](r); err != nil {
				t.Fatalf("want AC: %v", err)
			}
			if err := tc.client(c, r); err != nil {
				t.Fatalf("client side: %v", err)
			}
			c.Close() // at once, as DCMTK does
			select {
			case err := <-backendDone:
				if err != nil {
					t.Fatalf("backend side: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("backend script did not finish")
			}
			ev := e.waitEvent(t, "association end", func(ev audit.Event) bool {
				return ev.Event == audit.EventReleased || ev.Event == audit.EventAborted
			})
			if ev.Event != audit.EventReleased {
				t.Errorf("audited %s (source %q, reason %q), want %s", ev.Event, ev.AbortSource, ev.AbortReason, audit.EventReleased)
			}
		})
	}
}
