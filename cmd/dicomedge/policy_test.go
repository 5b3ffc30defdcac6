package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// policyRun runs the CLI in-process and returns its exit status and output.
func policyRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

var diagLine = regexp.MustCompile(`(?m)^(\S+):(\d+):(\d+): (error|warning): `)

func TestPolicyCheck(t *testing.T) {
	code, out, errOut := policyRun(t, "policy", "check", "--config", "../../policy.hcl")
	if code != 0 || !strings.Contains(out, "../../policy.hcl: valid: 4 rules, 1 backend") {
		t.Errorf("check policy.hcl: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}

	broken := "../../policy/testdata/broken.hcl"
	code, out, errOut = policyRun(t, "policy", "check", "--config", broken)
	if code != 2 {
		t.Errorf("check broken.hcl: exit %d, want 2", code)
	}
	golden, err := os.ReadFile("../../policy/testdata/broken.golden")
	if err != nil {
		t.Fatal(err)
	}
	got := diagLine.FindAllStringSubmatch(out, -1)
	want := diagLine.FindAllStringSubmatch(string(golden), -1)
	if len(got) != len(want) || len(got) < 8 {
		t.Fatalf("printed %d diagnostics, the golden file has %d:\n%s", len(got), len(want), out)
	}
	for i := range got {
		if got[i][1] != broken || got[i][2] != want[i][2] || got[i][3] != want[i][3] {
			t.Errorf("diagnostic %d at %s:%s:%s, want %s:%s:%s", i, got[i][1], got[i][2], got[i][3], broken, want[i][2], want[i][3])
		}
	}
	if !strings.Contains(errOut, "errors") {
		t.Errorf("stderr does not summarise: %q", errOut)
	}

	code, _, errOut = policyRun(t, "policy", "check", "--config", filepath.Join(t.TempDir(), "missing.hcl"))
	if code != 2 || !strings.Contains(errOut, "missing.hcl") {
		t.Errorf("missing file: exit %d, stderr %q", code, errOut)
	}
}

// TestPolicyExplainCert describes the client by certificates an independent
// openssl CA issued, as an administrator would when asking why a modality
// is refused.
func TestPolicyExplainCert(t *testing.T) {
	testpeer.Require(t, "openssl")
	pki := testpeer.NewPKI(t, "explain-ca")
	modality, _ := pki.Issue(t, "modality", testpeer.CertOptions{CN: "ct1.clinic-a.example.org", URIs: []string{"spiffe://example.org/clinic-a/ct1"}})
	pinned, _ := pki.Issue(t, "pinned", testpeer.CertOptions{CN: "ct1.clinic-a.example.org"})
	twoCN, _ := pki.Issue(t, "two-cn", testpeer.CertOptions{Subject: "/CN=viewer/CN=client"})
	signing, _ := pki.Issue(t, "signing", testpeer.CertOptions{CN: "client", ExtUsage: "codeSigning"})
	rogueCA := testpeer.NewPKI(t, "rogue-ca")
	rogue, _ := rogueCA.Issue(t, "rogue", testpeer.CertOptions{CN: "client"})

	// openssl prints "sha256 Fingerprint=AB:CD:..."; the policy takes that form.
	fpOut, err := exec.Command("openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", pinned).Output()
	if err != nil {
		t.Fatal(err)
	}
	_, fp, ok := strings.Cut(strings.TrimSpace(string(fpOut)), "=")
	if !ok {
		t.Fatalf("openssl fingerprint output %q", fpOut)
	}

	dir := t.TempDir()
	config := filepath.Join(dir, "policy.hcl")
	src := fmt.Sprintf(`tls {
  client_ca = [%q]
  cert_file = "edge.pem"
  key_file  = "edge-key.pem"
}
backend "pacs" {
  address  = "127.0.0.1:11112"
  ae_title = "MAINPACS"
}
rule "pinned" {
  when { client_fingerprint = ["sha256:%s"] }
  answer {}
}
rule "echo" {
  when {
    client_cn = ["client"]
    called_ae = ["DICOMEDGE"]
  }
  answer {}
}
rule "clinic-a" {
  when {
    client_cn   = ["*.clinic-a.example.org"]
    client_uri  = ["spiffe://example.org/clinic-a/*"]
    source_cidr = ["203.0.113.0/24"]
    calling_ae  = ["CLINA_*"]
  }
  relay {
    backend  = "pacs"
    services = ["C-STORE"]
  }
}
rule "busy" {
  when { called_ae = ["LATER"] }
  reject {
    reason    = "called-ae-not-recognized"
    transient = true
  }
}
rule "deny" {
  reject { reason = "calling-ae-not-recognized" }
}
`, pki.CACert, fp)
	if err := os.WriteFile(config, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name  string
		args  []string
		lines []string // each must appear, the first as the first line
		not   []string
	}{
		{
			name: "modality certificate is relayed by clinic-a",
			args: []string{"--cert", modality, "--calling-ae", "CLINA_CT1", "--called-ae", "MAINPACS", "--source-ip", "203.0.113.5"},
			lines: []string{
				"relay pacs",
				`rule: "clinic-a" at ` + config + ":21:1",
				`rule "clinic-a": matches (client_cn "ct1.clinic-a.example.org", client_uri ["spiffe://example.org/clinic-a/ct1"], source_cidr 203.0.113.5, calling_ae "CLINA_CT1")`,
				"backend pacs (127.0.0.1:11112, AE MAINPACS); services: C-STORE; sop_classes: all; move_destinations: none",
				config + `:14:1: rule "echo": client_cn "ct1.clinic-a.example.org" does not match ["client"]`,
			},
			not: []string{"note:"},
		},
		{
			name: "wrong calling AE falls through to deny, saying why",
			args: []string{"--cert", modality, "--calling-ae", "CT9", "--called-ae", "MAINPACS", "--source-ip", "203.0.113.5"},
			lines: []string{
				"reject calling-ae-not-recognized",
				"A-ASSOCIATE-RJ: result 1 (permanent), source 1, reason 3",
				`rule: "deny" at ` + config + ":40:1",
				`rule "clinic-a": calling_ae "CT9" does not match ["CLINA_*"]`,
			},
		},
		{
			name: "transient reject is result 2",
			args: []string{"--cn", "someone", "--calling-ae", "A", "--called-ae", "LATER"},
			lines: []string{
				"reject called-ae-not-recognized",
				"A-ASSOCIATE-RJ: result 2 (transient), source 1, reason 7",
				`rule: "busy" at ` + config + ":33:1",
			},
		},
		{
			name:  "fingerprint from openssl pins the certificate",
			args:  []string{"--cert", pinned, "--calling-ae", "X", "--called-ae", "Y"},
			lines: []string{"answer", `rule: "pinned" at ` + config + ":10:1"},
		},
		{
			name: "certificate from another CA is flagged",
			args: []string{"--cert", rogue, "--calling-ae", "A", "--called-ae", "DICOMEDGE"},
			lines: []string{"answer", `rule: "echo"`,
				"note: this certificate does not verify against tls.client_ca"},
		},
		{
			name: "a certificate with two CNs is flagged as the handshake refuses it",
			args: []string{"--cert", twoCN, "--calling-ae", "A", "--called-ae", "DICOMEDGE"},
			lines: []string{"answer", `rule: "echo"`,
				"note: the TLS handshake would refuse this certificate before any rule is tried", "CN attributes"},
		},
		{
			name:  "a certificate not for TLS clients is flagged",
			args:  []string{"--cert", signing, "--calling-ae", "A", "--called-ae", "DICOMEDGE"},
			lines: []string{"answer", `rule: "echo"`, "note: "},
		},
		{
			name:  "identity from flags",
			args:  []string{"--cn", "client", "--calling-ae", "A", "--called-ae", "DICOMEDGE"},
			lines: []string{"answer", `rule: "echo"`},
			not:   []string{"note:"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := policyRun(t, append([]string{"policy", "explain", "--config", config}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			lines := strings.Split(out, "\n")
			if lines[0] != tc.lines[0] {
				t.Errorf("first line %q, want %q", lines[0], tc.lines[0])
			}
			for _, want := range tc.lines[1:] {
				found := false
				for _, l := range lines {
					found = found || strings.Contains(l, want)
				}
				if !found {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			for _, bad := range tc.not {
				if strings.Contains(out, bad) {
					t.Errorf("output has %q:\n%s", bad, out)
				}
			}
		})
	}
}

func TestPolicyExplainErrors(t *testing.T) {
	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"invalid config", []string{"--config", "../../policy/testdata/broken.hcl", "--calling-ae", "A", "--called-ae", "B"}, 2, "broken.hcl:4:20: error: Invalid AE title"},
		{"missing called AE", []string{"--config", "../../policy.hcl", "--calling-ae", "A"}, 1, `"called-ae" not set`},
		{"cert and cn together", []string{"--config", "../../policy.hcl", "--calling-ae", "A", "--called-ae", "B", "--cert", "x.pem", "--cn", "c"}, 1, "cert"},
		{"unreadable cert", []string{"--config", "../../policy.hcl", "--calling-ae", "A", "--called-ae", "B", "--cert", "/nonexistent.pem"}, 1, "--cert"},
		{"bad source IP", []string{"--config", "../../policy.hcl", "--calling-ae", "A", "--called-ae", "B", "--source-ip", "10.0.0"}, 1, "--source-ip"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := policyRun(t, append([]string{"policy", "explain"}, tc.args...)...)
			if code != tc.code || !strings.Contains(errOut, tc.msg) {
				t.Errorf("exit %d (want %d)\nstdout:\n%s\nstderr (want %q):\n%s", code, tc.code, out, tc.msg, errOut)
			}
		})
	}
}

// policy explain --listener: the request arrives on the named listener; on
// a plain one only rules naming it apply, and a source outside allow_cidr is
// noted. policy check prints the way-out warnings with their positions.
func TestPolicyExplainListener(t *testing.T) {
	config := "../../policy/testdata/wayout.hcl"
	cases := []struct {
		name  string
		args  []string
		lines []string
	}{
		{"default is the edge listener", []string{"--calling-ae", "MAINPACS", "--called-ae", "CLINA_WS1", "--source-ip", "10.0.0.5"},
			[]string{"reject calling-ae-not-recognized", `request: listener "edge"`, `rule "pacs-to-clinic-a": listener "edge" does not match ["inside"]`}},
		{"inside: the PACS sends out", []string{"--listener", "inside", "--calling-ae", "MAINPACS", "--called-ae", "CLINA_WS1", "--source-ip", "10.0.0.5"},
			[]string{"relay clinic-a-ws1", `request: listener "inside"`, `rule: "pacs-to-clinic-a"`}},
		{"inside: a catch-all does not apply", []string{"--listener", "inside", "--cn", "x.clinic-a.example.org", "--calling-ae", "CLINA_CT1", "--called-ae", "MAINPACS", "--source-ip", "10.0.0.7"},
			[]string{"reject calling-ae-not-recognized", "rule: none matched",
				`rule "clinic-a": has no when.listener, so it applies to TLS listeners only; "inside" is a plain listener`,
				`rule "deny": has no when.listener`}},
		{"inside: a source outside allow_cidr is noted", []string{"--listener", "inside", "--calling-ae", "MAINPACS", "--called-ae", "CLINA_WS1", "--source-ip", "192.0.2.9"},
			[]string{"reject calling-ae-not-recognized", `note: source 192.0.2.9 is not in listener "inside"'s allow_cidr`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := policyRun(t, append([]string{"policy", "explain", "--config", config}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			if first, _, _ := strings.Cut(out, "\n"); first != tc.lines[0] {
				t.Errorf("first line %q, want %q", first, tc.lines[0])
			}
			for _, want := range tc.lines[1:] {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
	code, out, errOut := policyRun(t, "policy", "explain", "--config", config, "--listener", "outside", "--calling-ae", "A", "--called-ae", "B")
	if code != 2 || !strings.Contains(errOut, `--listener "outside": no such listener`) || !strings.Contains(errOut, "edge, inside, partners") {
		t.Errorf("unknown listener: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}

	code, out, errOut = policyRun(t, "policy", "check", "--config", "../../policy/testdata/listeners-broken.hcl")
	for _, want := range []string{
		"listeners-broken.hcl:11:10: warning: Listener no rule names",
		"listeners-broken.hcl:70:26: warning: Move destination not routed out",
		"listeners-broken.hcl:11:1: error: Missing allow_cidr",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check lacks %q (exit %d):\n%s\n%s", want, code, out, errOut)
		}
	}
	if code != 2 {
		t.Errorf("check listeners-broken.hcl: exit %d, want 2", code)
	}
}
