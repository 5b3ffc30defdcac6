package tlslayer

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// BenchmarkMutualTLSHandshake measures mutual-TLS handshakes, full (the
// client keeps no session cache) and, in the /resumed case, TLS 1.3
// resumptions, over loopback TCP, server side
// through Handshake with CRL checking on, client certificates from openssl.
// It reports handshakes/s; client and server share the machine's cores.
func BenchmarkMutualTLSHandshake(b *testing.B) {
	p := testpeer.NewPKI(b, "bench-ca")
	edgeCert, edgeKey := p.Issue(b, "edge", testpeer.CertOptions{CN: "localhost", DNS: []string{"localhost"}, Server: true})
	revoked, _ := p.Issue(b, "revoked", testpeer.CertOptions{})
	p.Revoke(b, revoked)
	crl := p.CRL(b)
	ecCert, ecKey := p.Issue(b, "client-ecdsa", testpeer.CertOptions{})
	rsaCert, rsaKey := p.Issue(b, "client-rsa", testpeer.CertOptions{RSA: true})
	for _, bc := range []struct {
		name   string
		rsa    bool
		ver    uint16
		resume bool
	}{
		{"client=ECDSA-P256/TLS1.3", false, tls.VersionTLS13, false},
		{"client=ECDSA-P256/TLS1.3/resumed", false, tls.VersionTLS13, true},
		{"client=RSA-2048/TLS1.3", true, tls.VersionTLS13, false},
		{"client=ECDSA-P256/TLS1.2", false, tls.VersionTLS12, false},
		{"client=RSA-2048/TLS1.2", true, tls.VersionTLS12, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cert, key := ecCert, ecKey
			if bc.rsa {
				cert, key = rsaCert, rsaKey
			}
			l, err := New(context.Background(), Config{ClientCAFiles: []string{p.CACert}, CRLFiles: []string{crl},
				CertFile: edgeCert, KeyFile: edgeKey, PollInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			errs := make(chan error, 1)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
						defer cancel()
						tc := tls.Server(c, l.ServerConfig())
						if _, err := l.Handshake(ctx, tc); err != nil {
							select {
							case errs <- err:
							default:
							}
							return
						}
						_, _ = tc.Write([]byte{1}) // lets the client know the server accepted
					}()
				}
			}()
			ccfg := &tls.Config{RootCAs: pool(b, p.CACert), ServerName: "localhost", MinVersion: bc.ver, MaxVersion: bc.ver,
				Certificates: []tls.Certificate{keyPair(b, cert, key)}}
			if bc.resume {
				// After the first, every handshake resumes (and is still
				// checked against the CRL in VerifyConnection).
				ccfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			}
			addr := ln.Addr().String()
			resumed := 0
			buf := make([]byte, 1)
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				c, err := tls.Dial("tcp", addr, ccfg)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Read(buf); err != nil {
					select {
					case e := <-errs:
						b.Fatalf("server: %v", e)
					default:
					}
					b.Fatal(err)
				}
				if c.ConnectionState().DidResume {
					resumed++
				}
				c.Close()
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "handshakes/s")
			b.ReportMetric(float64(resumed)/float64(b.N), "resumed/op")
		})
	}
}
