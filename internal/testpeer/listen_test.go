package testpeer

import (
	"fmt"
	"net"
	"os"
	"testing"
	"time"
)

// A peer whose port was taken before it bound must be recognised, so
// StartListening can start it again on another port.
func TestPeerOnTakenPortIsRecognised(t *testing.T) {
	Require(t, "storescp")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := Start(t, "storescp", fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
	select {
	case <-p.Done():
	case <-time.After(StartupTimeout):
		t.Fatal("storescp kept running on a port that is in use")
	}
	if !addressInUse(p.Output()) {
		t.Fatalf("storescp's complaint not recognised as address-in-use:\n%s", p.Output())
	}
	if err := waitListening(ln.Addr().String(), time.Second, p); err == nil {
		t.Fatal("waitListening accepted another process's listener for an exited peer")
	}
}

func TestStartListeningStartsStoreSCP(t *testing.T) {
	s := StartStoreSCP(t, "STORESCP")
	c, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatalf("storescp not reachable on %s: %v", s.Addr, err)
	}
	c.Close()
}

// A peer still starting while another process listens on its port is not
// ready: connecting to the port would reach the other process.
func TestWaitListeningWantsThePeersOwnListener(t *testing.T) {
	if _, ok := listensOn(os.Getpid(), 1); !ok {
		t.Skip("listeners cannot be attributed to processes on this platform")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := Start(t, "sleep", "30")
	if err := waitListening(ln.Addr().String(), 2*time.Second, p); err == nil {
		t.Fatal("waitListening took another process's listener for the peer's")
	}
	// The test binary itself does own it.
	if mine, ok := listensOn(os.Getpid(), ln.Addr().(*net.TCPAddr).Port); !ok || !mine {
		t.Fatalf("listensOn(self) = %v, %v; want true, true", mine, ok)
	}
}

// Ports come from below the ephemeral range, where outgoing connections
// cannot take them between the pick and the peer's bind, and never twice.
func TestFreePortOutsideEphemeralRange(t *testing.T) {
	lo, hi := belowEphemeral()
	if lo >= hi {
		t.Skip("no room below the ephemeral range on this machine")
	}
	seen := map[int]bool{}
	for range 200 {
		p := FreePort(t)
		if p < lo || p >= hi {
			t.Fatalf("FreePort = %d, want in [%d, %d)", p, lo, hi)
		}
		if seen[p] {
			t.Fatalf("FreePort handed out %d twice", p)
		}
		seen[p] = true
	}
}
