package proxy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/tlslayer"
)

// TestTLSConfigACMEDNS: tls.acme.dns.rfc2136 reaches the TLS layer as its
// DNS-01 settings, the secret read from the key file, and printing the
// result does not show the secret.
func TestTLSConfigACMEDNS(t *testing.T) {
	dir := t.TempDir()
	const secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I="
	if err := os.WriteFile(filepath.Join(dir, "tsig.key"), []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, diags := policy.Load(filepath.Join(dir, "policy.hcl"), []byte(`tls {
  client_ca = ["ca.pem"]
  acme {
    domains = ["*.edge.example.org"]
    dns {
      rfc2136 {
        server          = "10.0.0.53"
        key_name        = "dicomedge-acme"
        key_alg         = "hmac-sha512"
        key_secret_file = "tsig.key"
        zone            = "example.org"
      }
    }
  }
}
`))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	tc := TLSConfig(cfg, nil)
	want := tlslayer.DNSConfig{Server: "10.0.0.53:53", KeyName: "dicomedge-acme.", KeyAlg: "hmac-sha512", KeySecret: secret, Zone: "example.org."}
	if tc.ACME == nil || tc.ACME.DNS == nil || fmt.Sprint(*tc.ACME.DNS) != fmt.Sprint(want) || tc.ACME.DNS.KeySecret != secret {
		t.Fatalf("ACME %+v", tc.ACME)
	}
	for _, s := range []string{fmt.Sprintf("%v", tc), fmt.Sprintf("%+v", *tc.ACME), fmt.Sprintf("%#v", *tc.ACME.DNS)} {
		if strings.Contains(s, secret) {
			t.Errorf("printed config shows the TSIG secret: %s", s)
		}
	}
}
