package deid

import (
	"bytes"
	"testing"
)

// FuzzTransform feeds random element streams in one piece and in pieces
// cut where the fuzzer says: the output and the verdict must not depend on
// the cut, and nothing may panic or hold more than the bounds.
func FuzzTransform(f *testing.F) {
	f.Add(sample(true, []byte{1, 2, 3, 4}), true, uint16(7))
	f.Add(sample(false, []byte{1, 2, 3, 4}), false, uint16(1))
	f.Add((&ds{explicit: true}).seq(0x00081140, true, (&ds{explicit: true}).str(0x00081155, "1.2").b).b, true, uint16(3))
	f.Add([]byte{0xe0, 0x7f, 0x10, 0, 'O', 'B', 0, 0, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff, 0, 0xe0, 4, 0, 0, 0, 1, 2, 3, 4, 0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0}, true, uint16(5))
	p, _ := NewProfile(Config{Key: testKey, MaxHeader: 1 << 16, MaxValue: 1 << 12, Options: []string{"retain-modified-dates", "clean-descriptors"}})
	f.Fuzz(func(t *testing.T, in []byte, explicit bool, cut uint16) {
		ts := ImplicitVRLittleEndian
		if explicit {
			ts = ExplicitVRLittleEndian
		}
		whole, _ := New(p, ts)
		_, err1 := whole.Write(in)
		if err1 == nil {
			err1 = whole.Close()
		}
		out1 := whole.Next(nil)

		pieces, _ := New(p, ts)
		var out2 []byte
		var err2 error
		step := int(cut)%64 + 1
		for b := in; len(b) > 0 && err2 == nil; {
			n := min(step, len(b))
			_, err2 = pieces.Write(b[:n])
			out2 = pieces.Next(out2)
			b = b[n:]
		}
		if err2 == nil {
			err2 = pieces.Close()
		}
		out2 = pieces.Next(out2)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("whole: %v; in pieces of %d: %v", err1, step, err2)
		}
		if err1 == nil && !bytes.Equal(out1, out2) {
			t.Fatalf("output differs in pieces of %d", step)
		}
		if err1 == nil {
			// What the transform writes, it must read back.
			c := &collect{}
			w := newWalker(explicit, c)
			if _, err := w.feed(out1); err != nil {
				t.Fatalf("output does not parse: %v", err)
			}
			if err := w.finish(); err != nil {
				t.Fatalf("output does not parse: %v", err)
			}
		}
	})
}
