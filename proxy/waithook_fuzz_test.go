//go:build unix

package proxy

import (
	"bytes"
	"io"
	"net"
	"testing"
)

// chunkConn delivers a stream in the chunk sizes it is given (cycled), as
// a socket delivers whatever has arrived; its other methods are unused.
type chunkConn struct {
	net.Conn
	rest   []byte
	chunks []byte
	i      int
}

func (c *chunkConn) Read(b []byte) (int, error) {
	if len(c.rest) == 0 {
		return 0, io.EOF
	}
	n := len(c.rest)
	if len(c.chunks) > 0 {
		n = int(c.chunks[c.i%len(c.chunks)]) + 1
		c.i++
	}
	n = copy(b, c.rest[:min(n, len(c.rest))])
	c.rest = c.rest[n:]
	return n, nil
}

// FuzzWaitHookStream: whatever the stream beneath crypto/tls holds (records,
// garbage, a start inside a record) and however it arrives, the reads the
// hook returns give back exactly the stream's bytes, in order, each no
// longer than asked; where the stream is well-formed records, no read spans
// two of them.
func FuzzWaitHookStream(f *testing.F) {
	wellFormed := append(append(tlsRecord(300, 'a'), tlsRecord(0, 'b')...), tlsRecord(17, 'c')...)
	f.Add(wellFormed, []byte{255, 3, 0, 40}, uint16(512))
	f.Add(wellFormed, []byte{}, uint16(2))
	f.Add(append([]byte{0xb3, 0xc5, 0xf6}, wellFormed...), []byte{7}, uint16(4096))
	f.Add([]byte{23, 3, 3, 0xff, 0xff, 1, 2, 3}, []byte{1}, uint16(16))
	f.Fuzz(func(t *testing.T, stream, chunks []byte, bufLen uint16) {
		if len(stream) > 1<<16 || bufLen == 0 {
			return
		}
		nc := &chunkConn{rest: stream, chunks: chunks}
		h := newTLSWaitHook(nc, func() {})
		ends := recordEnds(stream)
		buf := make([]byte, bufLen)
		var got []byte
		for reads := 0; ; reads++ {
			if reads > 4*len(stream)+8 {
				t.Fatalf("no progress after %d reads (%d of %d bytes)", reads, len(got), len(stream))
			}
			n, err := h.read(nc, buf)
			if n > len(buf) {
				t.Fatalf("read returned %d bytes into %d", n, len(buf))
			}
			start := len(got)
			got = append(got, buf[:n]...)
			for _, e := range ends {
				if start < e && len(got) > e {
					t.Fatalf("read of bytes %d-%d crosses the record end at %d", start, len(got), e)
				}
			}
			if err != nil {
				break
			}
		}
		if !bytes.Equal(got, stream) {
			t.Fatalf("bytes changed: got %d bytes, want %d", len(got), len(stream))
		}
	})
}

// recordEnds is where each record of stream ends while stream parses as
// plausible TLS records from its start; nil once it does not.
func recordEnds(stream []byte) []int {
	var ends []int
	for off := 0; off+tlsHeaderLen <= len(stream); {
		var hdr [tlsHeaderLen]byte
		copy(hdr[:], stream[off:])
		if !plausibleTLSHeader(hdr) {
			return ends
		}
		off += tlsHeaderLen + (int(hdr[3])<<8 | int(hdr[4]))
		if off > len(stream) {
			return ends
		}
		ends = append(ends, off)
	}
	return ends
}
