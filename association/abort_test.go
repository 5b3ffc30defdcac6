package association_test

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
)

// Bad input from a peer gets the A-ABORT PS3.8 names for it (source 2 and a
// specific reason) from an acceptor built on Reader and AbortFor, and the
// connection is closed rather than read further.
func TestMalformedPeerGetsAbort(t *testing.T) {
	hdr := func(typ byte, n uint32) []byte { return binary.BigEndian.AppendUint32([]byte{typ, 0}, n) }
	fixed := make([]byte, 68)
	fixed[1] = 1
	cases := []struct {
		name   string
		send   []byte
		reason association.AbortReason
	}{
		{"unknown PDU type", append(hdr(0x09, 4), 0, 0, 0, 0), association.AbortUnrecognizedPDU},
		{"PDU over the limit, refused on its header", hdr(0x01, 1<<20), association.AbortInvalidPDUParameterValue},
		{"RQ with an item overrunning it", append(append(hdr(0x01, 68+4), fixed...), 0x10, 0, 0x00, 0x40), association.AbortInvalidPDUParameterValue},
		{"RQ with two application contexts", append(append(hdr(0x01, 68+8), fixed...), 0x10, 0, 0, 0, 0x10, 0, 0, 0), association.AbortUnexpectedPDUParameter},
		{"P-DATA-TF before the association", append(hdr(0x04, 6), 0, 0, 0, 2, 1, 3), association.AbortUnexpectedPDU},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			scp := startSCP(t, verification, nil)
			c, err := net.DialTimeout("tcp", scp.ln.Addr().String(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			r := association.NewReader(c, 0)
			p, err := r.ReadPDU()
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			want := &association.Abort{Source: association.AbortSourceServiceProvider, Reason: tc.reason}
			if a, ok := p.(*association.Abort); !ok || *a != *want {
				t.Fatalf("answer %#v, want %#v", p, want)
			}
			if _, _, err := r.Next(); err == nil {
				t.Fatal("connection still open after the abort")
			}
			c.Close() // lets the acceptor's linger end now
			scp.waitEnds(1)
		})
	}
}

// A peer's A-ABORT (any source, including the reserved 1 some send) ends
// the association on our side without an answer.
func TestPeerAbortEndsAssociation(t *testing.T) {
	for _, src := range []association.AbortSource{0, 1, 2} {
		scp := startSCP(t, verification, nil)
		c, err := net.DialTimeout("tcp", scp.ln.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		rq := &association.AssociateRQ{ProtocolVersion: 1, CalledAE: "E", CallingAE: "S", ApplicationContext: association.DICOMApplicationContext,
			PresentationContexts: []association.PresentationContextRQ{{ID: 1, AbstractSyntax: association.VerificationSOPClass,
				TransferSyntaxes: []string{association.ImplicitVRLittleEndian}}}}
		var buf bytes.Buffer
		_ = association.WritePDU(&buf, rq)
		_ = association.WritePDU(&buf, &association.Abort{Source: src})
		if _, err := c.Write(buf.Bytes()); err != nil {
			t.Fatal(err)
		}
		if ends := scp.waitEnds(1); ends[0] != "abort" {
			t.Fatalf("source %d: ended with %q", src, ends[0])
		}
		c.Close()
	}
}
