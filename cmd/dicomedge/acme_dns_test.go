package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPolicyCheckWildcardNeedsDNS: `policy check` refuses a "*." ACME domain
// without tls.acme.dns, pointing at the domain itself, and accepts the same
// domain once an rfc2136 block (with a readable TSIG key) is there. The key's
// secret appears in neither output.
func TestPolicyCheckWildcardNeedsDNS(t *testing.T) {
	dir := t.TempDir()
	const secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I="
	key := `key "dicomedge-acme" {
	algorithm hmac-sha256;
	secret "` + secret + `";
};
`
	if err := os.WriteFile(filepath.Join(dir, "tsig.key"), []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	policy := func(dns string) string {
		return `tls {
  client_ca = ["ca.pem"]
  acme {
    domains = ["edge.example.org", "*.edge.example.org"]
` + dns + `  }
}
`
	}
	write := func(name, src string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	bad := write("wildcard.hcl", policy(""))
	code, out, errOut := policyRun(t, "policy", "check", "--config", bad)
	if want := bad + ":4:36: error: Wildcard needs DNS-01"; code != 2 || !strings.Contains(out, want) {
		t.Fatalf("exit %d, want 2 and %q\nstdout:\n%s\nstderr:\n%s", code, want, out, errOut)
	}

	good := write("dns01.hcl", policy(`    dns {
      rfc2136 {
        server          = "127.0.0.1:53"
        key_name        = "dicomedge-acme."
        key_alg         = "hmac-sha256"
        key_secret_file = "tsig.key"
        zone            = "example.org."
      }
    }
`))
	code, out, errOut = policyRun(t, "policy", "check", "--config", good)
	if code != 0 || strings.Contains(out+errOut, secret) {
		t.Fatalf("exit %d, want 0 without the secret\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
}
