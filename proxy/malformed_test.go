package proxy

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/internal/testpeer"
	"github.com/dicomedge/dicomedge/proxy/inspect"
)

// exElement is one Explicit VR Little Endian element (PS3.5 7.1.2).
func exElement(group, elem uint16, vr string, value []byte) []byte {
	if len(value)%2 == 1 {
		value = append(value, ' ')
	}
	b := binary.LittleEndian.AppendUint16(binary.LittleEndian.AppendUint16(nil, group), elem)
	b = append(b, vr...)
	switch vr {
	case "OB", "OW", "SQ", "UN", "UT":
		b = binary.LittleEndian.AppendUint32(append(b, 0, 0), uint32(len(value)))
	default:
		b = binary.LittleEndian.AppendUint16(b, uint16(len(value)))
	}
	return append(b, value...)
}

// unsortedDataSets are C-STORE data sets that break PS3.5 7.1, each with
// the tags the edge must name and the Patient ID a PACS that keeps the
// first would index. The 64 KiB of pixel data makes each span several
// PDUs, so the backend has begun receiving the instance when the edge
// sees the fault.
func unsortedDataSets() []struct {
	name, tags, patient string
	ds                  []byte
} {
	sop := func(n string) []byte {
		return bytes.Join([][]byte{
			exElement(0x0008, 0x0016, "UI", []byte(association.SecondaryCaptureImageStorage+"\x00")),
			exElement(0x0008, 0x0018, "UI", []byte(testInstanceUID+"."+n)),
			exElement(0x0008, 0x0060, "CS", []byte("OT")),
		}, nil)
	}
	pixels := exElement(0x7FE0, 0x0010, "OW", bytes.Repeat([]byte{0x5A}, 64<<10))
	name := exElement(0x0010, 0x0010, "PN", []byte("Doe^Jane"))
	pid := func(v string) []byte { return exElement(0x0010, 0x0020, "LO", []byte(v)) }
	study := exElement(0x0020, 0x000D, "UI", []byte("2.25.77\x00"))
	return []struct {
		name, tags, patient string
		ds                  []byte
	}{
		{"patient ID repeated", "(0010,0020) repeated", "HARMLESS",
			bytes.Join([][]byte{sop("1"), name, pid("HARMLESS"), pid("VICTIM"), study, pixels}, nil)},
		{"two elements swapped", "(0010,0010) after (0010,0020)", "SWAPPED",
			bytes.Join([][]byte{sop("2"), pid("SWAPPED"), name, study, pixels}, nil)},
		{"patient ID again after the pixel data", "(0010,0020) after (7FE0,0010)", "FIRST",
			bytes.Join([][]byte{sop("3"), name, pid("FIRST"), study, pixels, pid("LATE")}, nil)},
	}
}

// A Go client sends data sets out of tag order through the edge to a real
// storescp: the association is aborted (2, 6) before the instance is
// whole, storescp stores nothing, and the audit names the two tags.
func TestRelayRefusesUnsortedDataSets(t *testing.T) {
	testpeer.Require(t, "storescp")
	for _, tc := range unsortedDataSets() {
		t.Run(tc.name, func(t *testing.T) {
			scp := testpeer.StartStoreSCP(t, "STORESCP")
			e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", scp.Addr, "STORESCP"),
				Rules: storeRules(`"C-ECHO", "C-STORE"`), PatientIDs: "plain"})
			c := inspectClient(t, e)
			cmd := storeCmd(1, association.SecondaryCaptureImageStorage)
			// Written from a goroutine: the edge aborts while the client is
			// still sending, and reading the A-ABORT must not wait for it.
			sent := make(chan error, 1)
			go func() { sent <- dimse.WriteMessage(c, pcSC, cmd, tc.ds, 16384) }()
			expectAbortAfter(t, c, association.AbortInvalidPDUParameterValue)
			<-sent
			ev := abortedEvent(t, e, "client:invalid-pdu-parameter-value")
			if !strings.HasPrefix(ev.Detail, inspect.MalformedDataSet+": "+tc.tags) {
				t.Errorf("aborted record detail %q, want %s: %s", ev.Detail, inspect.MalformedDataSet, tc.tags)
			}
			d := e.waitEvent(t, "dimse C-STORE", func(ev audit.Event) bool { return ev.Event == audit.EventDIMSE })
			if d.Service != "C-STORE" || d.Allowed == nil || *d.Allowed || d.Status != "" ||
				d.Detail != inspect.MalformedDataSet+": "+tc.tags {
				t.Errorf("dimse record %+v", d)
			}
			// storescp has had the A-ABORT; give it a moment to have
			// written anything it was going to.
			time.Sleep(300 * time.Millisecond)
			if got := scp.Received(t); len(got) != 0 || scp.Count() != 0 {
				t.Fatalf("storescp stored %d instances (%d files), want none\n%s", len(got), scp.Count(), scp.Output())
			}
		})
	}
}

// The same through the edge to Orthanc, a PACS that indexes what it
// receives: nothing reaches its index, and a well-ordered data set sent on
// a new association afterwards is stored (so the empty index is the
// refusal, not an Orthanc that stores nothing).
func TestRelayRefusesUnsortedDataSetsOrthanc(t *testing.T) {
	testpeer.Require(t, "Orthanc")
	o := testpeer.StartOrthanc(t, "ORTHANC", nil)
	e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", o.DICOM, "ORTHANC"), Rules: storeRules(`"C-ECHO", "C-STORE"`)})
	instances := func() []string {
		t.Helper()
		resp, err := http.Get("http://" + o.HTTP + "/instances")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ids []string
		if err := json.NewDecoder(resp.Body).Decode(&ids); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	for _, tc := range unsortedDataSets() {
		c := inspectClient(t, e)
		sent := make(chan error, 1)
		go func() {
			sent <- dimse.WriteMessage(c, pcSC, storeCmd(1, association.SecondaryCaptureImageStorage), tc.ds, 16384)
		}()
		expectAbortAfter(t, c, association.AbortInvalidPDUParameterValue)
		<-sent
		c.Close()
	}
	time.Sleep(300 * time.Millisecond)
	if ids := instances(); len(ids) != 0 {
		t.Fatalf("Orthanc indexed %d instances of data sets out of order\n%s", len(ids), o.Output())
	}
	// A well-ordered one goes through.
	ok := bytes.Join([][]byte{
		exElement(0x0008, 0x0016, "UI", []byte(association.SecondaryCaptureImageStorage+"\x00")),
		exElement(0x0008, 0x0018, "UI", []byte(testInstanceUID+".9")),
		exElement(0x0008, 0x0060, "CS", []byte("OT")),
		exElement(0x0010, 0x0010, "PN", []byte("Doe^Jane")),
		exElement(0x0010, 0x0020, "LO", []byte("ORDERED")),
		exElement(0x0020, 0x000D, "UI", []byte("2.25.77\x00")),
		exElement(0x0020, 0x000E, "UI", []byte("2.25.78\x00")),
	}, nil)
	c := inspectClient(t, e)
	cmd := storeCmd(1, association.SecondaryCaptureImageStorage)
	cmd.AffectedSOPInstanceUID = testInstanceUID + ".9"
	if err := dimse.WriteMessage(c, pcSC, cmd, ok, 16384); err != nil {
		t.Fatal(err)
	}
	if rsp := readResponse(t, c); rsp.Status != dimse.StatusSuccess {
		t.Fatalf("the well-ordered data set: status 0x%04X\n%s", rsp.Status, o.Output())
	}
	if ids := instances(); len(ids) != 1 {
		t.Fatalf("Orthanc holds %d instances after the well-ordered one, want 1", len(ids))
	}
}

// With allow_unsorted_data_sets the same data sets reach storescp whole;
// each record says it was allowed out of order and takes the first
// Patient ID, as the PACS would.
func TestRelayAllowsUnsortedDataSetsByRule(t *testing.T) {
	testpeer.Require(t, "storescp")
	scp := testpeer.StartStoreSCP(t, "STORESCP")
	e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", scp.Addr, "STORESCP"),
		Rules: modalityRelayRule(`services = ["C-ECHO", "C-STORE"]
    allow_unsorted_data_sets = true`), PatientIDs: "plain"})
	c := inspectClient(t, e)
	cases := unsortedDataSets()
	for i, tc := range cases {
		cmd := storeCmd(uint16(i+1), association.SecondaryCaptureImageStorage)
		cmd.AffectedSOPInstanceUID = testInstanceUID + "." + string(rune('1'+i))
		if err := dimse.WriteMessage(c, pcSC, cmd, tc.ds, 16384); err != nil {
			t.Fatal(err)
		}
		if rsp := readResponse(t, c); rsp.Status != dimse.StatusSuccess {
			t.Fatalf("%s: status 0x%04X", tc.name, rsp.Status)
		}
	}
	if got := scp.Received(t); len(got) != len(cases) {
		t.Fatalf("storescp stored %d instances, want %d", len(got), len(cases))
	}
	for i, tc := range cases {
		d := e.waitEvent(t, "dimse "+tc.name, func(ev audit.Event) bool {
			return ev.Event == audit.EventDIMSE && ev.MessageID == i+1
		})
		want := inspect.UnsortedDataSet + " by rule modalities: " + tc.tags + " (PS3.5 7.1)"
		if d.Status != "0x0000" || d.Detail != want || d.PatientID != tc.patient {
			t.Errorf("%s: dimse record status %s detail %q patient %q; want detail %q, patient %q",
				tc.name, d.Status, d.Detail, d.PatientID, want, tc.patient)
		}
	}
}
