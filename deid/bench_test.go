package deid

import (
	"testing"
)

// BenchmarkTransform de-identifies a CT-like instance of 512 KiB of pixel
// data fed in 16 KiB PDV-sized pieces, as the relay does.
func BenchmarkTransform(b *testing.B) {
	p := testProfile(b, Config{})
	in := sample(true, make([]byte, 512<<10))
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		tr, _ := New(p, ExplicitVRLittleEndian)
		for rest := in; len(rest) > 0; {
			n := min(16<<10, len(rest))
			if _, err := tr.Write(rest[:n]); err != nil {
				b.Fatal(err)
			}
			tr.Take()
			rest = rest[n:]
		}
		if err := tr.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
