package proxy

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/internal/testpeer"
	"github.com/dicomedge/dicomedge/policy"
)

// A burst of short associations out through the edge to a real TLS SCP
// (storescp +tls --require-peer-cert) costs one full handshake: the others
// resume the session kept for that backend. A reload that leaves the
// backend's TLS as it was keeps the sessions; one that changes it (another
// client certificate) starts with a full handshake again.
func TestBackendSessionsResumed(t *testing.T) {
	testpeer.Require(t, "storescp")
	p := sharedPKI(t)
	scp := testpeer.StartStoreSCP(t, "CLINA_WS1", "--ignore", "+tls", p.edgeKey, p.edgeCert, "+cf", p.ca, "--require-peer-cert")
	inside := testpeer.FreeAddr(t)
	l, b, r := wayOutPolicy(inside, scp.Addr, p)
	e := startEdge(t, edgeOptions{Listeners: l, Backends: b, Rules: r})
	addr := e.listenerAddr(t, "inside")
	handshakes := func() (full, resumed int) {
		m := e.Server.Metrics.BackendHandshakes
		return int(testutil.ToFloat64(m.WithLabelValues("ws1", "false"))), int(testutil.ToFloat64(m.WithLabelValues("ws1", "true")))
	}
	echo := func() {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		associate(t, c, echoRQ("MODALITY1", "CLINA_WS1"))
		if err := association.WritePDU(c, &association.ReleaseRQ{}); err != nil {
			t.Fatal(err)
		}
		if pdu, err := readPDU(t, c, 10*time.Second); err != nil {
			t.Fatalf("release: %v", err)
		} else if _, ok := pdu.(*association.ReleaseRP); !ok {
			t.Fatalf("release answered with %T", pdu)
		}
	}
	want := func(step string, full, resumed int) {
		t.Helper()
		if f, r := handshakes(); f != full || r != resumed {
			t.Fatalf("%s: %d full and %d resumed handshakes with the backend, want %d and %d\nstorescp:\n%s", step, f, r, full, resumed, scp.Output())
		}
	}
	for range 5 {
		echo()
	}
	want("a burst of 5", 1, 4)

	reload := func(edit func(string) string) {
		t.Helper()
		src, err := os.ReadFile(e.file)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(filepath.Dir(e.file), "reloaded.hcl")
		if err := os.WriteFile(f, []byte(edit(string(src))), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, diags := policy.LoadFile(f)
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		if err := e.Server.Reload(cfg); err != nil {
			t.Fatal(err)
		}
	}
	reload(func(s string) string { return s })
	echo()
	want("after a reload that changed nothing", 1, 5)

	otherCert, otherKey := p.issuer.Issue(t, "edge-out-2", testpeer.CertOptions{CN: "edge-out-2"})
	reload(func(s string) string {
		return strings.NewReplacer(p.clientCert, otherCert, p.clientKey, otherKey).Replace(s)
	})
	echo()
	echo()
	want("after a reload that changed the client certificate", 2, 6)
}

// The key-exchange group a backend chose is the one later handshakes offer
// it, so they send their key share in it and need no HelloRetryRequest,
// until groupRelearn has passed.
func TestBackendGroupLearned(t *testing.T) {
	p := sharedPKI(t)
	pair, err := tls.LoadX509KeyPair(p.edgeCert, p.edgeKey)
	if err != nil {
		t.Fatal(err)
	}
	addr := handshakeOnlyBackend(t, &tls.Config{Certificates: []tls.Certificate{pair}, CurvePreferences: []tls.CurveID{tls.CurveP384},
		ClientAuth: tls.RequireAnyClientCert})
	e := startEdge(t, edgeOptions{Backends: tlsBackendBlock(p, addr), Rules: storeRules(`"C-ECHO"`)})
	cfg := e.Server.current()
	be := cfg.Backends["pacs"]
	before, err := e.Server.backendTLS.get(cfg, cfg, be)
	if err != nil {
		t.Fatal(err)
	}
	if before.CurvePreferences[0] == tls.CurveP384 {
		t.Fatalf("the profile's order already starts with P-384: %v", before.CurvePreferences)
	}
	c := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	if err := association.WritePDU(c, echoRQ("MODALITY1", "MAINPACS")); err != nil {
		t.Fatal(err)
	}
	_, _ = readPDU(t, c, 15*time.Second) // the backend never answers the RQ: whatever the edge says
	after, err := e.Server.backendTLS.get(cfg, cfg, be)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(after.CurvePreferences, []tls.CurveID{tls.CurveP384}) || after.ClientSessionCache != before.ClientSessionCache {
		t.Fatalf("after a handshake in P-384: preferences %v (were %v), same session cache %v", after.CurvePreferences, before.CurvePreferences,
			after.ClientSessionCache == before.ClientSessionCache)
	}
	// After groupRelearn the profile's groups are offered again.
	e.Server.backendTLS.mu.Lock()
	ent := e.Server.backendTLS.m[be]
	ent.relearn = time.Now().Add(-time.Second)
	e.Server.backendTLS.m[be] = ent
	e.Server.backendTLS.mu.Unlock()
	again, err := e.Server.backendTLS.get(cfg, cfg, be)
	if err != nil {
		t.Fatal(err)
	}
	if again != before {
		t.Fatalf("after groupRelearn: preferences %v, want the profile's %v", again.CurvePreferences, before.CurvePreferences)
	}
}
