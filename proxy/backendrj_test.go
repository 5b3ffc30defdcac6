package proxy

import (
	"net"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/audit"
)

// A backend's A-ASSOCIATE-RJ went to the client "unchanged" whatever its
// codes, so a result, source or reason that PS3.8 Table 9-21 does not
// define (result 7, source 9) reached the client, which cannot read it as
// either permanent or transient. Such an answer is malformed: the client
// gets 2/3/1 as for a backend that answers malformed (backend-no-answer);
// a valid RJ still passes unchanged.
func TestRelayBackendRJCodesOutsideTable(t *testing.T) {
	cases := []struct {
		name    string
		rj      []byte // the RJ body: reserved, result, source, reason
		want    association.AssociateRJ
		audited string
	}{
		{"undefined result and source", []byte{0, 7, 9, 42},
			association.AssociateRJ{Result: 2, Source: 3, Reason: 1}, "backend-no-answer"},
		{"reason not defined for its source", []byte{0, 1, 2, 7},
			association.AssociateRJ{Result: 2, Source: 3, Reason: 1}, "backend-no-answer"},
		{"valid RJ passes unchanged", []byte{0, 1, 1, 7},
			association.AssociateRJ{Result: 1, Source: 1, Reason: 7}, "called-ae-not-recognized"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := association.NewReader(c, 1<<20).ReadPDU(); err != nil {
					return
				}
				_, _ = c.Write(append([]byte{byte(association.TypeAssociateRJ), 0, 0, 0, 0, 4}, tc.rj...))
				_, _ = c.Read(make([]byte, 64)) // until the edge closes
			}()
			e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", ln.Addr().String(), "PACS"), Rules: scOnlyRule})
			c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
			if err := association.WritePDU(c, echoRQ("MODALITY1", "MAINPACS")); err != nil {
				t.Fatal(err)
			}
			p, err := readPDU(t, c, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if rj, ok := p.(*association.AssociateRJ); !ok || *rj != tc.want {
				t.Fatalf("client got %T %+v, want A-ASSOCIATE-RJ %+v", p, p, tc.want)
			}
			e.waitEvent(t, "association.rejected", func(ev audit.Event) bool {
				return ev.Event == audit.EventRejected && ev.Reason == tc.audited
			})
		})
	}
}
