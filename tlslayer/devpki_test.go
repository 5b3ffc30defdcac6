package tlslayer

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

func TestInitDevPKI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	created, err := InitDevPKI(dir, []string{"edge.example.org", "10.0.0.7"}, []string{"client", "ct1"})
	if err != nil {
		t.Fatal(err)
	}
	want := DevPKIFiles([]string{"client", "ct1"})
	if len(created) != len(want) {
		t.Fatalf("created %v, want %v", created, want)
	}
	for _, name := range want {
		p := filepath.Join(dir, name)
		if !slices.Contains(created, p) {
			t.Errorf("%s not reported as created", p)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(name, "-key.pem") && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", name, fi.Mode().Perm())
		}
	}

	// openssl, not our own code, checks the chain and the purposes.
	testpeer.Require(t, "openssl")
	ctx := testpeer.Context(t, 30*time.Second)
	for _, c := range [][]string{
		{"verify", "-CAfile", filepath.Join(dir, "ca.pem"), "-purpose", "sslserver", filepath.Join(dir, "edge.pem")},
		{"verify", "-CAfile", filepath.Join(dir, "ca.pem"), "-purpose", "sslclient", filepath.Join(dir, "ct1.pem")},
	} {
		if out, err := testpeer.Run(ctx, "openssl", c...); err != nil || !strings.Contains(out, "OK") {
			t.Fatalf("openssl %v: %v\n%s", c, err, out)
		}
	}
	edge := parsePEMCert(t, filepath.Join(dir, "edge.pem"))
	for _, h := range []string{"edge.example.org", "localhost"} {
		if err := edge.VerifyHostname(h); err != nil {
			t.Errorf("edge certificate: %v", err)
		}
	}
	for _, ip := range []string{"10.0.0.7", "127.0.0.1", "::1"} {
		if !slices.ContainsFunc(edge.IPAddresses, func(x net.IP) bool { return x.Equal(net.ParseIP(ip)) }) {
			t.Errorf("edge certificate lacks IP %s: %v", ip, edge.IPAddresses)
		}
	}

	// The result runs a layer that accepts its client.
	l := newLayerT(t, Config{ClientCAFiles: []string{filepath.Join(dir, "ca.pem")}, CertFile: filepath.Join(dir, "edge.pem"),
		KeyFile: filepath.Join(dir, "edge-key.pem"), PollInterval: -1})
	srv := startServer(t, l, 2*time.Second)
	c, err := dial(srv.addr, &tls.Config{RootCAs: pool(t, filepath.Join(dir, "ca.pem")), ServerName: "edge.example.org",
		Certificates: []tls.Certificate{keyPair(t, filepath.Join(dir, "ct1.pem"), filepath.Join(dir, "ct1-key.pem"))}})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if r := srv.next(t); r.err != nil || r.id.CN != "ct1" {
		t.Fatalf("dev client: %+v", r)
	}

	// Never overwrite: a second run creates nothing and changes nothing.
	before := map[string][]byte{}
	for _, name := range want {
		before[name], _ = os.ReadFile(filepath.Join(dir, name))
	}
	again, err := InitDevPKI(dir, []string{"other.example.org"}, []string{"client", "ct1"})
	if err != nil || len(again) != 0 {
		t.Fatalf("second run created %v (err %v)", again, err)
	}
	for _, name := range want {
		if b, _ := os.ReadFile(filepath.Join(dir, name)); string(b) != string(before[name]) {
			t.Errorf("%s changed", name)
		}
	}

	// A new client is signed by the existing CA.
	more, err := InitDevPKI(dir, nil, []string{"mr2"})
	if err != nil || len(more) != 2 {
		t.Fatalf("new client: %v, %v", more, err)
	}
	mr2 := parsePEMCert(t, filepath.Join(dir, "mr2.pem"))
	if _, err := mr2.Verify(x509.VerifyOptions{Roots: pool(t, filepath.Join(dir, "ca.pem")), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("new client does not chain to the existing CA: %v", err)
	}
}

func TestInitDevPKIRefuses(t *testing.T) {
	cases := []struct {
		name    string
		prepare func(dir string)
		clients []string
		errHas  string
	}{
		{"half a pair", func(dir string) { _ = os.WriteFile(filepath.Join(dir, "edge.pem"), []byte("x"), 0o644) }, nil, "edge-key.pem"},
		{"CA key missing", func(dir string) { _ = os.WriteFile(filepath.Join(dir, "ca.pem"), []byte("x"), 0o644) }, nil, "ca-key.pem"},
		{"path in client name", func(string) {}, []string{"../evil"}, "client name"},
		{"client named like the CA", func(string) {}, []string{"ca"}, "client name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.prepare(dir)
			_, err := InitDevPKI(dir, nil, tc.clients)
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("err = %v, want mention of %q", err, tc.errHas)
			}
		})
	}
}
