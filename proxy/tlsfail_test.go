package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/audit"
)

// A flood of failed handshakes from one source writes at most
// tlsFailBurst (+ refill) tls.failed records; the rest are counted in one
// summary record, so the trail keeps every failure accounted for without
// an attacker controlling its size.
func TestTLSFailedFloodSummarised(t *testing.T) {
	e := startEdge(t, edgeOptions{})
	const attempts = 3 * tlsFailBurst
	start := time.Now()
	for range attempts {
		c, err := net.DialTimeout("tcp", e.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		// Not TLS: the handshake fails at the first record.
		_, _ = c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Read(make([]byte, 64))
		c.Close()
	}
	// Bounded wait until all attempts are metered (the edge has handled them).
	deadline := time.Now().Add(10 * time.Second)
	for tlsFailuresTotal(t, e) < attempts {
		if time.Now().After(deadline) {
			t.Fatalf("%v handshake failures metered after 10s, want %d", tlsFailuresTotal(t, e), attempts)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Server.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	var single, suppressed, summaries int
	deadline = time.Now().Add(20 * time.Second)
	for {
		single, suppressed, summaries = 0, 0, 0
		for _, ev := range e.events(t) {
			if ev.Event != audit.EventTLSFailed {
				continue
			}
			if ev.Reason != TLSFailSuppressedReason {
				single++
				continue
			}
			summaries++
			var n int
			if _, err := fmt.Sscanf(ev.Detail, "suppressed %d ", &n); err != nil {
				t.Fatalf("summary detail %q: %v", ev.Detail, err)
			}
			suppressed += n
			if ev.Remote != "127.0.0.1" || !strings.Contains(ev.Detail, "by reason: ") {
				t.Errorf("summary remote %q detail %q", ev.Remote, ev.Detail)
			}
		}
		if single+suppressed == attempts || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A slow machine stretches the flood: each tlsFailEvery it took refills
	// one token and may close one summary early.
	intervals := int(time.Since(start) / tlsFailEvery)
	if single > tlsFailBurst+intervals+1 {
		t.Errorf("%d individual tls.failed records for %d failures from one source in %d refill intervals, want at most %d",
			single, attempts, intervals, tlsFailBurst+intervals+1)
	}
	if summaries < 1 || summaries > 1+intervals || single+suppressed != attempts {
		t.Errorf("%d individual + %d suppressed in %d summaries, want %d in one summary (up to %d)", single, suppressed, summaries, attempts, 1+intervals)
	}
}

// tlsFailuresTotal sums dicomedge_tls_handshake_failures_total over reasons.
func tlsFailuresTotal(t *testing.T, e *testEdge) float64 {
	t.Helper()
	mfs, err := e.Server.Metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, mf := range mfs {
		if mf.GetName() == "dicomedge_tls_handshake_failures_total" {
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

// The limiter keeps sources apart, summarises per source and bounds the
// number of sources it tracks.
func TestTLSFailLimiter(t *testing.T) {
	var mu sync.Mutex
	var got []audit.Event
	l := newTLSFailLimiter(func(e audit.Event) { mu.Lock(); got = append(got, e); mu.Unlock() })
	a := netip.MustParseAddr("203.0.113.7")
	b := netip.MustParseAddr("2001:db8::1")
	b2 := netip.MustParseAddr("2001:db8::2") // same /64 as b
	allowed := map[string]int{}
	for range 2 * tlsFailBurst {
		for name, ip := range map[string]netip.Addr{"a": a, "b": b, "b2": b2} {
			if l.allow(ip, "bad-certificate") {
				allowed[name]++
			}
		}
	}
	if allowed["a"] != tlsFailBurst || allowed["b"]+allowed["b2"] != tlsFailBurst {
		t.Errorf("allowed %v, want %d for a and %d for b's /64", allowed, tlsFailBurst, tlsFailBurst)
	}
	l.flush()
	want := map[string]string{"203.0.113.7": "suppressed 10 ", "2001:db8::/64": "suppressed 30 "}
	if len(got) != len(want) {
		t.Fatalf("%d summaries, want %d: %+v", len(got), len(want), got)
	}
	for _, e := range got {
		if w, ok := want[e.Remote]; !ok || !strings.HasPrefix(e.Detail, w) || e.Reason != TLSFailSuppressedReason {
			t.Errorf("summary %q %q %q, want remote in %v", e.Remote, e.Reason, e.Detail, want)
		}
	}
	// A flush with nothing held back writes nothing.
	got = nil
	l.flush()
	if len(got) != 0 {
		t.Errorf("empty flush wrote %+v", got)
	}
	// Many sources: the map stays bounded, the excess shares one bucket.
	for i := range tlsFailMaxSources + 100 {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.allow(ip, "eof")
	}
	if n := len(l.sources); n > tlsFailMaxSources {
		t.Errorf("%d sources tracked, want at most %d", n, tlsFailMaxSources)
	}
	if l.timer != nil {
		l.timer.Stop()
	}
}
