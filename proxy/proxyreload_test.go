package proxy

import (
	"os"
	"testing"

	"github.com/dicomedge/dicomedge/audit"
)

// A reload that changes edge.proxy_protocol takes effect for
// new connections, in both directions, without a restart.
func TestReloadAppliesProxyProtocol(t *testing.T) {
	e := startEdge(t, edgeOptions{Rules: proxyRules, ARTIM: shortARTIM})
	reload := func(pp string) {
		t.Helper()
		if err := os.WriteFile(e.file, []byte(e.opts.source(e.pki, "", pp)), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Server.ReloadFile(e.file); err != nil {
			t.Fatalf("reload: %v", err)
		}
	}

	// Before: no balancer is trusted, so a PROXY header is not honoured.
	if _, err := e.dialWithProxyHeader(t, "203.0.113.7:40000", true); err == nil {
		t.Fatal("a PROXY header was honoured before proxy_protocol was configured")
	}

	reload(`proxy_protocol = ["127.0.0.1/32"]`)
	c, err := e.dialWithProxyHeader(t, "203.0.113.7:40000", true)
	if err != nil {
		t.Fatalf("handshake through a PROXY header after the reload trusted 127.0.0.1: %v", err)
	}
	associate(t, c, echoRQ("CLIN", "CLINICEDGE"), "the source_cidr rule should match the PROXY source")
	ev := e.waitEvent(t, "accepted via PROXY", func(ev audit.Event) bool { return ev.Event == audit.EventAccepted })
	if ev.Remote != "203.0.113.7:40000" {
		t.Errorf("audit remote %q, want the PROXY header's 203.0.113.7:40000", ev.Remote)
	}
	if _, err := e.dialWithProxyHeader(t, "", false); err == nil {
		t.Errorf("a trusted balancer without a PROXY header was served after the reload")
	}

	// And back: with proxy_protocol empty again, plain TLS is served.
	reload("")
	if _, err := e.dialWithProxyHeader(t, "", false); err != nil {
		t.Errorf("plain TLS after proxy_protocol was removed: %v", err)
	}
}
