//go:build unix

package proxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// tcpPair is a connected loopback TCP pair.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	_ = server.SetReadDeadline(time.Now().Add(10 * time.Second))
	return server, client
}

// The wait hook runs only when a read would block: bytes already waiting
// are returned without it (the relay keeps queueing), an empty socket runs
// it first (the relay flushes, then waits). Without a TCP socket to probe,
// it runs before every read.
func TestWaitHook(t *testing.T) {
	cases := []struct {
		name      string
		pipe      bool
		before    string // written before the read
		inHook    string // written by the hook itself (arrives during the blocking read)
		closeHook bool   // the hook closes the peer instead
		want      string
		wantErr   error
		wantHooks int
	}{
		{name: "bytes waiting: no hook", before: "abc", want: "abc", wantHooks: 0},
		{name: "nothing waiting: hook, then the blocking read", inHook: "xyz", want: "xyz", wantHooks: 1},
		{name: "peer closed while waiting: hook, then EOF", closeHook: true, wantErr: io.EOF, wantHooks: 1},
		{name: "not a TCP socket: hook before every read", pipe: true, inHook: "p", want: "p", wantHooks: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var server, client net.Conn
			if tc.pipe {
				server, client = net.Pipe()
				t.Cleanup(func() { server.Close(); client.Close() })
			} else {
				server, client = tcpPair(t)
			}
			hooks := 0
			h := newWaitHook(server, func() {
				hooks++
				switch {
				case tc.closeHook:
					client.Close()
				case tc.inHook != "":
					go func() { _, _ = client.Write([]byte(tc.inHook)) }()
				}
			})
			if !tc.pipe && h.rc == nil {
				t.Fatal("no raw connection to probe on a TCP socket")
			}
			if tc.before != "" {
				if _, err := client.Write([]byte(tc.before)); err != nil {
					t.Fatal(err)
				}
				waitReadable(t, server, len(tc.before))
			}
			buf := make([]byte, 64)
			n, err := h.read(server, buf)
			if !errors.Is(err, tc.wantErr) || string(buf[:n]) != tc.want {
				t.Errorf("read %q, %v; want %q, %v", buf[:n], err, tc.want, tc.wantErr)
			}
			if hooks != tc.wantHooks {
				t.Errorf("hook ran %d times, want %d", hooks, tc.wantHooks)
			}
		})
	}
}

// waitReadable waits (bounded) until n bytes are queued on c's socket, so
// that "bytes waiting" does not depend on loopback delivery timing.
func waitReadable(t *testing.T, c net.Conn, n int) {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	buf := make([]byte, n)
	for time.Now().Before(deadline) {
		queued := 0
		_ = rc.Control(func(fd uintptr) {
			queued, _, _ = syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		})
		if queued >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%d bytes never arrived", n)
}

// tlsRecord is a TLS record header (application data, TLS 1.2 version
// field) followed by n bytes of body.
func tlsRecord(n int, fill byte) []byte {
	b := []byte{23, 3, 3, byte(n >> 8), byte(n)}
	return append(b, bytes.Repeat([]byte{fill}, n)...)
}

// Beneath crypto/tls, no read returns bytes of two records (tls.Conn would
// keep a larger input buffer for good), whatever the reader asks for and
// however the bytes arrive; the bytes themselves pass unchanged.
func TestWaitHookTLSRecords(t *testing.T) {
	cases := []struct {
		name    string
		records []int  // body lengths
		bufLen  int    // what the reader asks for each time
		chunk   int    // the sender writes this many bytes at a time (0: all at once)
		prefix  []byte // the hook starts inside a record: plain reads, bytes intact
	}{
		{name: "full records at once, large reads", records: []int{16401, 16401, 16401, 300}, bufLen: 64 << 10},
		{name: "small and empty records", records: []int{1, 0, 7, 0, 0, 12}, bufLen: 64 << 10},
		{name: "reads smaller than a header", records: []int{10, 3, 20}, bufLen: 2},
		{name: "sender trickles", records: []int{5000, 70, 16401}, bufLen: 32 << 10, chunk: 3},
		{name: "started inside a record", prefix: []byte{0xb3, 0xc5, 0xf6, 0xf0, 0x9d, 1, 2}, records: []int{16401, 16401}, bufLen: 64 << 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			server, client := tcpPair(t)
			stream := append([]byte(nil), tc.prefix...)
			var ends []int // stream offsets where a record ends
			for i, n := range tc.records {
				stream = append(stream, tlsRecord(n, byte('a'+i))...)
				ends = append(ends, len(stream))
			}
			go func() {
				if tc.chunk == 0 {
					_, _ = client.Write(stream)
					return
				}
				for p := stream; len(p) > 0; p = p[min(tc.chunk, len(p)):] {
					if _, err := client.Write(p[:min(tc.chunk, len(p))]); err != nil {
						return
					}
				}
			}()
			h := newTLSWaitHook(server, func() {})
			var got []byte
			buf := make([]byte, tc.bufLen)
			for len(got) < len(stream) {
				n, err := h.read(server, buf)
				if err != nil {
					t.Fatalf("after %d bytes: %v", len(got), err)
				}
				start := len(got)
				got = append(got, buf[:n]...)
				for _, e := range ends {
					if tc.prefix == nil && start < e && len(got) > e {
						t.Fatalf("read of bytes %d-%d crosses the record end at %d", start, len(got), e)
					}
				}
			}
			if !bytes.Equal(got, stream) {
				t.Fatal("bytes changed on the way")
			}
			if h.pbox != nil || h.an != 0 {
				t.Errorf("read-ahead kept after tls.Conn took every byte: buffer %v, %d header bytes", h.pbox != nil, h.an)
			}
			if h.tlsRecords != (tc.prefix == nil) {
				t.Errorf("following records: %v", h.tlsRecords)
			}
		})
	}
}

// Through a real tls.Conn (the hook set after the handshake), a large write
// arrives intact. When the client waits for the edge first, as a DICOM
// requestor waits for the A-ASSOCIATE-AC, the hook starts at a record
// boundary and follows the records to the end; when the client writes at
// once, tls.Conn may already hold part of a record: the hook notices the
// implausible header and falls back to plain reads, still intact.
func TestWaitHookUnderTLS(t *testing.T) {
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
	want := make([]byte, 1<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	for _, waits := range []bool{true, false} {
		t.Run(fmt.Sprintf("client waits %v", waits), func(t *testing.T) {
			server, client := tcpPair(t)
			hooked := &hookConn{Conn: server}
			ts := tls.Server(hooked, &tls.Config{Certificates: []tls.Certificate{pair}})
			tcl := tls.Client(client, &tls.Config{RootCAs: roots, ServerName: "localhost"})
			errc := make(chan error, 1)
			go func() {
				if err := tcl.Handshake(); err != nil {
					errc <- err
					return
				}
				if waits {
					if _, err := io.ReadFull(tcl, make([]byte, 1)); err != nil {
						errc <- err
						return
					}
				}
				_, err := tcl.Write(want)
				errc <- err
			}()
			if err := ts.Handshake(); err != nil {
				t.Fatal(err)
			}
			hooked.wait = newTLSWaitHook(server, func() {})
			if waits {
				if _, err := ts.Write([]byte{1}); err != nil {
					t.Fatal(err)
				}
			}
			got := make([]byte, len(want))
			if _, err := io.ReadFull(ts, got); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("data changed through the bounded reads")
			}
			if h := hooked.wait; waits && (!h.tlsRecords || h.hn != 0 || h.left != 0 || h.an != 0) {
				t.Errorf("not following records to the end: records %v, header %d, left %d, ahead %d", h.tlsRecords, h.hn, h.left, h.an)
			}
		})
	}
}

// Behind a PROXY protocol wrapper the hook still reads the socket itself:
// what the wrapper buffered beyond the header comes first and in order,
// bytes waiting are returned without the hook, and the hook runs only
// before a read that would block (it used to run before every read, which
// turned the relay's write batching off behind a load balancer).
func TestWaitHookBeneathProxyProtocol(t *testing.T) {
	for _, tlsRecords := range []bool{false, true} {
		t.Run(fmt.Sprintf("tlsRecords=%v", tlsRecords), func(t *testing.T) {
			server, client := tcpPair(t)
			hdr, err := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000},
				&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2762}).Format()
			if err != nil {
				t.Fatal(err)
			}
			first, second, third := tlsRecord(40, 'a'), tlsRecord(30, 'b'), tlsRecord(20, 'c')
			if _, err := client.Write(append(hdr, first...)); err != nil {
				t.Fatal(err)
			}
			waitReadable(t, server, len(hdr)+len(first))
			pc := proxyproto.NewConn(server, proxyproto.SetReadHeaderTimeout(5*time.Second))
			if pc.ProxyHeader() == nil {
				t.Fatal("no PROXY header read")
			}
			hooks := 0
			newHook := newWaitHook
			if tlsRecords {
				newHook = newTLSWaitHook
			}
			h := newHook(pc, func() {
				hooks++
				go func() { _, _ = client.Write(third) }()
			})
			if h.rc == nil || h.direct == nil {
				t.Fatal("the hook does not reach the socket beneath the PROXY wrapper")
			}
			if string(h.pend) != string(first) {
				t.Fatalf("taken from the wrapper's buffer: %q, want the record that came with the header", h.pend)
			}
			readAll := func(want []byte) {
				t.Helper()
				got := make([]byte, 0, len(want))
				buf := make([]byte, 256)
				for len(got) < len(want) {
					_ = server.SetReadDeadline(time.Now().Add(10 * time.Second))
					n, err := h.read(pc, buf[:min(len(buf), len(want)-len(got))])
					if err != nil {
						t.Fatalf("read after %q: %v", got, err)
					}
					got = append(got, buf[:n]...)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("read %q, want %q", got, want)
				}
			}
			readAll(first) // buffered by the wrapper, or still on the socket
			if _, err := client.Write(second); err != nil {
				t.Fatal(err)
			}
			waitReadable(t, server, len(second))
			readAll(second)
			if hooks != 0 {
				t.Fatalf("hook ran %d times while bytes were waiting", hooks)
			}
			readAll(third) // nothing waiting: the hook, which sends it
			if hooks != 1 {
				t.Fatalf("hook ran %d times, want 1 (before the read that had to wait)", hooks)
			}
		})
	}
}
