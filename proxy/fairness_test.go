package proxy

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/internal/testpeer"
	"github.com/dicomedge/dicomedge/policy"
)

// waitPreActive waits (bounded) until n connections hold a pre-association
// slot.
func waitPreActive(t *testing.T, e *testEdge, n int64) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); e.Server.preActive.Load() != n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d pre-association connections after 20s, want %d", e.Server.preActive.Load(), n)
		}
	}
}

// associatesFrom: a client from loopback address src completes its TLS
// handshake and gets an A-ASSOCIATE-AC.
func associatesFrom(t *testing.T, e *testEdge, src, what string) {
	t.Helper()
	c := tls.Client(dialFrom(t, e.Addr, src), e.clientTLS(t, e.pki.clientCert, e.pki.clientKey))
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		t.Fatalf("%s: TLS handshake: %v", what, err)
	}
	associate(t, c, echoRQ("GOCLIENT", "DICOMEDGE"), what)
}

// Behind a load balancer, connections from the balancer's address that
// send no PROXY header (never a byte) must not take the slots of clients
// that complete their handshake: max_associations 16, 16 such connections,
// then a client through the balancer and one from elsewhere are served.
func TestFairnessIdleBehindProxy(t *testing.T) {
	e := startEdge(t, edgeOptions{MaxAssociations: 16, ProxyProtocol: []string{"127.0.0.1/32"}, ARTIM: "30s"})
	for range 16 {
		dialFrom(t, e.Addr, "127.0.0.1")
	}
	waitPreActive(t, e, 16)

	raw := dialFrom(t, e.Addr, "127.0.0.1")
	h := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("198.51.100.7"), Port: 40000}, raw.RemoteAddr())
	if _, err := h.WriteTo(raw); err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, e.clientTLS(t, e.pki.clientCert, e.pki.clientKey))
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		t.Fatalf("a client through the balancer: TLS handshake: %v", err)
	}
	associate(t, c, echoRQ("GOCLIENT", "DICOMEDGE"), "a client through the balancer")
	associatesFrom(t, e, "127.0.0.2", "a client not behind the balancer")
}

// Without PROXY, a few addresses each at their share must not fill the
// pre-association budget: 4 × 4 idle TCP connections from 127.0.0.2-5 with
// max_associations 16, then a client from 127.0.0.1 is served.
func TestFairnessFourSources(t *testing.T) {
	e := startEdge(t, edgeOptions{MaxAssociations: 16, ARTIM: "30s"})
	for _, src := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		for range 4 {
			dialFrom(t, e.Addr, src)
		}
	}
	waitPreActive(t, e, 16)
	associatesFrom(t, e, "127.0.0.1", "a fifth source")
}

// One certificate may hold max_associations_per_client associations, not
// all of them: identity A holding max_associations idle associations gets
// A-ASSOCIATE-RJ 2/3/2 beyond its share (audited), and identity B is served.
func TestFairnessPerClient(t *testing.T) {
	p := sharedPKI(t)
	bCert, bKey := p.issuer.Issue(t, "client-b", testpeer.CertOptions{CN: "client-b"})
	e := startEdge(t, edgeOptions{MaxAssociations: 16, Rules: `
rule "b" {
  when {
    client_cn = ["client-b"]
    called_ae = ["DICOMEDGE"]
  }
  answer {}
}
`})
	accepted, rejected := 0, 0
	for range 16 {
		c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
		if err := association.WritePDU(c, echoRQ("CLIENTA", "DICOMEDGE")); err != nil {
			t.Fatal(err)
		}
		pdu, err := readPDU(t, c, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		switch v := pdu.(type) {
		case *association.AssociateAC:
			accepted++
		case *association.AssociateRJ:
			if v.Result != association.RejectTransient || v.Source != association.RejectSourceServiceProviderPresentation ||
				v.Reason != association.RejectPresentationLocalLimitExceeded {
				t.Fatalf("identity A rejected with %d/%d/%d, want 2/3/2", v.Result, v.Source, v.Reason)
			}
			rejected++
			c.Close() // as a requestor does after an A-ASSOCIATE-RJ
		default:
			t.Fatalf("identity A got %T", pdu)
		}
	}
	if want := max(16/4, 4); accepted != want {
		t.Errorf("identity A holds %d associations, want max_associations_per_client %d (%d rejected)", accepted, want, rejected)
	}
	b := e.goClient(t, bCert, bKey)
	associate(t, b, echoRQ("CLIENTB", "DICOMEDGE"), "identity B while A holds its share")
	ev := e.waitEvent(t, "A's rejection", func(ev audit.Event) bool {
		return ev.Event == audit.EventRejected && ev.Client != nil && ev.Client.CN == "client"
	})
	if ev.Result != 2 || ev.Source != 3 || ev.ReasonCode != 2 || ev.Detail == "" {
		t.Errorf("rejection record %+v, want 2/3/2 with a detail naming the limit", ev)
	}
}

// A TLS handshake that stalls (slowloris: a record header, then nothing)
// is ended by its own bound, policy.HandshakeTimeout, well before ARTIM,
// and audited as a tls.failed timeout.
func TestFairnessHandshakeBound(t *testing.T) {
	e := startEdge(t, edgeOptions{ARTIM: "120s"})
	c := dialFrom(t, e.Addr, "127.0.0.1")
	if _, err := c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00}); err != nil { // a ClientHello record header
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(60 * time.Second)) // half ARTIM: ending here means the handshake bound held
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read %v, want the stalled handshake closed by the edge before ARTIM", err)
	}
	ev := e.waitEvent(t, "tls.failed", func(ev audit.Event) bool { return ev.Event == audit.EventTLSFailed })
	if ev.Reason != "timeout" {
		t.Errorf("tls.failed reason %q, want timeout", ev.Reason)
	}
}

// On a plain listener a client has no certificate: its associations are
// counted by source address. One address holding its share gets
// A-ASSOCIATE-RJ 2/3/2; another address is served.
func TestFairnessPerClientPlainListener(t *testing.T) {
	inside := testpeer.FreeAddr(t)
	e := startEdge(t, edgeOptions{MaxAssociations: 16, Listeners: fmt.Sprintf(`
listener "inside" {
  listen     = %q
  tls        = false
  allow_cidr = ["127.0.0.0/8"]
}
`, inside), Rules: `
rule "inside-echo" {
  when {
    listener  = ["inside"]
    called_ae = ["DICOMEDGE"]
  }
  answer {}
}
`})
	addr := e.listenerAddr(t, "inside")
	try := func(src string) association.PDU {
		t.Helper()
		c := dialFrom(t, addr, src)
		if err := association.WritePDU(c, echoRQ("PACS", "DICOMEDGE")); err != nil {
			t.Fatal(err)
		}
		p, err := readPDU(t, c, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := p.(*association.AssociateRJ); ok {
			c.Close()
		}
		return p
	}
	perClient := e.Server.current().Edge.PerClient()
	for i := range perClient {
		if p := try("127.0.0.5"); func() bool { _, ok := p.(*association.AssociateAC); return !ok }() {
			t.Fatalf("association %d from 127.0.0.5: got %T, want AC", i+1, p)
		}
	}
	rj, ok := try("127.0.0.5").(*association.AssociateRJ)
	if !ok || rj.Result != association.RejectTransient || rj.Source != association.RejectSourceServiceProviderPresentation ||
		rj.Reason != association.RejectPresentationLocalLimitExceeded {
		t.Fatalf("over its share 127.0.0.5 got %+v, want A-ASSOCIATE-RJ 2/3/2", rj)
	}
	if _, ok := try("127.0.0.6").(*association.AssociateAC); !ok {
		t.Fatal("another address was not served")
	}
	ev := e.waitEvent(t, "rejected", func(ev audit.Event) bool { return ev.Event == audit.EventRejected })
	if !strings.Contains(ev.Detail, "addr:127.0.0.5") || ev.Listener != "inside" {
		t.Errorf("rejection %+v, want the detail naming addr:127.0.0.5 on listener inside", ev)
	}
}

// An IPv6 source is one /64: addresses of one /64 share one pre-association
// share, another /64 has its own.
func TestSourceKeyGroupsIPv6By64(t *testing.T) {
	a, b, c := netip.MustParseAddr("2001:db8:1:2::10"), netip.MustParseAddr("2001:db8:1:2:ffff::1"), netip.MustParseAddr("2001:db8:1:3::10")
	if sourceKey(a) != sourceKey(b) || sourceKey(a) == sourceKey(c) {
		t.Fatalf("keys %v %v %v: want the first two equal (one /64), the third apart", sourceKey(a), sourceKey(b), sourceKey(c))
	}
	if k := sourceKey(netip.MustParseAddr("::ffff:192.0.2.7")); k != netip.MustParsePrefix("192.0.2.7/32") {
		t.Errorf("IPv4-mapped source keyed %v, want 192.0.2.7/32", k)
	}
	s := &Server{}
	adm := (&policy.Edge{MaxAssociations: 16}).Admission()
	for i := range adm.PerSource {
		if !s.acquirePreSource(sourceKey(a), adm) {
			t.Fatalf("slot %d of the /64 refused", i+1)
		}
	}
	if s.acquirePreSource(sourceKey(b), adm) {
		t.Error("another address of the same /64 got a slot beyond the /64's share")
	}
	if !s.acquirePreSource(sourceKey(c), adm) {
		t.Error("another /64 was refused")
	}
}

// Behind a real load balancer (HAProxy, PROXY v2): 16 idle connections
// from one client address, max_associations 16, hold only that address's
// share; a client from another address, through the same balancer, is
// served, and the refusals name the idle client's address.
func TestFairnessBehindHAProxy(t *testing.T) {
	e := startEdge(t, edgeOptions{MaxAssociations: 16, ProxyProtocol: []string{"127.0.0.1/32"}, ARTIM: "30s"})
	_, fronts := testpeer.StartHAProxy(t, testpeer.HAProxyRoute{Server: e.Addr, SendProxyV2: true})
	lb := fronts[0]
	for range 16 {
		dialFrom(t, lb, "127.0.0.7")
	}
	share := e.Server.current().Edge.Admission().PerSource
	e.waitEvent(t, "refusals of the idle address", func(ev audit.Event) bool {
		return ev.Event == audit.EventConnectionRefused && strings.HasPrefix(ev.Remote, "127.0.0.7:")
	})
	for deadline := time.Now().Add(20 * time.Second); refusedTotal(t, e, RefusedTooManyConnections) < float64(16-share); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%v refused, want %d (16 less the share %d)", refusedTotal(t, e, RefusedTooManyConnections), 16-share, share)
		}
	}
	c := tls.Client(dialFrom(t, lb, "127.0.0.1"), e.clientTLS(t, e.pki.clientCert, e.pki.clientKey))
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		t.Fatalf("a client through the balancer: TLS handshake: %v", err)
	}
	associate(t, c, echoRQ("GOCLIENT", "DICOMEDGE"), "a client through the balancer while another address idles")
	ev := e.waitEvent(t, "accepted", func(ev audit.Event) bool { return ev.Event == audit.EventAccepted })
	if !strings.HasPrefix(ev.Remote, "127.0.0.1:") {
		t.Errorf("accepted record's remote %q, want the client's address from the PROXY header", ev.Remote)
	}
}
