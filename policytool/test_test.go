package policytool

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dicomedge/dicomedge/internal/testpeer"
	"github.com/dicomedge/dicomedge/policy"
)

func loadPolicy(t testing.TB, path string) *policy.Config {
	t.Helper()
	// The bundled policy's deidentify key, as serve --dev creates it.
	if _, err := policy.CreateDevKeys(path); err != nil {
		t.Fatal(err)
	}
	cfg, diags := policy.LoadFile(path)
	if diags.HasErrors() {
		policy.WriteDiagnostics(os.Stderr, diags, cfg.Files)
		t.Fatalf("%s: %s", path, diags.Error())
	}
	return cfg
}

func loadCases(t *testing.T, name, src string) *TestSuite {
	t.Helper()
	s, _ := LoadTestFiles()
	if diags := s.Add(name, []byte(src)); diags.HasErrors() {
		t.Fatalf("%s: %s", name, diags.Error())
	}
	return s
}

// TestRunMessages checks each expect attribute alone against v1.hcl: what
// holds passes, and what does not is named exactly.
func TestRunMessages(t *testing.T) {
	cfg := loadPolicy(t, "testdata/v1.hcl")
	clinic := `client { cn = "ct1.clinic-a.example.org" }
  source_ip  = "203.0.113.7"
  calling_ae = "CLINA_CT1"
  called_ae  = "MAINPACS"`
	echo := `calling_ae = "X"
  called_ae  = "DICOMEDGE"`
	cases := []struct {
		name, request, expect string
		want                  []string
	}{
		{"decision holds", clinic, `decision = "relay"`, nil},
		{"decision differs", clinic, `decision = "answer"`, []string{"decision relay, want answer"}},
		{"rule differs", clinic, `decision = "relay"
    rule = "research"`, []string{`rule "clinic-a", want "research"`}},
		{"no rule expected", clinic, `decision = "relay"
    rule = ""`, []string{`rule "clinic-a", want (none)`}},
		{"no rule matched", `calling_ae = "X"
  called_ae = "Y"
  client { cn = "a.clinic-a.example.org" }`, `decision = "reject"
    rule = "deny"`, nil},
		{"backend differs", clinic, `decision = "relay"
    backend = "archive"`, []string{`backend "pacs", want "archive"`}},
		{"backend of an answer", echo, `decision = "answer"
    backend = "pacs"`, []string{`no backend (decision answer), want backend "pacs"`}},
		{"reason of a relay", clinic, `decision = "relay"
    reason = "no-reason"`, []string{"no reject reason (decision relay), want reason no-reason"}},
		{"allows", clinic, `decision = "relay"
    allows = ["C-STORE", "C-GET", "N-SET"]`, []string{"C-GET denied, want allowed", "N-SET denied, want allowed"}},
		{"denies", clinic, `decision = "relay"
    denies = ["C-MOVE", "C-GET", "C-CANCEL"]`, []string{"C-MOVE allowed, want denied", "C-CANCEL allowed, want denied"}},
		{"answer allows only C-ECHO", echo, `decision = "answer"
    allows = ["C-ECHO", "C-STORE"]`, []string{"C-STORE denied, want allowed"}},
		{"move destinations", clinic, `decision = "relay"
    move_destinations_allowed = ["CLINA_WS1", "CLINA_WS2"]
    move_destinations_denied  = ["EVIL", "CLINA_WS1"]`,
			[]string{`C-MOVE to "CLINA_WS2" denied, want allowed`, `C-MOVE to "CLINA_WS1" allowed, want denied`}},
		{"a listener the policy lacks", `listener = "dmz"
  calling_ae = "MAINPACS"
  called_ae = "CLINA_WS1"`, `decision = "reject"`, []string{`listener "dmz" is not in the policy`}},
		{"the plain listener", `listener = "inside"
  source_ip = "10.0.0.5"
  calling_ae = "MAINPACS"
  called_ae = "CLINA_WS1"`, `decision = "relay"
    rule = "pacs-out"`, nil},
		{"a client certificate does not count on the plain listener", `listener = "inside"
  client { cn = "ct1.clinic-a.example.org" }
  source_ip = "10.0.0.5"
  calling_ae = "CLINA_CT1"
  called_ae = "MAINPACS"`, `decision = "reject"
    rule = ""`, nil},
		{"several at once", clinic, `decision = "reject"
    rule = "deny"
    denies = ["C-STORE"]`, []string{"decision relay, want reject", `rule "clinic-a", want "deny"`, "C-STORE allowed, want denied"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := fmt.Sprintf("test %q {\n  %s\n  expect {\n    %s\n  }\n}\n", tc.name, tc.request, tc.expect)
			s := loadCases(t, "case.tests.hcl", src)
			if len(s.Cases) != 1 {
				t.Fatalf("%d cases decoded", len(s.Cases))
			}
			if got := s.Cases[0].Run(cfg); !slices.Equal(got, tc.want) {
				t.Errorf("Run = %q\nwant  %q", got, tc.want)
			}
		})
	}
}

// A test file's problems are all reported, each where it is.
func TestLoadTestFilesDiagnostics(t *testing.T) {
	cases := []struct {
		name, src string
		want      []string // "line:col: summary"
	}{
		{"missing called_ae", "test \"a\" {\n  calling_ae = \"X\"\n  expect { decision = \"reject\" }\n}\n",
			[]string{"1:1: Missing required argument"}},
		{"missing expect", "test \"a\" {\n  calling_ae = \"X\"\n  called_ae = \"Y\"\n}\n", []string{"1:1: Missing expect block"}},
		{"cert and client", "test \"a\" {\n  cert = \"x.pem\"\n  client { cn = \"x\" }\n  calling_ae = \"X\"\n  called_ae = \"Y\"\n  expect { decision = \"reject\" }\n}\n",
			[]string{"2:3: Both cert and client"}},
		{"a device is not a certificate", "test \"a\" {\n  cert = \"/dev/zero\"\n  calling_ae = \"X\"\n  called_ae = \"Y\"\n  expect { decision = \"reject\" }\n}\n",
			[]string{"2:10: Unreadable certificate"}},
		{"bad fingerprint", "test \"a\" {\n  client { fingerprint = \"sha1:00\" }\n  calling_ae = \"X\"\n  called_ae = \"Y\"\n  expect { decision = \"reject\" }\n}\n",
			[]string{"2:26: Invalid fingerprint"}},
		{"unknown block", "test \"a\" {\n  calling_ae = \"X\"\n  called_ae = \"Y\"\n  expect { decision = \"reject\" }\n  when {}\n}\nrules {}\n",
			[]string{"5:3: Unsupported block type", "7:1: Unsupported block type"}},
		{"wrong type", "test \"a\" {\n  calling_ae = [\"X\"]\n  called_ae = \"Y\"\n  expect {\n    decision = \"reject\"\n    allows = \"C-ECHO\"\n  }\n}\n",
			[]string{"2:16: Unsuitable value type", "6:15: Unsuitable value type"}},
		{"syntax error", "test \"a\" {\n  calling_ae = \n}\n", []string{"2:16: Invalid expression"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := LoadTestFiles()
			diags := s.Add("t.hcl", []byte(tc.src))
			var got []string
			for _, d := range diags {
				if d.Subject == nil {
					t.Errorf("diagnostic without a position: %s", d.Error())
					continue
				}
				got = append(got, fmt.Sprintf("%d:%d: %s", d.Subject.Start.Line, d.Subject.Start.Column, d.Summary))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("diagnostics %q\nwant        %q", got, tc.want)
			}
		})
	}
}

// The bundled policy.hcl passes the bundled policy.tests.hcl.
func TestRepoPolicyTests(t *testing.T) {
	cfg := loadPolicy(t, "../policy.hcl")
	s, diags := LoadTestFiles("../policy.tests.hcl")
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if len(s.Cases) < 6 {
		t.Fatalf("policy.tests.hcl has %d cases", len(s.Cases))
	}
	for _, tc := range s.Cases {
		if diff := tc.Run(cfg); diff != nil {
			t.Errorf("FAIL %s: %s", tc.Name, strings.Join(diff, "; "))
		}
	}
}

// cert = "..." takes the identity from a certificate an independent openssl
// CA issued, fingerprint included, as `policy explain --cert` does.
func TestCertIdentity(t *testing.T) {
	testpeer.Require(t, "openssl")
	pki := testpeer.NewPKI(t, "tests-ca")
	certFile, _ := pki.Issue(t, "ct1", testpeer.CertOptions{CN: "ct1.clinic-a.example.org", DNS: []string{"ct1.clinic-a.example.org"}, URIs: []string{"spiffe://example.org/clinic-a/ct1"}})
	fpOut, err := exec.Command("openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", certFile).Output()
	if err != nil {
		t.Fatal(err)
	}
	_, fp, _ := strings.Cut(strings.TrimSpace(string(fpOut)), "=")
	fp = "sha256:" + strings.ToLower(strings.ReplaceAll(fp, ":", ""))

	dir := t.TempDir()
	if err := os.Rename(certFile, filepath.Join(dir, "ct1.pem")); err != nil {
		t.Fatal(err)
	}
	src := `test "by certificate" {
  cert       = "ct1.pem"
  source_ip  = "203.0.113.7"
  calling_ae = "CLINA_CT1"
  called_ae  = "MAINPACS"
  expect {
    decision = "relay"
    rule     = "clinic-a"
  }
}
`
	file := filepath.Join(dir, "t.tests.hcl")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	s, diags := LoadTestFiles(file)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	in := s.Cases[0].Input
	if in.CN != "ct1.clinic-a.example.org" || !slices.Equal(in.DNS, []string{"ct1.clinic-a.example.org"}) ||
		!slices.Equal(in.URI, []string{"spiffe://example.org/clinic-a/ct1"}) || in.Fingerprint != fp {
		t.Errorf("identity %+v, want the certificate's (fingerprint %s)", in, fp)
	}
	if diff := s.Cases[0].Run(loadPolicy(t, "testdata/v1.hcl")); diff != nil {
		t.Errorf("FAIL: %s", strings.Join(diff, "; "))
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"clinic A's CT":     "clinic A's CT",
		"a\nPASS b":         `"a\nPASS b"`,
		"evil\u202egnp.exe": `"evil\u202egnp.exe"`,
		"Ünïcode ok":        "Ünïcode ok",
		"bell\x07":          `"bell\a"`,
	} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %s, want %s", in, got, want)
		}
	}
}

// A test's AE titles are what the edge could receive: a title the edge
// refuses before any rule (empty or only spaces: A-ASSOCIATE-RJ; a control
// character, backslash, non-ASCII byte or more than 16 characters: A-ABORT)
// used to be evaluated anyway, so `policy test` could pass "relay" for an
// association the live edge never relays.
func TestTestAETitlesAsTheEdgeReadsThem(t *testing.T) {
	test := func(calling, called string) string {
		return "test \"a\" {\n  calling_ae = " + calling + "\n  called_ae  = " + called + "\n  expect { decision = \"reject\" }\n}\n"
	}
	cases := []struct {
		name, src string
		want      []string
	}{
		{"padding is not significant", test(`"  MOD  "`, `"PACS"`), nil},
		{"empty calling", test(`""`, `"PACS"`), []string{"2:16: Invalid AE title"}},
		{"only spaces called", test(`"MOD"`, `"    "`), []string{"3:16: Invalid AE title"}},
		{"NUL inside", test(`"MOD\u0000X"`, `"PACS"`), []string{"2:16: Invalid AE title"}},
		{"newline", test(`"MOD\nX"`, `"PACS"`), []string{"2:16: Invalid AE title"}},
		{"backslash", test(`"MOD\\X"`, `"PACS"`), []string{"2:16: Invalid AE title"}},
		{"non-ASCII", test(`"MODÉ"`, `"PACS"`), []string{"2:16: Invalid AE title"}},
		{"17 characters", test(`"ABCDEFGHIJKLMNOPQ"`, `"PACS"`), []string{"2:16: Invalid AE title"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := LoadTestFiles()
			var got []string
			for _, d := range s.Add("t.hcl", []byte(tc.src)) {
				if d.Subject == nil {
					t.Fatalf("diagnostic without a position: %s", d.Error())
				}
				got = append(got, fmt.Sprintf("%d:%d: %s", d.Subject.Start.Line, d.Subject.Start.Column, d.Summary))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("diagnostics %q\nwant        %q", got, tc.want)
			}
		})
	}
}
