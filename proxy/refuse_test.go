package proxy

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/policy"
)

// refusedTotal is dicomedge_connections_refused_total{reason}.
func refusedTotal(t *testing.T, e *testEdge, reason string) float64 {
	t.Helper()
	mfs, err := e.Server.Metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "dicomedge_connections_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no dicomedge_connections_refused_total{reason=%q}", reason)
	return 0
}

// waitClosed reads from c until the edge closes it (bounded).
func waitClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Read(make([]byte, 64)); err == nil || isTimeout(err) {
		t.Fatalf("%s: read %v, want the connection closed by the edge", what, err)
	}
}

// A connection over its source's share of the pre-association budget is
// closed, metered and audited as connection.refused too-many-connections,
// with the source's address and the listener's name.
func TestConnectionRefusedTooMany(t *testing.T) {
	e := startEdge(t, edgeOptions{MaxAssociations: 16, ARTIM: "10s"})
	share := e.Server.current().Edge.Admission().PerSource
	for range share {
		dialFrom(t, e.Addr, "127.0.0.2")
	}
	waitHeld(t, e, share)
	c := dialFrom(t, e.Addr, "127.0.0.2")
	waitClosed(t, c, "a connection over the source's share")
	ev := e.waitEvent(t, "connection.refused", func(ev audit.Event) bool { return ev.Event == audit.EventConnectionRefused })
	if ev.Reason != RefusedTooManyConnections || ev.Listener != EdgeListener || !strings.HasPrefix(ev.Remote, "127.0.0.2:") {
		t.Errorf("record %+v, want reason %s, listener %s, remote 127.0.0.2:*", ev, RefusedTooManyConnections, EdgeListener)
	}
	if got := refusedTotal(t, e, RefusedTooManyConnections); got != 1 {
		t.Errorf("dicomedge_connections_refused_total{reason=too-many-connections} = %v, want 1", got)
	}
}

// waitHeld waits (bounded) until n connections hold a source's
// pre-association slot.
func waitHeld(t *testing.T, e *testEdge, n int) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		e.Server.preMu.Lock()
		held := 0
		for _, v := range e.Server.preSource {
			held += v
		}
		e.Server.preMu.Unlock()
		if held == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections hold a source's slot after 20s, want %d", held, n)
		}
	}
}

// A trusted load balancer's connection that sends no PROXY header within
// proxyHeaderTimeout, and a PROXY header from an address that may not send
// one, are refused as proxy-header; a balancer's TCP check (closed at
// once) is not recorded.
func TestConnectionRefusedProxyHeader(t *testing.T) {
	e := startEdge(t, edgeOptions{ProxyProtocol: []string{"127.0.0.1/32"}, ARTIM: "20s"})
	probe := dialFrom(t, e.Addr, "127.0.0.1")
	probe.Close()

	start := time.Now()
	c := dialFrom(t, e.Addr, "127.0.0.1")
	waitClosed(t, c, "no PROXY header from a trusted balancer")
	if d := time.Since(start); d > 12*time.Second { // proxyHeaderTimeout, loosely: ARTIM is 20s
		t.Errorf("closed after %v, want after about %v", d, policy.ProxyHeaderTimeout)
	}

	u := dialFrom(t, e.Addr, "127.0.0.9") // not a balancer
	h := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 4000}, u.RemoteAddr())
	if _, err := h.WriteTo(u); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, u, "a PROXY header from an untrusted address")

	var got []audit.Event
	for deadline := time.Now().Add(10 * time.Second); len(got) < 2 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		got = got[:0]
		for _, ev := range e.events(t) {
			if ev.Event == audit.EventConnectionRefused {
				got = append(got, ev)
			}
		}
	}
	if len(got) != 2 {
		t.Fatalf("%d connection.refused records, want 2 (the TCP check is not one): %+v", len(got), got)
	}
	for _, ev := range got {
		if ev.Reason != RefusedProxyHeader {
			t.Errorf("record %+v, want reason %s", ev, RefusedProxyHeader)
		}
	}
	// Both connections are closed before their records are written, so
	// the records may come in either order.
	if !strings.HasPrefix(got[0].Remote, "127.0.0.9:") && !strings.HasPrefix(got[1].Remote, "127.0.0.9:") {
		t.Errorf("no record names the untrusted TCP peer 127.0.0.9: %+v", got)
	}
	if n := refusedTotal(t, e, RefusedProxyHeader); n != 2 {
		t.Errorf("dicomedge_connections_refused_total{reason=proxy-header} = %v, want 2", n)
	}
	for _, ev := range e.events(t) {
		if ev.Event == audit.EventTLSFailed {
			t.Errorf("a refused connection was also audited as tls.failed: %+v", ev)
		}
	}
}

// A flood of refused connections from one source writes at most the
// limiter's burst of records; the rest are counted and summarised at
// shutdown, and every one is metered.
func TestConnectionRefusedFloodSummarised(t *testing.T) {
	e := startEdge(t, edgeOptions{ProxyProtocol: []string{"127.0.0.1/32"}, ARTIM: "10s"})
	const attempts = 2 * tlsFailBurst
	h := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 4000},
		&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 2762})
	for range attempts {
		c := dialFrom(t, e.Addr, "127.0.0.8")
		if _, err := h.WriteTo(c); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, c, "untrusted PROXY header")
		c.Close()
	}
	for deadline := time.Now().Add(20 * time.Second); refusedTotal(t, e, RefusedProxyHeader) < attempts; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%v refusals metered, want %d", refusedTotal(t, e, RefusedProxyHeader), attempts)
		}
	}
	e.Server.refused.flush()
	var single, summaries int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		single, summaries = 0, 0
		for _, ev := range e.events(t) {
			switch {
			case ev.Event != audit.EventConnectionRefused:
			case ev.Reason == TLSFailSuppressedReason:
				summaries++
			default:
				single++
			}
		}
		if summaries > 0 || time.Now().After(deadline) {
			break
		}
	}
	if single > tlsFailBurst+2 || single < tlsFailBurst || summaries != 1 {
		t.Errorf("%d single records and %d summaries, want about %d and 1", single, summaries, tlsFailBurst)
	}
}

// A malformed PROXY header from an address not in proxy_protocol is a
// PROXY header all the same: refused as proxy-header on a TLS and on a
// plain listener, not audited (and metered) as a failed TLS handshake
// with a reason such as protocol-version that blames the client's TLS.
func TestConnectionRefusedMalformedProxyHeader(t *testing.T) {
	e := startEdge(t, edgeOptions{ProxyProtocol: []string{"10.0.0.0/8"}, ARTIM: shortARTIM, Rules: insideRules,
		Listeners: `
listener "inside" {
  listen         = "127.0.0.1:0"
  tls            = false
  allow_cidr     = ["127.0.0.1/32"]
  proxy_protocol = ["10.0.0.0/8"]
}
`})
	headers := []string{
		"PROXY FOO\r\n",                          // v1, unknown protocol
		"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n",   // v1 without CR
		"\r\n\r\n\x00\r\nQUIT\n\x99\x11\x00\x0c", // v2, unknown version and command
	}
	for _, addr := range []string{e.Addr, e.listenerAddr(t, "inside")} {
		for _, h := range headers {
			c := dialFrom(t, addr, "127.0.0.1")
			if _, err := c.Write([]byte(h)); err != nil {
				t.Fatal(err)
			}
			waitClosed(t, c, fmt.Sprintf("malformed PROXY header %q", h))
		}
	}
	want := 2 * len(headers)
	var refused []audit.Event
	for deadline := time.Now().Add(10 * time.Second); len(refused) < want && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		refused = refused[:0]
		for _, ev := range e.events(t) {
			if ev.Event == audit.EventConnectionRefused && ev.Reason == RefusedProxyHeader {
				refused = append(refused, ev)
			}
		}
	}
	if len(refused) != want {
		t.Errorf("%d connection.refused proxy-header records, want %d", len(refused), want)
	}
	for _, ev := range e.events(t) {
		if ev.Event == audit.EventTLSFailed {
			t.Errorf("a malformed PROXY header was audited as tls.failed: %+v", ev)
		}
	}
}
