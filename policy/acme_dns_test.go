package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The secret of a key made by tsig-keygen -a hmac-sha256 (32 random bytes);
// made up for these tests, it guards nothing.
const (
	testTSIGSecret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I="
	testKeyClause  = `key "dicomedge-acme" {
	algorithm hmac-sha256;
	secret "` + testTSIGSecret + `";
};
`
)

// writeKeyFiles puts the key files the cases name beside the policy file.
func writeKeyFiles(t *testing.T, dir string) {
	t.Helper()
	for name, body := range map[string]string{
		"tsig.key":    testKeyClause,
		"bare.key":    testTSIGSecret + "\n",
		"sha512.key":  strings.Replace(testKeyClause, "hmac-sha256", "hmac-sha512", 1),
		"md5.key":     strings.Replace(testKeyClause, "hmac-sha256", "hmac-md5", 1),
		"short.key":   "c2hvcnQ=\n",
		"garbage.key": "this is { not a key",
		"other.key":   strings.Replace(testKeyClause, "dicomedge-acme", "someone-else", 1),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func acmeDNSPolicy(domains, dns string) string {
	return `tls {
  client_ca = ["ca.pem"]
  acme {
    domains = ` + domains + `
` + dns + `
  }
}
`
}

const goodRFC2136 = `    dns {
      rfc2136 {
        server          = "10.0.0.53:53"
        key_name        = "dicomedge-acme."
        key_alg         = "hmac-sha256"
        key_secret_file = "tsig.key"
        zone            = "Example.org"
      }
    }`

// TestACMEDNSValidation: every bad value of tls.acme.dns is reported on its
// own line and column, and a wildcard without a dns block is refused on the
// domain's element.
func TestACMEDNSValidation(t *testing.T) {
	dir := t.TempDir()
	writeKeyFiles(t, dir)
	file := filepath.Join(dir, "policy.hcl")
	rfc := func(body string) string { return "    dns {\n      rfc2136 {\n" + body + "\n      }\n    }" }
	const rest = `        key_name        = "dicomedge-acme."
        key_secret_file = "tsig.key"
        zone            = "example.org."`
	cases := []struct {
		name    string
		domains string
		dns     string
		want    []string
	}{
		{"wildcard without dns", `["edge.example.org", "*.example.org"]`, "", []string{"4:36 error: Wildcard needs DNS-01"}},
		{"wildcard with dns", `["*.example.org", "example.org"]`, goodRFC2136, nil},
		{"dns without provider", `["a.example.org"]`, "    dns {}", []string{"5:5 error: Missing DNS provider"}},
		{"all missing", `["a.example.org"]`, "    dns {\n      rfc2136 {}\n    }", []string{
			"6:7 error: Missing server", "6:7 error: Missing key_name", "6:7 error: Missing key_secret_file", "6:7 error: Missing zone"}},
		{"bad server", `["a.example.org"]`, rfc(`        server = "10.0.0.53:99999"` + "\n" + rest), []string{"7:18 error: Invalid address"}},
		{"server without port is port 53", `["a.example.org"]`, rfc(`        server = "ns1.example.org"` + "\n" + rest), nil},
		{"bad key name", `["a.example.org"]`, rfc(`        server = "10.0.0.53:53"
        key_name = "not a name"
        key_secret_file = "bare.key"
        zone = "example.org."`), []string{"8:20 error: Invalid key name"}},
		{"md5 refused", `["a.example.org"]`, rfc(`        server = "10.0.0.53:53"
        key_alg = "hmac-md5"` + "\n" + rest), []string{"8:19 error: Weak TSIG algorithm"}},
		{"unknown algorithm", `["a.example.org"]`, rfc(`        server = "10.0.0.53:53"
        key_alg = "hmac-sha265"` + "\n" + rest), []string{"8:19 error: Unknown TSIG algorithm"}},
		{"algorithm differs from the key file", `["a.example.org"]`, rfc(`        server = "10.0.0.53:53"
        key_alg = "hmac-sha256"
        key_name = "dicomedge-acme."
        key_secret_file = "sha512.key"
        zone = "example.org."`), []string{"8:19 error: TSIG algorithm differs"}},
		{"md5 key file refused", `["a.example.org"]`, rfc(`        server = "10.0.0.53:53"
        key_name = "dicomedge-acme."
        key_secret_file = "md5.key"
        zone = "example.org."`), []string{"9:27 error: Weak TSIG algorithm"}},
		{"key name differs from the key file", `["a.example.org"]`, rfc(`        server = "10.0.0.53:53"
        key_name = "dicomedge-acme."
        key_secret_file = "other.key"
        zone = "example.org."`), []string{"9:27 error: TSIG key name differs"}},
		{"missing key file", `["a.example.org"]`, rfc(`        server = "10.0.0.53:53"
        key_name = "dicomedge-acme."
        key_secret_file = "nowhere.key"
        zone = "example.org."`), []string{"9:27 error: Unusable TSIG key file"}},
		{"short secret", `["a.example.org"]`, rfc(`        server = "10.0.0.53:53"
        key_name = "dicomedge-acme."
        key_secret_file = "short.key"
        zone = "example.org."`), []string{"9:27 error: Unusable TSIG key file"}},
		{"not a key file", `["a.example.org"]`, rfc(`        server = "10.0.0.53:53"
        key_name = "dicomedge-acme."
        key_secret_file = "garbage.key"
        zone = "example.org."`), []string{"9:27 error: Unusable TSIG key file"}},
		{"bad zone", `["a.example.org"]`, rfc(`        server = "10.0.0.53:53"
        key_name = "dicomedge-acme."
        key_secret_file = "tsig.key"
        zone = "example..org"`), []string{"10:16 error: Invalid zone"}},
		{"domain outside the zone", `["a.example.org", "*.example.net"]`, goodRFC2136, []string{"4:33 error: Domain outside the zone"}},
		{"http_port with dns", `["a.example.org"]`, "    http_port = 80\n" + goodRFC2136, []string{"5:17 error: http_port with dns"}},
		{"duplicate dns and provider", `["a.example.org"]`, goodRFC2136 + "\n    dns {\n      rfc2136 {}\n      rfc2136 {}\n    }", []string{
			"14:5 error: Duplicate dns block"}},
		{"unknown attribute", `["a.example.org"]`, rfc(`        server = "10.0.0.53:53"
        key_secret = "c2VjcmV0"` + "\n" + rest), []string{"8:9 error: Unsupported argument"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, diags := Load(file, []byte(acmeDNSPolicy(c.domains, c.dns)))
			if got := diagKeys(diags); !slices.Equal(got, c.want) {
				t.Errorf("got %q\nwant %q\n%s", got, c.want, acmeDNSPolicy(c.domains, c.dns))
			}
			for _, d := range diags {
				if strings.Contains(d.Detail, testTSIGSecret) || strings.Contains(d.Detail, "c2hvcnQ") {
					t.Errorf("a diagnostic shows the secret: %s", d.Detail)
				}
			}
		})
	}
}

// TestACMEDNSDecoded: the block is compiled to fully qualified lower-case
// names, the secret read from the key file, and the secret never printed.
func TestACMEDNSDecoded(t *testing.T) {
	dir := t.TempDir()
	writeKeyFiles(t, dir)
	for _, c := range []struct{ file, alg, wantAlg string }{
		{"tsig.key", `key_alg = "HMAC-SHA256."`, "hmac-sha256"},
		{"sha512.key", "", "hmac-sha512"}, // from the key statement
		{"bare.key", "", DefaultTSIGAlgorithm},
	} {
		src := acmeDNSPolicy(`["*.Edge.Example.org"]`, `    dns {
      rfc2136 {
        server = "ns1.example.org"
        key_name = "DICOMEDGE-ACME"
        `+c.alg+`
        key_secret_file = "`+c.file+`"
        zone = "example.org"
      }
    }`)
		cfg, diags := Load(filepath.Join(dir, "policy.hcl"), []byte(src))
		if diags.HasErrors() {
			t.Fatalf("%s: %v", c.file, diags)
		}
		r := cfg.TLS.ACME.DNS.RFC2136
		want := RFC2136{Server: "ns1.example.org:53", KeyName: "dicomedge-acme.", KeyAlg: c.wantAlg,
			KeySecretFile: filepath.Join(dir, c.file), KeySecret: testTSIGSecret, Zone: "example.org."}
		if *r != want {
			t.Errorf("%s: decoded %#v\nwant %#v", c.file, *r, want)
		}
		if got := cfg.TLS.ACME.Domains; !slices.Equal(got, []string{"*.edge.example.org"}) {
			t.Errorf("domains %q", got)
		}
		for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
			if s := sprintf(format, *r); strings.Contains(s, testTSIGSecret) {
				t.Errorf("%s of the rfc2136 block shows the secret: %s", format, s)
			}
		}
	}
}

// TestTSIGKeyFileWorldReadable: a key file every user can read is warned
// about, on the key_secret_file line; the policy stays valid.
func TestTSIGKeyFileWorldReadable(t *testing.T) {
	dir := t.TempDir()
	writeKeyFiles(t, dir)
	if err := os.Chmod(filepath.Join(dir, "tsig.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, diags := Load(filepath.Join(dir, "policy.hcl"), []byte(acmeDNSPolicy(`["a.example.org"]`, goodRFC2136)))
	if got, want := diagKeys(diags), []string{"10:27 warning: TSIG key readable by everyone"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestParseTSIGKey(t *testing.T) {
	for _, c := range []struct {
		name, in       string
		key            TSIGKey
		wantErrContain string
	}{
		{"tsig-keygen", testKeyClause, TSIGKey{Name: "dicomedge-acme.", Algorithm: "hmac-sha256", Secret: testTSIGSecret}, ""},
		{"bare", "  " + testTSIGSecret + "\r\n", TSIGKey{Secret: testTSIGSecret}, ""},
		{"quoted algorithm, fqdn name", `key "k.example." { algorithm "HMAC-SHA512."; secret "` + testTSIGSecret + `"; };`,
			TSIGKey{Name: "k.example.", Algorithm: "hmac-sha512", Secret: testTSIGSecret}, ""},
		{"two keys", testKeyClause + testKeyClause, TSIGKey{}, "2 key statements"},
		{"no secret", `key "k" { algorithm hmac-sha256; };`, TSIGKey{}, "no secret"},
		{"not base64", "not*base64*at*all", TSIGKey{}, "not base64"},
		{"short", "c2hvcnQ=", TSIGKey{}, "at least 16"},
		{"empty", "\n", TSIGKey{}, "no secret"},
		{"two lines", testTSIGSecret + "\n" + testTSIGSecret, TSIGKey{}, "neither"},
	} {
		k, err := ParseTSIGKey([]byte(c.in))
		if c.wantErrContain != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErrContain) {
				t.Errorf("%s: error %v, want one saying %q", c.name, err, c.wantErrContain)
			}
			if err != nil && strings.Contains(err.Error(), testTSIGSecret) {
				t.Errorf("%s: the error shows the secret", c.name)
			}
			continue
		}
		if err != nil || k != c.key {
			t.Errorf("%s: got %+v %v, want %+v", c.name, k, err, c.key)
		}
	}
}

// FuzzParseTSIGKey: any file content gives a key or an error, never a panic,
// and an error never carries the content (which may be a secret).
func FuzzParseTSIGKey(f *testing.F) {
	f.Add([]byte(testKeyClause))
	f.Add([]byte(testTSIGSecret))
	f.Add([]byte(`key "a" { secret "x"; }; key "b" {};`))
	f.Add([]byte(`key { algorithm ; secret ""; };`))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseTSIGKey(b)
		if err != nil {
			if len(b) >= 8 && strings.Contains(err.Error(), string(b)) {
				t.Fatalf("error carries the input: %v", err)
			}
			return
		}
		if k.Secret == "" {
			t.Fatal("no error and no secret")
		}
		if k.Name != "" {
			if _, ok := fqdn(k.Name); !ok {
				t.Fatalf("name %q", k.Name)
			}
		}
	})
}

func sprintf(format string, a ...any) string { return fmt.Sprintf(format, a...) }
