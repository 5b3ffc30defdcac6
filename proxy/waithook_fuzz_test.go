//go:build unix

package proxy

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
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
		readThroughHook(t, newTLSWaitHook(nc, func() {}), nc, stream, int(bufLen))
	})
}

// FuzzWaitHookSocket is FuzzWaitHookStream over a real loopback socket, so
// that the read-ahead (whatever is waiting, in one read into a pooled
// buffer) and the wait run as on the edge: the peer writes the stream in
// the chunk sizes given and closes; the reads give back exactly its bytes,
// none crossing a record end of a well-formed stream, and nothing stays
// read ahead at the end.
func FuzzWaitHookSocket(f *testing.F) { fuzzWaitHookSocket(f, false) }

// FuzzWaitHookSocketPlain is FuzzWaitHookSocket for a plain connection,
// whose short reads (PDU headers) take what is waiting into the read-ahead
// buffer: the reads give back exactly the stream's bytes, and nothing stays
// read ahead at the end.
func FuzzWaitHookSocketPlain(f *testing.F) { fuzzWaitHookSocket(f, true) }

func fuzzWaitHookSocket(f *testing.F, plain bool) {
	wellFormed := append(append(tlsRecord(300, 'a'), tlsRecord(0, 'b')...), tlsRecord(17, 'c')...)
	f.Add(wellFormed, []byte{255, 3, 0, 40}, uint16(512))
	f.Add(append(tlsRecord(16401, 'd'), tlsRecord(16401, 'e')...), []byte{}, uint16(16<<10))
	f.Add(append([]byte{0xb3, 0xc5, 0xf6}, wellFormed...), []byte{7}, uint16(4096))
	f.Add([]byte{23, 3, 3, 0xff, 0xff, 1, 2, 3}, []byte{1}, uint16(16))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	f.Fuzz(func(t *testing.T, stream, chunks []byte, bufLen uint16) {
		if len(stream) > 1<<16 || bufLen == 0 {
			return
		}
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		server, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		// Closed with a reset: a fuzzing run opens millions of these, and
		// TIME_WAIT would run out of ports.
		defer func() { _ = server.(*net.TCPConn).SetLinger(0); server.Close() }()
		_ = server.SetReadDeadline(time.Now().Add(10 * time.Second))
		go func() {
			for i, p := 0, stream; len(p) > 0; i++ {
				n := len(p)
				if len(chunks) > 0 {
					n = min(n, int(chunks[i%len(chunks)])<<4+1)
				}
				if _, err := client.Write(p[:n]); err != nil {
					return
				}
				p = p[n:]
			}
			_ = client.(*net.TCPConn).CloseWrite()
		}()
		h := newTLSWaitHook(server, func() {})
		if plain {
			h = newWaitHook(server, func() {})
		}
		readThroughHook(t, h, server, stream, int(bufLen))
		if h.pbox != nil || len(h.pend) != 0 {
			t.Fatalf("%d bytes still read ahead at the end of the stream", len(h.pend))
		}
	})
}

// readThroughHook reads nc through h to its end (io.EOF or another error)
// with reads of bufLen bytes, and fails t unless the bytes are stream's,
// in order, no read returns more than asked, and, where stream is
// well-formed records, no read spans two of them.
func readThroughHook(t *testing.T, h *waitHook, nc net.Conn, stream []byte, bufLen int) {
	t.Helper()
	var ends []int
	if h.tlsRecords {
		ends = recordEnds(stream)
	}
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
			if isTimeout(err) {
				t.Fatalf("timed out after %d of %d bytes", len(got), len(stream))
			}
			break
		}
	}
	if !bytes.Equal(got, stream) {
		t.Fatalf("bytes changed: got %d bytes, want %d", len(got), len(stream))
	}
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
