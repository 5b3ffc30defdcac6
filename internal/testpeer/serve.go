package testpeer

import (
	"net"
	"testing"
)

// ListenServe listens on a free loopback port and hands each connection to
// handle in a goroutine of its own, closing it when handle returns, until
// the test ends. It returns the address.
func ListenServe(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}
