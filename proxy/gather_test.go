//go:build unix

package proxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"

	"github.com/dicomedge/dicomedge/association"
)

// writeCounter counts the writes that reach the socket.
type writeCounter struct {
	net.Conn
	n atomic.Int32
}

func (w *writeCounter) Write(b []byte) (int, error) {
	w.n.Add(1)
	return w.Conn.Write(b)
}

// A flush of the pduWriter's queue through TLS reaches the socket in one
// write, not one per 16 KiB record (crypto/tls writes each record with its
// own call); a PDU larger than the gather bound goes out in a few writes;
// the peer reads the same bytes; no buffer is held after the write.
func TestPDUWriterGathersTLSRecords(t *testing.T) {
	p := sharedPKI(t)
	pair, err := tls.LoadX509KeyPair(p.edgeCert, p.edgeKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(p.ca)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	pdus := func(n, size int) []byte {
		var b []byte
		for i := range n {
			b = append(b, pdataPDU(pdvItem(1, 0, bytes.Repeat([]byte{byte(i)}, size)))...)
		}
		return b
	}
	cases := []struct {
		name      string
		gather    bool
		queued    []byte // written with writeQueued, then flushed
		direct    []byte // written with writeRaw
		maxWrites int32
		minWrites int32
	}{
		{name: "a full queue, gathered", gather: true, queued: pdus(15, 16384), maxWrites: 1, minWrites: 1},
		{name: "a full queue, record by record", gather: false, queued: pdus(15, 16384), minWrites: 15},
		{name: "one 1 MiB PDU, gathered", gather: true, direct: pdus(1, 1<<20), maxWrites: 5, minWrites: 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			server, client := tcpPair(t)
			wc := &writeCounter{Conn: client}
			hc := &hookConn{Conn: wc}
			tcl := tls.Client(hc, &tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{pair}})
			ts := tls.Server(server, &tls.Config{Certificates: []tls.Certificate{pair}})
			want := append(append([]byte(nil), tc.queued...), tc.direct...)
			got := make(chan []byte, 1)
			go func() {
				b := make([]byte, len(want))
				_, _ = io.ReadFull(ts, b)
				got <- b
			}()
			if err := tcl.Handshake(); err != nil {
				t.Fatal(err)
			}
			w := &pduWriter{c: tcl}
			if tc.gather {
				w.g = hc
			}
			wc.n.Store(0)
			for b := tc.queued; len(b) > 0; {
				n := association.HeaderLen + int(uint32(b[2])<<24|uint32(b[3])<<16|uint32(b[4])<<8|uint32(b[5]))
				if err := w.writeQueued(b[:n]); err != nil {
					t.Fatal(err)
				}
				b = b[n:]
			}
			if err := w.flush(); err != nil {
				t.Fatal(err)
			}
			if len(tc.direct) > 0 {
				if err := w.writeRaw(tc.direct); err != nil {
					t.Fatal(err)
				}
			}
			writes := wc.n.Load()
			if writes < tc.minWrites || tc.maxWrites > 0 && writes > tc.maxWrites {
				t.Errorf("%d writes to the socket, want %d to %d", writes, tc.minWrites, tc.maxWrites)
			}
			if !bytes.Equal(<-got, want) {
				t.Fatal("the peer read other bytes")
			}
			if hc.out.box != nil || hc.out.on {
				t.Error("gather buffer held after the write")
			}
		})
	}
}

// On a plain connection the read of a PDU header takes whatever is
// waiting in one socket read, so the PDUs behind it cost no read of their
// own; a body read goes straight into the caller's buffer; bytes arrive
// intact and in order; nothing is held once it is all returned.
func TestWaitHookPlainReadAhead(t *testing.T) {
	server, client := tcpPair(t)
	var want []byte
	for i := range 3 {
		want = append(want, pdataPDU(pdvItem(1, 0, bytes.Repeat([]byte{byte(i + 1)}, 4000)))...)
	}
	if _, err := client.Write(want); err != nil {
		t.Fatal(err)
	}
	waitReadable(t, server, len(want))
	hooks := 0
	h := newWaitHook(server, func() { hooks++ })
	r := association.NewReader(&hookConn{Conn: server, wait: h}, 1<<20)
	var got []byte
	for i := range 3 {
		_, raw, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, raw...)
		if i == 0 && len(h.pend) != len(want)-len(raw) {
			t.Fatalf("after the first PDU %d bytes read ahead, want the %d of the other two", len(h.pend), len(want)-len(raw))
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatal("PDUs changed through the read-ahead")
	}
	if hooks != 0 || h.pbox != nil || len(h.pend) != 0 {
		t.Fatalf("hooks %d, read-ahead buffer held %v", hooks, h.pbox != nil)
	}
}
