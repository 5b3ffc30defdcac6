package association

import (
	"fmt"
	"testing"
)

// rq120 is what a modality proposes: 120 presentation contexts, each a
// storage SOP class with three transfer syntaxes.
func rq120() *AssociateRQ {
	rq := &AssociateRQ{ProtocolVersion: 1, CalledAE: "PACS", CallingAE: "CT-SCANNER-01", ApplicationContext: DICOMApplicationContext,
		UserInfo: UserInfo{HasMaxLength: true, MaxLength: 16384, ImplementationClassUID: "1.2.276.0.7230010.3.0.3.6.7",
			ImplementationVersionName: "OFFIS_DCMTK_367"}}
	for i := range 120 {
		rq.PresentationContexts = append(rq.PresentationContexts, PresentationContextRQ{
			ID: uint8(2*i + 1), AbstractSyntax: fmt.Sprintf("1.2.840.10008.5.1.4.1.1.%d.%d", 1+i/10, i%10),
			TransferSyntaxes: []string{JPEGLosslessSV1, ExplicitVRLittleEndian, ImplicitVRLittleEndian},
		})
	}
	return rq
}

func BenchmarkDecodeAssociateRQ120(b *testing.B) {
	raw, err := Append(nil, rq120())
	if err != nil {
		b.Fatal(err)
	}
	body := raw[HeaderLen:]
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(TypeAssociateRQ, body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeAssociateRQ120(b *testing.B) {
	rq := rq120()
	buf, _ := Append(nil, rq)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = Append(buf[:0], rq); err != nil {
			b.Fatal(err)
		}
	}
}

// cycle serves the same bytes forever, as a peer streaming PDUs would.
type cycle struct {
	b   []byte
	off int
}

func (c *cycle) Read(p []byte) (int, error) {
	n := copy(p, c.b[c.off:])
	c.off = (c.off + n) % len(c.b)
	return n, nil
}

func BenchmarkReaderPDataTF(b *testing.B) {
	for _, size := range []int{16 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			// PDU length = size: one PDV of size-6 data bytes.
			raw, err := Append(nil, &PDataTF{PDVs: []PDV{{ContextID: 1, Last: true, Data: make([]byte, size-6)}}})
			if err != nil {
				b.Fatal(err)
			}
			r := NewReader(&cycle{b: raw}, uint32(size))
			count := func(PDV) error { return nil }
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				_, raw, err := r.Next()
				if err != nil {
					b.Fatal(err)
				}
				if err := EachPDV(raw[HeaderLen:], count); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
