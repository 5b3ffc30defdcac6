//go:build unix

package proxy

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
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
