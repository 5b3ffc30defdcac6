package dimse

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/dicomedge/dicomedge/association"
)

// FuzzDecodeCommand: no panic, only ProtocolErrors, and what decodes
// re-encodes to bytes that decode to the same command and re-encode
// identically.
func FuzzDecodeCommand(f *testing.F) {
	for _, name := range []string{"testdata/c-echo-rq-echoscu.bin", "testdata/c-store-rq-storescu-xs.bin"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add((&Command{CommandField: CMoveRSP, MessageIDBeingRespondedTo: 1, HasStatus: true, Status: StatusPending,
		NumberOfRemainingSuboperations: Uint16(3), MoveDestination: "X", ErrorComment: "e",
		Elements: []Element{{TagActionTypeID, []byte{1, 0}}}}).Encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			var pe *association.ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("error type %T: %v", err, err)
			}
			return
		}
		e1 := c.Encode()
		c2, err := DecodeCommand(e1)
		if err != nil {
			t.Fatalf("re-encoded command does not decode: %v\n% x", err, e1)
		}
		if !typedEqual(c, c2) {
			t.Fatalf("round trip differs\n got %+v\nwant %+v", c2, c)
		}
		if e2 := c2.Encode(); !bytes.Equal(e1, e2) {
			t.Fatalf("encoding not stable\n% x\n% x", e1, e2)
		}
	})
}

// FuzzPatientIDScanner: no panic, and the answer does not depend on how
// the data set is fragmented.
func FuzzPatientIDScanner(f *testing.F) {
	f.Add([]byte(ex(0x0010, 0x0020, "LO", []byte("P1"))), uint16(3), false)
	f.Add(join(ex(0x0008, 0x0016, "UI", []byte("1.2.840.10008.5.1.4.1.1.2\x00")), ex(0x0008, 0x0018, "UI", []byte("1.2.3")), ex(0x0010, 0x0020, "LO", []byte("P"))), uint16(9), false)
	f.Add(join(im(0x0008, 0x1032, nil, u), delim(0xE000, u), im(0x0008, 0x0100, []byte("C ")), delim(0xE00D, 0), delim(0xE0DD, 0),
		im(0x0010, 0x0020, []byte("IMPL"))), uint16(17), true)
	f.Add(join(ex(0x0020, 0x000D, "UI", []byte("1.2\x00")), ex(0x7FE0, 0x0010, "OW", make([]byte, 64)), ex(0x0010, 0x0020, "LO", []byte("LATE"))), uint16(30), false)
	f.Add(join(ex(0x0008, 0x1032, "SQ", nil, u), delim(0xE000, 8), []byte("abcdefgh"), delim(0xE0DD, 0), ex(0x0010, 0x0020, "LO", []byte("Q"))), uint16(1), false)
	f.Fuzz(func(t *testing.T, data []byte, split uint16, implicit bool) {
		ts := association.ExplicitVRLittleEndian
		if implicit {
			ts = association.ImplicitVRLittleEndian
		}
		whole := NewPatientIDScanner(ts)
		whole.Feed(data)
		parts := NewPatientIDScanner(ts)
		k := min(int(split), len(data))
		parts.Feed(data[:k])
		parts.Feed(data[k:])
		id1, ok1 := whole.PatientID()
		id2, ok2 := parts.PatientID()
		st1, _ := whole.StudyInstanceUID()
		st2, _ := parts.StudyInstanceUID()
		si1, sok1 := whole.SOPInstanceUID()
		si2, sok2 := parts.SOPInstanceUID()
		sc1, _ := whole.SOPClassUID()
		sc2, _ := parts.SOPClassUID()
		if si1 != si2 || sok1 != sok2 || sc1 != sc2 || whole.Walked() != parts.Walked() || whole.Cut() != parts.Cut() {
			t.Fatalf("whole: instance %q %v class %q walked %v cut %v; split at %d: %q %v %q %v %v",
				si1, sok1, sc1, whole.Walked(), whole.Cut(), k, si2, sok2, sc2, parts.Walked(), parts.Cut())
		}
		if id1 != id2 || ok1 != ok2 || st1 != st2 || whole.Done() != parts.Done() || whole.Undetermined() != parts.Undetermined() {
			t.Fatalf("whole %q %v %v %q, split at %d %q %v %v %q", id1, ok1, whole.Done(), whole.Undetermined(),
				k, id2, ok2, parts.Done(), parts.Undetermined())
		}
		if len(id1) > maxPatientIDLen {
			t.Fatalf("patient ID of %d bytes", len(id1))
		}
		// The order check: the same pair at any fragmentation, in either
		// mode; a refused data set stops the scan, an allowed one keeps
		// the first Patient ID.
		var first [3]uint32
		for i, mode := range []Order{OrderRefuse, OrderAllow} {
			w, p := NewPatientIDScanner(ts), NewPatientIDScanner(ts)
			w.SetOrder(mode)
			p.SetOrder(mode)
			w.Feed(data)
			p.Feed(data[:k])
			p.Feed(data[k:])
			a1, b1, d1 := w.Disorder()
			a2, b2, d2 := p.Disorder()
			if a1 != a2 || b1 != b2 || d1 != d2 || w.Done() != p.Done() {
				t.Fatalf("mode %d: whole %v %08X %08X, split at %d %v %08X %08X", mode, d1, a1, b1, k, d2, a2, b2)
			}
			if d1 && b1 > a1 {
				t.Fatalf("mode %d: (%08X, %08X) named as out of order", mode, a1, b1)
			}
			if mode == OrderRefuse && d1 && !w.Done() {
				t.Fatal("out of order, yet not done")
			}
			// Both modes meet the same first pair.
			got := [3]uint32{a1, b1, 0}
			if d1 {
				got[2] = 1
			}
			if i == 0 {
				first = got
			} else if first != got {
				t.Fatalf("refuse named %08X, allow %08X", first, got)
			}
		}
	})
}
