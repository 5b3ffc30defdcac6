package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
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

// TestServeACMEDNS01: `dicomedge serve` with a tls.acme.dns.rfc2136 block
// and nothing on port 443 gets its wildcard certificate from Pebble by
// DNS-01 through a real BIND9 (the policy names tsig-keygen's file), and
// serves it on the DICOM listener: DCMTK echoscu, trusting only Pebble's
// root, is answered, and openssl s_client asking for a.edge.test verifies
// the wildcard against that name.
func TestServeACMEDNS01(t *testing.T) {
	testpeer.Require(t, "echoscu", "openssl")
	bin := buildBinary(t)
	b := testpeer.StartBIND(t, "edge.test.")
	peb := testpeer.StartPebble(t, testpeer.PebbleOptions{DNSServer: b.Addr})
	dir := t.TempDir()
	clients := testpeer.NewPKI(t, "clinic-ca")
	cert, key := clients.Issue(t, "ct1", testpeer.CertOptions{CN: "ct1.clinic-a.example.org"})
	listen, admin := testpeer.FreeAddr(t), testpeer.FreeAddr(t)
	cfgFile := filepath.Join(dir, "policy.hcl")
	src := fmt.Sprintf(`edge {
  listen        = %q
  admin_listen  = %q
  artim_timeout = "20s"
  drain_timeout = "1s"
}
tls {
  client_ca = [%q]
  acme {
    domains   = ["*.edge.test"]
    email     = "pacs-admins@example.org"
    directory = %q
    ca_roots  = [%q]
    storage   = "acme"
    dns {
      rfc2136 {
        server          = %q
        key_name        = "dicomedge-acme."
        key_alg         = "hmac-sha256"
        key_secret_file = %q
        zone            = "edge.test."
      }
    }
  }
}
audit {
  file  = "audit/audit.jsonl"
  fsync = "50ms"
}
rule "echo" {
  when { called_ae = ["DICOMEDGE"] }
  answer {}
}
`, listen, admin, clients.CACert, peb.Directory, peb.HTTPSCA, b.Addr, b.KeyFile)
	if err := os.WriteFile(cfgFile, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := policyRun(t, "policy", "check", "--config", cfgFile); code != 0 {
		t.Fatalf("policy check: exit %d\n%s\n%s", code, out, errOut)
	}

	// A key BIND does not know: serve says why it has no certificate and
	// exits 1, without printing either secret.
	const wrong = "d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3I="
	wrongKey := filepath.Join(dir, "wrong.key")
	if err := os.WriteFile(wrongKey, []byte(wrong+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrongCfg := filepath.Join(dir, "wrong.hcl")
	if err := os.WriteFile(wrongCfg, []byte(strings.Replace(src, b.KeyFile, wrongKey, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(testpeer.Context(t, 90*time.Second), bin, "serve", "--config", wrongCfg).CombinedOutput()
	if code := testpeer.ExitCode(err); code != 1 || !strings.Contains(string(out), "RFC 2136 update of zone edge.test.") ||
		strings.Contains(string(out), wrong) || strings.Contains(string(out), b.Secret) {
		t.Fatalf("serve with a TSIG key BIND refuses: exit %d (want 1, the update named, no secret)\n%s", code, out)
	}
	t.Logf("with a wrong key: %s", strings.TrimSpace(string(out)))

	p := testpeer.Start(t, bin, "serve", "--config", cfgFile, "--log-level", "debug")
	testpeer.WaitListening(t, listen, 90*time.Second, p)
	if n := strings.Count(b.Proc.Output(), "adding an RR at '_acme-challenge.edge.test' TXT"); n != 1 {
		t.Fatalf("BIND took %d challenge records, want 1\n%s", n, b.Proc.Output())
	}
	if strings.Contains(p.Output(), b.Secret) {
		t.Fatalf("serve's log shows the TSIG secret\n%s", p.Output())
	}

	root := peb.Root(t)
	args := []string{"+tls", key, cert, "+cf", root, "-aet", "CLINA_CT1", "-aec", "DICOMEDGE", testpeer.Host(listen), fmt.Sprint(testpeer.Port(listen))}
	if out, err := testpeer.Run(testpeer.Context(t, time.Minute), "echoscu", args...); err != nil {
		t.Fatalf("echoscu trusting Pebble's root: %v\n%s\nserve:\n%s", err, testpeer.Describe("echoscu", args, out), p.Output())
	}
	sargs := []string{"s_client", "-connect", listen, "-servername", "a.edge.test", "-verify_hostname", "a.edge.test",
		"-CAfile", root, "-cert", cert, "-key", key, "-verify_return_error"}
	sout, _ := testpeer.Run(testpeer.Context(t, 30*time.Second), "openssl", sargs...)
	if !strings.Contains(sout, "Verify return code: 0") || !strings.Contains(sout, "CN = *.edge.test") && !strings.Contains(sout, "CN=*.edge.test") {
		t.Fatalf("s_client did not verify *.edge.test for a.edge.test\n%s", testpeer.Describe("openssl", sargs, sout))
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop after SIGTERM")
	}
}
