package loadclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
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

// A handshake-only run completes TLS handshakes and nothing else, resumes
// when asked (the tickets are read before the close) and needs TLS.
func TestHandshakeOnly(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	var done atomic.Int64
	srv := &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert}
	addr := testpeer.ListenServe(t, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if tls.Server(c, srv).Handshake() == nil {
			done.Add(1)
		}
	})
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	cli := &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, ServerName: "localhost"}
	target := Target{Addr: addr, TLS: cli, Timeout: 5 * time.Second}
	for _, resume := range []bool{false, true} {
		before := done.Load()
		res := Rate(context.Background(), RateConfig{Target: target, Workers: 2, Duration: 200 * time.Millisecond, Resume: resume, HandshakeOnly: true})
		if res.Associations == 0 || res.Errors != 0 {
			t.Fatalf("resume %v: %+v", resume, res)
		}
		// The server finishes each handshake the client counted (and one
		// more for the TLS version Rate reports).
		deadline := time.Now().Add(5 * time.Second)
		for done.Load()-before < res.Associations && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got := done.Load() - before; got < res.Associations {
			t.Fatalf("resume %v: the client counted %d handshakes, the server completed %d", resume, res.Associations, got)
		}
		if resumed := res.Resumed > 0; resumed != resume {
			t.Fatalf("resume %v: %d of %d resumed", resume, res.Resumed, res.Associations)
		}
	}
	plain := Rate(context.Background(), RateConfig{Target: Target{Addr: addr}, Workers: 1, Duration: 50 * time.Millisecond, HandshakeOnly: true})
	if plain.Associations != 0 || plain.Errors == 0 {
		t.Fatalf("a handshake-only run without TLS: %+v", plain)
	}
}
