package tlslayer

import (
	"crypto/tls"
	"testing"
	"time"
)

// ClientConfig (the edge towards a backend) offers only its profile's
// versions and suites: a backend that can do nothing better than a TLS 1.2
// CBC suite, or TLS 1.1, is refused; one offering what the listener would
// accept is reached.
func TestClientConfig(t *testing.T) {
	f := newFixture(t, true)
	cert := keyPair(t, f.edgeCert, f.edgeKey)
	roots := pool(t, f.pki.CACert)
	backends := []struct {
		name string
		cfg  *tls.Config
		want map[string]bool // profile → handshake succeeds
	}{
		{"TLS 1.2 ECDHE CBC only", &tls.Config{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}}, map[string]bool{}},
		{"TLS 1.2 ECDHE AES-GCM", &tls.Config{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}},
			map[string]bool{ProfileBCP195RFC8996: true, ProfileBCP195RFC8996Modified: true, ProfileBCP195ND: true,
				ProfileBCP195: true, ProfileBCP195Extended: true}},
		{"TLS 1.3", &tls.Config{MinVersion: tls.VersionTLS13},
			map[string]bool{ProfileBCP195RFC8996: true, ProfileBCP195RFC8996Modified: true, ProfileBCP195ND: true,
				ProfileBCP195: true}},
		{"TLS 1.2 P-521 only", &tls.Config{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12,
			CurvePreferences: []tls.CurveID{tls.CurveP521}},
			map[string]bool{ProfileBCP195: true}},
	}
	for _, b := range backends {
		srv := b.cfg.Clone()
		srv.Certificates = []tls.Certificate{cert}
		ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range 2 * len(Profiles()) {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 4)
				if n, err := c.Read(buf); err == nil {
					_, _ = c.Write(buf[:n])
				}
				c.Close()
			}
		}()
		for _, name := range Profiles() {
			t.Run(b.name+"/"+name, func(t *testing.T) {
				cfg, err := ClientConfig(name)
				if err != nil {
					t.Fatal(err)
				}
				cfg.RootCAs, cfg.ServerName = roots, "localhost"
				c, err := dial(ln.Addr().String(), cfg)
				if c != nil {
					c.Close()
				}
				if got := err == nil; got != b.want[name] {
					t.Errorf("handshake succeeded=%v (%v), want %v", got, err, b.want[name])
				}
			})
		}
		ln.Close()
		<-done
	}
	if _, err := ClientConfig("tls-anything"); err == nil {
		t.Error("an unknown profile gave a config")
	}
}
