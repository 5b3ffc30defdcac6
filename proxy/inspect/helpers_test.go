package inspect

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
)

// UIDs the tests use (PS3.6 Annex A).
const (
	ctStorage   = association.CTImageStorage
	mrStorage   = association.MRImageStorage
	findModel   = association.StudyRootQueryRetrieveFind
	getModel    = association.StudyRootQueryRetrieveGet
	moveModel   = association.StudyRootQueryRetrieveMove
	commitPush  = "1.2.840.10008.1.20.1"      // Storage Commitment Push Model
	printMgmt   = "1.2.840.10008.5.1.1.9"     // Basic Grayscale Print Management Meta
	filmSession = "1.2.840.10008.5.1.1.1"     // Basic Film Session
	printer     = "1.2.840.10008.5.1.1.16"    // Printer
	instanceUID = "1.2.826.0.1.3680043.2.1.1" // any
)

// Presentation contexts of the test association.
const (
	ctxEcho   = 1
	ctxCT     = 3
	ctxMR     = 5
	ctxFind   = 7
	ctxGet    = 9
	ctxMove   = 11
	ctxCommit = 13
	ctxPrint  = 15
)

func testContexts() []Context {
	ts := association.ImplicitVRLittleEndian
	return []Context{
		{ctxEcho, association.VerificationSOPClass, ts},
		{ctxCT, ctStorage, ts},
		{ctxMR, mrStorage, ts},
		{ctxFind, findModel, ts},
		{ctxGet, getModel, ts},
		{ctxMove, moveModel, ts},
		{ctxCommit, commitPush, ts},
		{ctxPrint, printMgmt, ts},
	}
}

// rulePolicy is a rule's relay block: empty lists allow all (sop_classes)
// or none (move_destinations), as policy.Decision does.
type rulePolicy struct {
	services, sopClasses, moveDests []string
}

func (p rulePolicy) AllowsService(s string) bool { return slices.Contains(p.services, s) }
func (p rulePolicy) AllowsSOPClass(uid string) bool {
	return len(p.sopClasses) == 0 || slices.Contains(p.sopClasses, uid)
}
func (p rulePolicy) AllowsMoveDestination(ae string) bool { return slices.Contains(p.moveDests, ae) }

var allServices = []string{"C-ECHO", "C-STORE", "C-FIND", "C-GET", "C-MOVE", "C-CANCEL",
	"N-EVENT-REPORT", "N-GET", "N-SET", "N-ACTION", "N-CREATE", "N-DELETE"}

// fakeClock advances 1 ms per reading.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { c.t = c.t.Add(time.Millisecond); return c.t }

func newTestInspector(pol Policy, mut ...func(*Config)) *Inspector {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	cfg := Config{Contexts: testContexts(), RequestorSCP: []string{ctStorage}, Policy: pol, Rule: "r",
		MaxPDU: [2]uint32{16384, 16384}, ScanPatientID: true, Now: clk.now}
	for _, m := range mut {
		m(&cfg)
	}
	return New(cfg)
}

// pdv is one PDV item; pdu wraps items in a P-DATA-TF.
func pdv(ctx uint8, command, last bool, data []byte) []byte {
	mch := byte(0)
	if command {
		mch |= 1
	}
	if last {
		mch |= 2
	}
	b := binary.BigEndian.AppendUint32(nil, uint32(len(data)+2))
	b = append(b, ctx, mch)
	return append(b, data...)
}

func pdu(items ...[]byte) []byte {
	body := bytes.Join(items, nil)
	b := []byte{byte(association.TypePDataTF), 0}
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...)
}

// cmdPDV is cmd as one last command fragment on ctx.
func cmdPDV(ctx uint8, cmd *dimse.Command) []byte { return pdv(ctx, true, true, cmd.Encode()) }

func dataPDV(ctx uint8, last bool, data []byte) []byte { return pdv(ctx, false, last, data) }

func withData(c *dimse.Command) *dimse.Command { c.CommandDataSetType = dimse.DataSetPresent; return c }

func storeRQ(id uint16, class string) *dimse.Command {
	return withData(&dimse.Command{CommandField: dimse.CStoreRQ, MessageID: id, AffectedSOPClassUID: class,
		AffectedSOPInstanceUID: instanceUID})
}

func echoRQ(id uint16) *dimse.Command {
	return &dimse.Command{CommandField: dimse.CEchoRQ, MessageID: id,
		AffectedSOPClassUID: association.VerificationSOPClass, CommandDataSetType: dimse.NoDataSet}
}

func rsp(field dimse.CommandField, id uint16, class string, status uint16) *dimse.Command {
	return &dimse.Command{CommandField: field, MessageIDBeingRespondedTo: id, AffectedSOPClassUID: class,
		CommandDataSetType: dimse.NoDataSet, Status: status, HasStatus: true}
}

// patientDataSet is a small Implicit VR LE data set with Patient ID.
func patientDataSet(id string) []byte {
	if len(id)%2 == 1 {
		id += " "
	}
	b := []byte{0x10, 0x00, 0x20, 0x00}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(id)))
	return append(b, id...)
}

// sent is one PDV as forwarded or replied.
type sent struct {
	ctx           uint8
	command, last bool
	data          []byte
}

// parsePDUs splits b into P-DATA-TF PDUs no longer than max and their PDVs.
func parsePDUs(t testing.TB, b []byte, max uint32) []sent {
	t.Helper()
	var out []sent
	for len(b) > 0 {
		if len(b) < association.HeaderLen || association.PDUType(b[0]) != association.TypePDataTF {
			t.Fatalf("not a P-DATA-TF: % x", b[:min(len(b), 16)])
		}
		n := binary.BigEndian.Uint32(b[2:6])
		if n > max {
			t.Fatalf("PDU of %d bytes, over the receiver's %d", n, max)
		}
		if int(n) > len(b)-6 {
			t.Fatalf("PDU length %d overruns %d bytes", n, len(b)-6)
		}
		if err := association.EachPDV(b[6:6+n], func(p association.PDV) error {
			out = append(out, sent{p.ContextID, p.Command, p.Last, bytes.Clone(p.Data)})
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		b = b[6+n:]
	}
	return out
}

// commands decodes the command sets among PDVs.
func commands(t testing.TB, pdvs []sent) []*dimse.Command {
	t.Helper()
	var out []*dimse.Command
	var buf []byte
	for _, p := range pdvs {
		if !p.command {
			continue
		}
		buf = append(buf, p.data...)
		if p.last {
			c, err := dimse.DecodeCommand(buf)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, c)
			buf = nil
		}
	}
	return out
}
