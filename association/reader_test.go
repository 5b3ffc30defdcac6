package association

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"
)

func stream(t *testing.T, pdus ...PDU) []byte {
	t.Helper()
	var out []byte
	for _, p := range pdus {
		var err error
		if out, err = Append(out, p); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestReaderStream(t *testing.T) {
	want := []PDU{
		&AssociateRQ{ProtocolVersion: 1, CalledAE: "SCP", CallingAE: "SCU", ApplicationContext: DICOMApplicationContext,
			PresentationContexts: []PresentationContextRQ{{ID: 1, AbstractSyntax: VerificationSOPClass, TransferSyntaxes: []string{ImplicitVRLittleEndian}}},
			UserInfo:             UserInfo{HasMaxLength: true, MaxLength: 32768, ImplementationClassUID: "1.2.3"}},
		&PDataTF{PDVs: []PDV{{ContextID: 1, Command: true, Last: true, Data: bytes.Repeat([]byte{7}, 3000)}}},
		&ReleaseRQ{},
		&Abort{Source: AbortSourceServiceProvider, Reason: AbortUnexpectedPDU},
	}
	wire := stream(t, want...)
	readers := []struct {
		name string
		r    func() io.Reader
	}{
		{"whole", func() io.Reader { return bytes.NewReader(wire) }},
		{"one byte at a time", func() io.Reader { return iotest.OneByteReader(bytes.NewReader(wire)) }},
		{"half reads", func() io.Reader { return iotest.HalfReader(bytes.NewReader(wire)) }},
		{"data with EOF", func() io.Reader { return iotest.DataErrReader(bytes.NewReader(wire)) }},
	}
	for _, tc := range readers {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReader(tc.r(), 0)
			for i, w := range want {
				p, err := r.ReadPDU()
				if err != nil {
					t.Fatalf("PDU %d: %v", i, err)
				}
				mustEqual(t, p, w)
			}
			if _, _, err := r.Next(); err != io.EOF {
				t.Fatalf("after the last PDU: %v, want io.EOF", err)
			}
		})
	}
}

func TestReaderErrors(t *testing.T) {
	rel := stream(t, &ReleaseRQ{})
	cases := []struct {
		name   string
		wire   []byte
		limit  uint32
		want   error       // matched with errors.Is, or
		reason AbortReason // a *ProtocolError with this reason
	}{
		{name: "empty stream is a clean EOF", wire: nil, want: io.EOF},
		{name: "partial header", wire: rel[:3], want: io.ErrUnexpectedEOF},
		{name: "header only", wire: rel[:6], want: io.ErrUnexpectedEOF},
		{name: "partial body", wire: rel[:8], want: io.ErrUnexpectedEOF},
		{name: "unknown PDU type", wire: []byte{0x09, 0, 0, 0, 0, 4, 0, 0, 0, 0}, reason: AbortUnrecognizedPDU},
		{name: "type zero", wire: []byte{0x00, 0, 0, 0, 0, 0}, reason: AbortUnrecognizedPDU},
		{name: "length over the limit", wire: []byte{0x04, 0, 0, 0, 0x40, 1}, limit: 16384, reason: AbortInvalidPDUParameterValue},
		{name: "4 GiB length", wire: []byte{0x04, 0, 0xff, 0xff, 0xff, 0xff}, reason: AbortInvalidPDUParameterValue},
		{name: "malformed body", wire: []byte{0x07, 0, 0, 0, 0, 2, 0, 0}, reason: AbortInvalidPDUParameterValue},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := bytes.NewReader(tc.wire)
			_, err := NewReader(src, tc.limit).ReadPDU()
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				return
			}
			var pe *ProtocolError
			if !errors.As(err, &pe) || pe.Reason != tc.reason {
				t.Fatalf("err = %v, want ProtocolError %v", err, tc.reason)
			}
			if tc.reason != AbortInvalidPDUParameterValue || tc.wire[0] != 0x07 {
				// Refused on the header: not one body byte consumed.
				if src.Len() != len(tc.wire)-HeaderLen {
					t.Fatalf("reader consumed %d bytes past the header", len(tc.wire)-HeaderLen-src.Len())
				}
			}
		})
	}
}

// A peer that announces a huge PDU must not make us allocate it: refused
// over the limit, and under the limit the buffer grows only with the bytes
// that actually arrive.
func TestReaderDoesNotAllocateAnnouncedLength(t *testing.T) {
	t.Run("over the limit", func(t *testing.T) {
		hdr := []byte{0x04, 0, 0xff, 0xff, 0xff, 0xf0}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range 100 {
			if _, _, err := NewReader(bytes.NewReader(hdr), 1<<20).Next(); err == nil {
				t.Fatal("accepted")
			}
		}
		runtime.ReadMemStats(&after)
		if perCall := (after.TotalAlloc - before.TotalAlloc) / 100; perCall > 8<<10 {
			t.Fatalf("%d bytes allocated per refused PDU", perCall)
		}
	})
	t.Run("stalled under the limit", func(t *testing.T) {
		wire := append([]byte{0x04, 0, 0, 0x40, 0, 0}, make([]byte, 100)...) // announces 4 MiB, sends 100 bytes
		r := NewReader(bytes.NewReader(wire), 8<<20)
		if _, _, err := r.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("err = %v", err)
		}
		if c := cap(r.buf); c > 2*growStep {
			t.Fatalf("buffer grew to %d bytes for 100 received", c)
		}
	})
}

func TestReaderReusesBuffer(t *testing.T) {
	p := &PDataTF{PDVs: []PDV{{ContextID: 1, Last: true, Data: make([]byte, 200<<10)}}}
	r := NewReader(bytes.NewReader(stream(t, p, p, p)), 0)
	var first *byte
	for i := range 3 {
		_, raw, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = &raw[0]
		} else if &raw[0] != first {
			t.Fatalf("PDU %d read into a new buffer", i)
		}
	}
}

func TestReaderSetLimit(t *testing.T) {
	wire := stream(t, &PDataTF{PDVs: []PDV{{ContextID: 1, Data: make([]byte, 1000)}}})
	r := NewReader(bytes.NewReader(append(append([]byte{}, wire...), wire...)), 0)
	if r.Limit() != DefaultMaxPDULength {
		t.Fatalf("default limit %d", r.Limit())
	}
	if _, _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	r.SetLimit(500)
	var pe *ProtocolError
	if _, _, err := r.Next(); !errors.As(err, &pe) {
		t.Fatalf("1006-byte PDU under a 500 limit: %v", err)
	}
}

func TestWritePDUOneWrite(t *testing.T) {
	var w countingWriter
	p := &AssociateRJ{Result: RejectTransient, Source: RejectSourceServiceProviderPresentation, Reason: RejectPresentationTemporaryCongestion}
	if err := WritePDU(&w, p); err != nil {
		t.Fatal(err)
	}
	if w.calls != 1 || !bytes.Equal(w.buf.Bytes(), pdu(0x03, []byte{0, 2, 3, 1})) {
		t.Fatalf("%d writes of % x", w.calls, w.buf.Bytes())
	}
}

type countingWriter struct {
	buf   bytes.Buffer
	calls int
}

func (w *countingWriter) Write(p []byte) (int, error) { w.calls++; return w.buf.Write(p) }

func TestEachPDVNoAllocation(t *testing.T) {
	body := cat(u32(5), []byte{1, 1, 'a', 'b', 'c'}, u32(4), []byte{1, 3, 'd', 'e'})
	var got []PDV
	if err := EachPDV(body, func(v PDV) error { got = append(got, v); return nil }); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, []PDV{{ContextID: 1, Command: true, Data: []byte("abc")}, {ContextID: 1, Command: true, Last: true, Data: []byte("de")}})
	n := 0
	count := func(PDV) error { n++; return nil }
	if a := testing.AllocsPerRun(100, func() { _ = EachPDV(body, count) }); a != 0 {
		t.Fatalf("EachPDV allocates %.0f times", a)
	}
	stop := errors.New("stop")
	if err := EachPDV(body, func(PDV) error { return stop }); err != stop {
		t.Fatalf("callback error not returned: %v", err)
	}
}

func TestReaderRelease(t *testing.T) {
	p := &PDataTF{PDVs: []PDV{{ContextID: 1, Last: true, Data: make([]byte, 300<<10)}}}
	r := NewReader(bytes.NewReader(stream(t, p, &ReleaseRQ{})), 1<<20)
	if _, _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if cap(r.buf) < 300<<10 {
		t.Fatalf("buffer %d", cap(r.buf))
	}
	r.Release()
	if r.buf != nil {
		t.Fatalf("Release kept a buffer of %d bytes", cap(r.buf))
	}
	typ, raw, err := r.Next()
	if err != nil || typ != TypeReleaseRQ || !bytes.Equal(raw, stream(t, &ReleaseRQ{})) {
		t.Fatalf("after Release: %v %v % x", typ, err, raw)
	}
}

// hookReader calls hook before every read of the underlying stream, as the
// proxy's flush-before-blocking reader does.
type hookReader struct {
	r    io.Reader
	hook func()
}

func (h *hookReader) Read(p []byte) (int, error) {
	h.hook()
	return h.r.Read(p)
}

// Release called from below Next (while it waits for bytes) must not take
// the buffer a body is being read into, and may take it between PDUs.
func TestReaderReleaseFromUnderlyingRead(t *testing.T) {
	p := &PDataTF{PDVs: []PDV{{ContextID: 1, Last: true, Data: bytes.Repeat([]byte{0xab}, 100<<10)}}}
	wire := stream(t, p, p, &ReleaseRQ{})
	h := &hookReader{r: iotest.OneByteReader(bytes.NewReader(wire))}
	r := NewReader(h, 1<<20)
	released := 0
	h.hook = func() {
		if r.buf != nil && !r.inBody {
			released++
		}
		r.Release()
	}
	for i, want := range [][]byte{stream(t, p), stream(t, p), stream(t, &ReleaseRQ{})} {
		_, raw, err := r.Next()
		if err != nil || !bytes.Equal(raw, want) {
			t.Fatalf("PDU %d: %v (%d bytes, want %d)", i, err, len(raw), len(want))
		}
	}
	if released != 2 {
		t.Fatalf("buffer released %d times between PDUs, want 2", released)
	}
}

// Released and taken again between PDUs, the buffer comes from the pool:
// no allocation per PDU.
func TestReaderReleaseReusesPooledBuffer(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops entries at random under the race detector")
	}
	wire := stream(t, &PDataTF{PDVs: []PDV{{ContextID: 1, Last: true, Data: make([]byte, 16<<10)}}})
	br := bytes.NewReader(wire)
	r := NewReader(br, 1<<20)
	allocs := testing.AllocsPerRun(100, func() {
		br.Reset(wire)
		if _, _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
		r.Release()
	})
	// sync.Pool may drop entries at a GC; allow for that, not for one per PDU.
	if allocs >= 0.5 {
		t.Fatalf("%.2f allocations per released PDU", allocs)
	}
}

// Bits 2-7 of a PDV's message control header are always 0 (PS3.8 E.2): a
// PDV that sets one is malformed.
func TestEachPDVReservedBits(t *testing.T) {
	for _, mch := range []byte{0x04, 0x80, 0xff} {
		err := EachPDV(cat(u32(3), []byte{1, mch, 'a'}), func(PDV) error { return nil })
		var pe *ProtocolError
		if !errors.As(err, &pe) || pe.Reason != AbortInvalidPDUParameterValue {
			t.Errorf("control header 0x%02x: %v, want invalid-PDU-parameter-value", mch, err)
		}
	}
}
