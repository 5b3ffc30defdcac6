package proxy

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// dialWithProxyHeader connects from loopback, sends a PROXY v2 header
// claiming src, then speaks TLS.
func (e *testEdge) dialWithProxyHeader(t *testing.T, src string, header bool) (*tls.Conn, error) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", e.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	if header {
		srcAddr, _ := net.ResolveTCPAddr("tcp", src)
		h := proxyproto.HeaderProxyFromAddrs(2, srcAddr, raw.RemoteAddr())
		if _, err := h.WriteTo(raw); err != nil {
			t.Fatal(err)
		}
	}
	c := tls.Client(raw, e.clientTLS(t, e.pki.clientCert, e.pki.clientKey))
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	return c, c.Handshake()
}

const proxyRules = `
rule "via-lb-clinic" {
  when {
    client_cn   = ["client"]
    source_cidr = ["203.0.113.0/24"]
    called_ae   = ["CLINICEDGE"]
  }
  answer {}
}
`

// From a trusted load balancer the PROXY header's source stands for the
// client in policy and audit; without a header, or from an untrusted
// address, the connection is refused.
func TestProxyProtocolTrustedSource(t *testing.T) {
	e := startEdge(t, edgeOptions{ProxyProtocol: []string{"127.0.0.1/32"}, Rules: proxyRules, ARTIM: shortARTIM})
	c, err := e.dialWithProxyHeader(t, "203.0.113.7:40000", true)
	if err != nil {
		t.Fatalf("handshake through a PROXY header: %v", err)
	}
	associate(t, c, echoRQ("CLIN", "CLINICEDGE"), "the source_cidr rule should match the PROXY source")
	ev := e.waitEvent(t, "accepted via PROXY", func(ev audit.Event) bool { return ev.Event == audit.EventAccepted })
	if ev.Remote != "203.0.113.7:40000" || ev.Rule != "via-lb-clinic" {
		t.Errorf("audit remote %q rule %q, want 203.0.113.7:40000 via-lb-clinic", ev.Remote, ev.Rule)
	}

	// A trusted balancer must send the header: a bare TLS hello is refused.
	if _, err := e.dialWithProxyHeader(t, "", false); err == nil {
		t.Errorf("handshake without a PROXY header from a trusted balancer succeeded")
	}
}

func TestProxyProtocolUntrustedSourceRefused(t *testing.T) {
	e := startEdge(t, edgeOptions{ProxyProtocol: []string{"10.0.0.0/8"}, Rules: proxyRules, ARTIM: shortARTIM})
	if _, err := e.dialWithProxyHeader(t, "203.0.113.7:40000", true); err == nil {
		t.Fatalf("a PROXY header from an untrusted address was accepted")
	}
	// Without a header the same client is served normally.
	c, err := e.dialWithProxyHeader(t, "", false)
	if err != nil {
		t.Fatalf("plain TLS from a non-balancer: %v", err)
	}
	associate(t, c, echoRQ("CLIN", "DICOMEDGE"))
}

// HAProxy in front of the edge with send-proxy-v2: echoscu +tls through it.
func TestBehindHAProxy(t *testing.T) {
	testpeer.Require(t, "echoscu")
	hap := "haproxy"
	if _, err := os.Stat("/usr/sbin/haproxy"); err == nil {
		hap = "/usr/sbin/haproxy"
	}
	testpeer.Require(t, hap)
	e := startEdge(t, edgeOptions{ProxyProtocol: []string{"127.0.0.1/32"}})
	front := testpeer.FreeAddr(t)
	conf := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`global
  maxconn 64
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend dicom
  bind %s
  default_backend edges
backend edges
  server edge1 %s send-proxy-v2
`, front, e.Addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := testpeer.Start(t, hap, "-db", "-f", conf)
	testpeer.WaitListening(t, front, testpeer.StartupTimeout, p)
	ctx := testpeer.Context(t, time.Minute)
	args := append(e.tlsArgs(e.pki.clientCert, e.pki.clientKey), "-aet", "MODALITY1", "-aec", "DICOMEDGE",
		testpeer.Host(front), fmt.Sprint(testpeer.Port(front)))
	if out, err := testpeer.Run(ctx, "echoscu", args...); err != nil {
		t.Fatalf("echoscu through HAProxy: %v\n%s", err, out)
	}
	e.waitEvent(t, "accepted through HAProxy", func(ev audit.Event) bool { return ev.Event == audit.EventAccepted && ev.Rule == "echo" })
}

// A trusted balancer's PROXY header whose source is not an IP address (v2
// AF_UNIX) names no client: it must be refused, not served as a client
// with no address (no remote in its records, every such client sharing
// one pre-association share and one audit limiter bucket).
func TestProxyHeaderNonIPSourceRefused(t *testing.T) {
	e := startEdge(t, edgeOptions{ProxyProtocol: []string{"127.0.0.1/32"}, ARTIM: shortARTIM})
	raw := dialFrom(t, e.Addr, "127.0.0.1")
	h := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.UnixStream,
		SourceAddr: &net.UnixAddr{Net: "unix", Name: "/run/client.sock"}, DestinationAddr: &net.UnixAddr{Net: "unix", Name: "/run/edge.sock"}}
	if _, err := h.WriteTo(raw); err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, e.clientTLS(t, e.pki.clientCert, e.pki.clientKey))
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.Handshake(); err == nil {
		t.Fatal("a client behind an AF_UNIX PROXY header completed its TLS handshake")
	}
	ev := e.waitEvent(t, "connection.refused", func(ev audit.Event) bool { return ev.Event == audit.EventConnectionRefused })
	if ev.Reason != RefusedProxyHeader || !strings.HasPrefix(ev.Remote, "127.0.0.1:") {
		t.Errorf("record %+v, want reason %s naming the balancer 127.0.0.1", ev, RefusedProxyHeader)
	}
}

// A balancer on a link-local IPv6 address reaches the edge with the
// interface's zone on its address ("fe80::1%eth0"); proxy_protocol lists
// networks, which never contain a zoned address, so the zone is dropped
// (as allow_cidr and source_cidr do) or the balancer is never trusted.
func TestProxyPolicyLinkLocalBalancer(t *testing.T) {
	lbs := []netip.Prefix{netip.MustParsePrefix("fe80::/64")}
	up := &net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 40000, Zone: "eth0"}
	if p, _ := proxyPolicy(lbs, proxyproto.ConnPolicyOptions{Upstream: up}); p != proxyproto.REQUIRE {
		t.Errorf("policy for %v with proxy_protocol %v: %v, want REQUIRE", up, lbs, p)
	}
	other := &net.TCPAddr{IP: net.ParseIP("fe80:0:0:1::1"), Port: 40000, Zone: "eth0"}
	if p, _ := proxyPolicy(lbs, proxyproto.ConnPolicyOptions{Upstream: other}); p != proxyproto.REJECT {
		t.Errorf("policy for %v with proxy_protocol %v: %v, want REJECT", other, lbs, p)
	}
}
