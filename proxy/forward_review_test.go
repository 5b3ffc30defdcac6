package proxy

import (
	"net"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/spool"
)

// readStoreRQ reads one C-STORE-RQ, command and data set, from the edge's
// forwarder and returns the command and its presentation context.
func readStoreRQ(r *association.Reader) (*dimse.Command, uint8, error) {
	var asm dimse.Assembler
	var cmd *dimse.Command
	var ctx uint8
	for {
		typ, raw, err := r.Next()
		if err != nil {
			return nil, 0, err
		}
		if typ != association.TypePDataTF {
			return nil, 0, association.Unexpected(typ)
		}
		last := false
		err = association.EachPDV(raw[association.HeaderLen:], func(p association.PDV) error {
			ctx = p.ContextID
			if !p.Command {
				last = p.Last
				return nil
			}
			c, done, err := asm.Add(p)
			if done {
				cmd = c
			}
			return err
		})
		if err != nil {
			return nil, 0, err
		}
		if last {
			return cmd, ctx, nil
		}
	}
}

// spoolOne queues one instance for backend pacs.
func spoolOne(t *testing.T, e *testEdge, uid string) {
	t.Helper()
	w, err := e.Server.Spool.Create("pacs", spool.Meta{SOPClass: ctImageStorage, SOPInstance: uid, TransferSyntax: association.ExplicitVRLittleEndian})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(leakElement(nil, 0x00080018, "UI", []byte(uid)))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

// A C-STORE-RSP is delivery only if it says so: one without a Status
// (0000,0900), or naming another SOP instance than the one sent, is a
// backend that did not answer for this instance. The instance stays
// queued (the association dropped, tried again later), never removed as
// delivered.
func TestForwarderNeedsAStatusForThisInstance(t *testing.T) {
	for _, tc := range []struct {
		name string
		rsp  func(rq *dimse.Command) *dimse.Command
	}{
		{"no status", func(rq *dimse.Command) *dimse.Command {
			return &dimse.Command{CommandField: dimse.CStoreRSP, MessageIDBeingRespondedTo: rq.MessageID, CommandDataSetType: 0x0101,
				AffectedSOPClassUID: rq.AffectedSOPClassUID, AffectedSOPInstanceUID: rq.AffectedSOPInstanceUID}
		}},
		{"another instance", func(rq *dimse.Command) *dimse.Command {
			return &dimse.Command{CommandField: dimse.CStoreRSP, MessageIDBeingRespondedTo: rq.MessageID, CommandDataSetType: 0x0101,
				AffectedSOPClassUID: rq.AffectedSOPClassUID, AffectedSOPInstanceUID: "1.2.3.999", HasStatus: true}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan error, 1)
			addr, _ := goBackend(t, func(c net.Conn, r *association.Reader) error {
				rq, ctx, err := readStoreRQ(r)
				if err == nil {
					err = dimse.WriteMessage(c, ctx, tc.rsp(rq), nil, 16384)
				}
				done <- err
				_, _, _ = r.Next() // whatever the edge does next
				return nil
			})
			e := startEdge(t, edgeOptions{Quiet: true, Backends: backendBlock("pacs", addr, "GOSCP"), Rules: sfRule()})
			spoolOne(t, e, "1.2.3.1")
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("backend: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the forwarder never sent the instance")
			}
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				st, _ := e.Server.Spool.BackendStats("pacs")
				if st.Instances == 0 && st.Failed == 0 {
					t.Fatal("the instance left the queue as delivered")
				}
				if st.State.LastError != "" {
					if st.Instances != 1 {
						t.Fatalf("state %+v", st)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no error recorded: %+v", st)
				}
			}
		})
	}
}
