package tlslayer

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// Two edges of a cluster point tls.acme.storage at one directory (README.md
// "Running a cluster"): certmagic's storage lock makes them obtain one
// certificate from the ACME CA between them, both serve it, and the renewal
// one of them makes is picked up by the other instead of a second order.
// Pebble's issuances are counted from its log. As behind a load balancer,
// TLS-ALPN-01 validation connections reach either edge once both are up
// (the one that did not order answers from the shared storage).
func TestACMESharedStorageCluster(t *testing.T) {
	testpeer.Require(t, "pebble", "openssl")
	const domain = "cluster.dicomedge.test"
	port := testpeer.FreePort(t)
	// 60 s certificates renewed when 75% is left: a renewal about 15 s
	// after each issuance, so one renewal can be watched alone.
	peb := startPebble(t, port, testpeer.FreePort(t), 60*time.Second)
	clients := testpeer.NewPKI(t, "client-ca")
	storage := filepath.Join(t.TempDir(), "shared-acme")
	cfg := func() Config {
		return Config{ClientCAFiles: []string{clients.CACert}, PollInterval: -1, ACME: &ACMEConfig{
			Domains: []string{domain}, Email: "pacs-admins@example.org", Directory: peb.dir,
			CARootFiles: []string{peb.httpsCA}, Storage: storage, TLSALPNPort: port, ListenHost: "127.0.0.1",
			RenewalWindowRatio: 0.75, RenewCheckInterval: time.Second,
		}}
	}
	// Both start at once, as a cluster does after a deploy.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	layers := make([]*Layer, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range layers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			layers[i], errs[i] = New(ctx, cfg())
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("edge %d: New with shared ACME storage: %v\npebble:\n%s", i+1, err, peb.proc.Output())
		}
		defer layers[i].Close()
	}
	if n := peb.issued(); n != 1 {
		t.Fatalf("Pebble issued %d certificates for two edges sharing storage; want 1\n%s", n, peb.proc.Output())
	}
	root := peb.root(t)
	// served returns the serial each edge presents in a real handshake.
	servers := []*testServer{startServer(t, layers[0], 5*time.Second), startServer(t, layers[1], 5*time.Second)}
	clientCert, clientKey := clients.Issue(t, "modality", testpeer.CertOptions{})
	served := func() []string {
		var out []string
		for i, s := range servers {
			c, err := dial(s.addr, &tls.Config{RootCAs: pool(t, root), ServerName: domain,
				Certificates: []tls.Certificate{keyPair(t, clientCert, clientKey)}})
			if err != nil {
				t.Fatalf("edge %d: handshake verifying with Pebble's root: %v", i+1, err)
			}
			out = append(out, c.ConnectionState().PeerCertificates[0].SerialNumber.String())
			c.Close()
			if r := s.next(t); r.err != nil {
				t.Fatal(r.err)
			}
		}
		return out
	}
	first := served()
	if first[0] != first[1] {
		t.Fatalf("the edges serve different certificates: serials %v", first)
	}

	// The balancer: TLS-ALPN-01 connections on the port go to the edges in
	// turn.
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var turn atomic.Int32
	answered := [2]atomic.Int32{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			i := int(turn.Add(1)) % 2
			go func() {
				defer c.Close()
				tc := tls.Server(c, layers[i].ServerConfig())
				hctx, hcancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer hcancel()
				if _, err := layers[i].Handshake(hctx, tc); errors.Is(err, ErrACMEChallenge) {
					answered[i].Add(1)
				}
			}()
		}
	}()

	// Renewal: one new order, and both edges serve its certificate.
	deadline := time.Now().Add(60 * time.Second)
	var now []string
	for {
		if time.Now().After(deadline) {
			t.Fatalf("no renewal served by both edges within 60s (serials %v, first %s, issued %d)\n%s", now, first[0], peb.issued(), peb.proc.Output())
		}
		time.Sleep(200 * time.Millisecond)
		a, errA := layers[0].Certificate()
		b, errB := layers[1].Certificate()
		if errA != nil || errB != nil || a.Leaf == nil || b.Leaf == nil {
			continue
		}
		if sa, sb := a.Leaf.SerialNumber.String(), b.Leaf.SerialNumber.String(); sa != first[0] && sa == sb {
			break
		}
	}
	now = served()
	issued := peb.issued()
	t.Logf("Pebble issuances: %d; serials served: first %s, after renewal %v; challenge connections answered by edge 1: %d, edge 2: %d",
		issued, first[0], now, answered[0].Load(), answered[1].Load())
	if now[0] != now[1] || now[0] == first[0] {
		t.Fatalf("after the renewal the edges serve %v (first %s); want one new certificate on both", now, first[0])
	}
	if issued != 2 {
		t.Fatalf("Pebble issued %d certificates by the first renewal; want 2 (one order, one renewal)\n%s", issued, peb.proc.Output())
	}
}
