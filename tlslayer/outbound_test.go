package tlslayer

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// OutboundConfig presents the edge's own certificate (Layer.Certificate)
// when no client certificate files are given, a file pair when they are,
// and verifies the server against the CA files under the given name.
func TestOutboundConfigPresentsTheEdgeCertificate(t *testing.T) {
	f := newFixture(t, false)
	l := newLayerT(t, f.config())
	other, otherKey := f.pki.Issue(t, "syslog-client", testpeer.CertOptions{CN: "syslog-client"})
	srvCert := keyPair(t, f.edgeCert, f.edgeKey)
	otherCert := keyPair(t, other, otherKey)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{srvCert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool(t, f.pki.CACert)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peers := make(chan *x509.Certificate, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
			if tc.Handshake() == nil {
				peers <- tc.ConnectionState().PeerCertificates[0]
			} else {
				peers <- nil
			}
			tc.Close()
		}
	}()
	for _, tc := range []struct {
		name string
		o    Outbound
		want []byte // the client certificate the server sees
	}{
		{"edge's own", Outbound{CAFiles: []string{f.pki.CACert}, Address: "localhost:6514", Certificate: l.Certificate}, srvCert.Certificate[0]},
		{"its own files", Outbound{CAFiles: []string{f.pki.CACert}, ServerName: "localhost", CertFile: other, KeyFile: otherKey}, otherCert.Certificate[0]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := OutboundConfig(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.ServerName != "localhost" || cfg.MinVersion != tls.VersionTLS12 {
				t.Fatalf("server name %q, min version %x", cfg.ServerName, cfg.MinVersion)
			}
			c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			if got := <-peers; got == nil || !bytes.Equal(got.Raw, tc.want) {
				t.Fatalf("the server saw %v; want the expected client certificate", got)
			}
		})
	}
	if _, err := OutboundConfig(Outbound{CertFile: other}); err == nil {
		t.Fatal("cert_file without key_file accepted")
	}
	if _, err := LoadCertPool([]string{f.edgeKey}); err == nil {
		t.Fatal("a key file accepted as a CA")
	}
}
