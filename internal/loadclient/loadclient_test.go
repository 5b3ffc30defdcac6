package loadclient

import (
	"context"
	"net"
	"testing"
	"time"
)

// The load client against its own SCP over plain TCP: a whole association,
// a short rate run and a relayed-style hold with one C-STORE each.
func TestAgainstServeSCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go ServeSCP(ln)
	target := Target{Addr: ln.Addr().String(), CallingAE: "LOADTEST", CalledAE: "SCP", Timeout: 20 * time.Second}
	ctx := context.Background()
	if _, err := Echo(ctx, target, nil); err != nil {
		t.Fatalf("Echo: %v", err)
	}
	res := Rate(ctx, RateConfig{Target: target, Workers: 2, Duration: 200 * time.Millisecond})
	if res.Associations == 0 || res.Errors != 0 {
		t.Fatalf("Rate: %+v", res)
	}
	conns, err := Hold(ctx, HoldConfig{Target: target, N: 5, StoreBytes: 64 << 10})
	if err != nil {
		t.Fatalf("Hold: %v", err)
	}
	if len(conns) != 5 {
		t.Fatalf("Hold returned %d connections, want 5", len(conns))
	}
	for _, c := range conns {
		c.Close()
	}
}

// A refused association is an error, not a count.
func TestEchoRefusedIsError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
	}()
	if _, err := Echo(context.Background(), Target{Addr: ln.Addr().String(), Timeout: 5 * time.Second}, nil); err == nil {
		t.Fatal("Echo to a peer that hangs up succeeded")
	}
}
