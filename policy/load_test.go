package policy

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
)

const minimalTLS = `
tls {
  client_ca = ["ca.pem"]
  cert_file = "edge.pem"
  key_file  = "edge-key.pem"
}
`

// diagKeys renders diagnostics as "line:col severity: summary" for comparison.
func diagKeys(diags hcl.Diagnostics) []string {
	var out []string
	for _, d := range diags {
		sev := "error"
		if d.Severity == hcl.DiagWarning {
			sev = "warning"
		}
		pos := "-"
		if d.Subject != nil {
			pos = fmt.Sprintf("%d:%d", d.Subject.Start.Line, d.Subject.Start.Column)
		}
		out = append(out, fmt.Sprintf("%s %s: %s", pos, sev, d.Summary))
	}
	return out
}

func TestDefaultsAndPaths(t *testing.T) {
	cfg, diags := Load(filepath.Join("/etc", "dicomedge", "policy.hcl"), []byte(minimalTLS+`
audit {}
tls_unused = 1
`))
	if got := diagKeys(diags); len(got) != 1 || got[0] != "9:1 error: Unsupported argument" {
		t.Fatalf("diagnostics = %q", got)
	}
	cfg, diags = Load("/etc/dicomedge/policy.hcl", []byte(minimalTLS+`
backend "b" {
  address  = "pacs:104"
  ae_title = " PACS "
  tls {
    ca        = ["/abs/ca.pem", "rel/ca.pem"]
    cert_file = "c.pem"
    key_file  = "k.pem"
  }
}
`))
	if len(diags) != 0 {
		t.Fatalf("diagnostics = %q", diagKeys(diags))
	}
	e := cfg.Edge
	if e.AETitle != "DICOMEDGE" || e.Listen != ":2762" || e.AdminListen != "" || e.MaxPDULength != 1<<20 ||
		e.MaxAssociations != 512 || e.ARTIMTimeout != 30*time.Second || e.IdleTimeout != 10*time.Minute ||
		e.DrainTimeout != 30*time.Second || len(e.ProxyProtocol) != 0 || e.MaxAssociationsPerClient != 128 {
		t.Errorf("edge defaults: %+v", e)
	}
	if cfg.TLS.Profile != "bcp195-rfc8996" || cfg.TLS.ClientCA[0] != "/etc/dicomedge/ca.pem" ||
		cfg.TLS.CertFile != "/etc/dicomedge/edge.pem" || cfg.TLS.KeyFile != "/etc/dicomedge/edge-key.pem" || cfg.TLS.ACME != nil {
		t.Errorf("tls: %+v", cfg.TLS)
	}
	a := cfg.Audit
	if a.File != "/etc/dicomedge/var/audit/audit.jsonl" || a.PatientIDs != "hash" || a.Fsync != time.Second || a.OnFull != "block" || a.Syslog != nil {
		t.Errorf("audit defaults: %+v", a)
	}
	b := cfg.Backends["b"]
	if b == nil || b.Name != "b" || b.AETitle != "PACS" || b.TLS == nil ||
		strings.Join(b.TLS.CA, ",") != "/abs/ca.pem,/etc/dicomedge/rel/ca.pem" || b.TLS.CertFile != "/etc/dicomedge/c.pem" {
		t.Errorf("backend: %+v %+v", b, b.TLS)
	}
	// No rules at all: everything is rejected.
	if d := cfg.Policy.Evaluate(&Input{CalledAE: "DICOMEDGE"}); d.Action != ActionReject || d.Reject.Reason != 3 {
		t.Errorf("empty policy decided %v", d)
	}
}

func TestFullConfig(t *testing.T) {
	src := `
edge {
  ae_title         = "EDGE1"
  listen           = "[::1]:0"
  admin_listen     = "127.0.0.1:9102"
  max_pdu_length   = 65536
  max_associations = 10
  max_associations_per_client = 3
  artim_timeout    = "5s"
  idle_timeout     = "1h30m"
  drain_timeout    = "0s"
  proxy_protocol   = ["10.1.0.0/16", "2001:db8::1"]
}
tls {
  profile   = "bcp195-nd"
  client_ca = ["ca.pem", "ca2.pem"]
  crl       = ["ca.crl"]
  acme {
    domains   = ["edge.example.org", "dicom.edge.example.org"]
    email     = "admins@example.org"
    directory = "https://127.0.0.1:14000/dir"
    ca_roots  = ["pebble.minica.pem"]
    storage   = "acme"
    http_port = 5002
  }
}
audit {
  file        = "/var/log/dicomedge/audit.jsonl"
  patient_ids = "omit"
  fsync       = "0s"
  on_full     = "drop"
  syslog {
    address = "siem.example.org:6514"
    format    = "json"
    ca        = ["siem-ca.pem"]
    cert_file = "edge-syslog.pem"
    key_file  = "edge-syslog-key.pem"
  }
}
`
	cfg, diags := Load("conf/policy.hcl", []byte(src))
	if len(diags) != 0 {
		t.Fatalf("diagnostics = %q", diagKeys(diags))
	}
	want := Edge{AETitle: "EDGE1", Listen: "[::1]:0", AdminListen: "127.0.0.1:9102", MaxPDULength: 65536, MaxAssociations: 10,
		MaxAssociationsPerClient: 3, ARTIMTimeout: 5 * time.Second, IdleTimeout: 90 * time.Minute, DrainTimeout: 0,
		ProxyProtocol: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("2001:db8::1/128")}}
	if fmt.Sprint(cfg.Edge) != fmt.Sprint(want) {
		t.Errorf("edge:\n got %+v\nwant %+v", cfg.Edge, want)
	}
	ac := cfg.TLS.ACME
	if cfg.TLS.Profile != "bcp195-nd" || len(cfg.TLS.ClientCA) != 2 || cfg.TLS.CRL[0] != filepath.Join("conf", "ca.crl") || ac == nil ||
		strings.Join(ac.Domains, ",") != "edge.example.org,dicom.edge.example.org" || ac.Email != "admins@example.org" ||
		ac.Directory != "https://127.0.0.1:14000/dir" || ac.CARoots[0] != filepath.Join("conf", "pebble.minica.pem") ||
		ac.Storage != filepath.Join("conf", "acme") || ac.HTTPPort != 5002 {
		t.Errorf("tls: %+v acme %+v", cfg.TLS, ac)
	}
	a := cfg.Audit
	if a.File != "/var/log/dicomedge/audit.jsonl" || a.PatientIDs != "omit" || a.Fsync != 0 || a.OnFull != "drop" ||
		a.Syslog == nil || a.Syslog.Address != "siem.example.org:6514" || a.Syslog.Format != "json" || a.Syslog.CA[0] != filepath.Join("conf", "siem-ca.pem") ||
		a.Syslog.CertFile != filepath.Join("conf", "edge-syslog.pem") || a.Syslog.KeyFile != filepath.Join("conf", "edge-syslog-key.pem") {
		t.Errorf("audit: %+v %+v", a, a.Syslog)
	}
}

// TestValidation feeds one mistake (or one accepted variant) at a time.
func TestValidation(t *testing.T) {
	cases := []struct {
		name string
		src  string
		want []string // diagKeys; nil = no diagnostics at all
	}{
		{"empty file", ``, []string{"1:1 error: Missing tls block"}},
		{"no certificate source", `tls { client_ca = ["ca.pem"] }`, []string{"1:1 error: No certificate for the edge"}},
		{"empty client_ca", `tls {
  client_ca = []
  cert_file = "a"
  key_file = "b"
}`, []string{"2:15 error: Missing client_ca"}},
		{"key without cert", `tls {
  client_ca = ["ca.pem"]
  key_file  = "k.pem"
  acme { domains = ["a.example"] }
}`, []string{"3:3 error: Missing cert_file", "4:3 error: Both cert_file and acme"}},
		{"acme without domains, http directory", `tls {
  client_ca = ["ca.pem"]
  acme { directory = "http://acme.example/dir" }
}`, []string{"3:3 error: Missing domains", "3:22 error: Invalid ACME directory"}},
		{"acme bad domain and email", `tls {
  client_ca = ["ca.pem"]
  acme {
    domains = ["ok.example", "bad_name.example"]
    email = "nobody"
  }
}`, []string{"4:30 error: Invalid domain", "5:13 error: Invalid email"}},
		{"empty domains next to another error", `tls {
  client_ca = ["ca.pem"]
  profile = "nope"
  acme { domains = [] }
}`, []string{"3:13 error: Unknown TLS profile", "4:3 error: Missing domains"}},
		{"duplicate acme block", `tls {
  client_ca = ["ca.pem"]
  acme { domains = ["a.example"] }
  acme { domains = ["b.example"] }
}`, []string{"4:3 error: Duplicate acme block"}},
		{"listen port out of range", minimalTLS + `edge { listen = "127.0.0.1:70000" }`, []string{"7:17 error: Invalid address"}},
		{"negative duration", minimalTLS + `edge { idle_timeout = "-5s" }`, []string{"7:23 error: Invalid duration"}},
		{"zero artim", minimalTLS + `edge { artim_timeout = "0s" }`, []string{"7:24 error: Invalid duration"}},
		{"duration as number", minimalTLS + `edge { artim_timeout = 30 }`, []string{"7:24 error: Invalid duration"}},
		{"fractional pdu length", minimalTLS + `edge { max_pdu_length = 4096.5 }`, []string{"7:25 error: Unsuitable value type"}},
		{"zero associations", minimalTLS + `edge { max_associations = 0 }`, []string{"7:27 error: Value out of range"}},
		{"zero associations per client", minimalTLS + `edge { max_associations_per_client = 0 }`, []string{"7:38 error: Value out of range"}},
		{"variables are not allowed", minimalTLS + `edge { listen = var.listen }`, []string{"7:17 error: Variables not allowed"}},
		{"proxy_protocol is a list", minimalTLS + `edge { proxy_protocol = "10.0.0.0/8" }`, []string{"7:26 error: Unsuitable value type"}},
		{"proxy_protocol host bits", minimalTLS + `edge { proxy_protocol = ["10.0.0.1/8"] }`, []string{"7:26 warning: CIDR has host bits set"}},
		{"audit empty file name", minimalTLS + `audit { file = "" }`, []string{"7:16 error: Empty file name"}},
		{"syslog without address, bad format", minimalTLS + `audit {
  syslog { format = "cef" }
}`, []string{"8:3 error: Missing address", "8:21 error: Unknown syslog format"}},
		{"syslog cert without key", minimalTLS + `audit {
  syslog {
    address   = "siem.example.org:6514"
    cert_file = "edge.pem"
  }
}`, []string{"10:5 error: Missing key_file"}},
		{"syslog address without port", minimalTLS + `audit {
  syslog { address = "siem.example.org" }
}`, []string{"8:22 error: Invalid address"}},
		{"backend without address and AE", minimalTLS + `backend "p" {}`, []string{"7:1 error: Missing address", "7:1 error: Missing ae_title"}},
		{"duplicate backend is still checked", minimalTLS + `backend "p" {
  address = "h:104"
  ae_title = "P"
}
backend "p" {
  address = "h"
  ae_title = "P"
}`, []string{"11:9 error: Duplicate backend name", "12:13 error: Invalid address"}},
		{"backend port zero", minimalTLS + `backend "p" {
  address = "10.0.0.1:0"
  ae_title = "P"
}`, []string{"8:13 error: Invalid address"}},
		{"backend tls cert without key", minimalTLS + `backend "p" {
  address = "10.0.0.1:104"
  ae_title = "P"
  tls { cert_file = "c.pem" }
}`, []string{"10:9 error: Missing key_file"}},
		{"empty rule name", minimalTLS + `rule "" {
  answer {}
}`, []string{"7:6 error: Empty rule name"}},
		{"two when blocks", minimalTLS + `rule "r" {
  when { called_ae = ["A"] }
  when { called_ae = ["B"] }
  answer {}
}`, []string{"9:3 error: Duplicate when block"}},
		{"two answer blocks", minimalTLS + `rule "r" {
  answer {}
  answer {}
}`, []string{"9:3 error: Duplicate answer block"}},
		{"answer and relay", minimalTLS + `rule "r" {
  answer {}
  relay { backend = "none" }
}`, []string{"9:3 error: Rule has more than one action", "9:21 error: Unknown backend"}},
		{"two edge blocks", minimalTLS + `edge {}
edge {}`, []string{"8:1 error: Duplicate edge block"}},
		{"relay without backend attribute", minimalTLS + `rule "r" {
  relay {}
}`, []string{"8:3 error: Missing backend"}},
		{"relay with no backends defined", minimalTLS + `rule "r" {
  relay { backend = "pacs" }
}`, []string{"8:21 error: Unknown backend"}},
		{"answer takes no attributes", minimalTLS + `rule "r" {
  answer { backend = "x" }
}`, []string{"8:12 error: Unsupported argument"}},
		{"unknown when attribute", minimalTLS + `rule "r" {
  when { client_ou = ["x"] }
  answer {}
}`, []string{"8:10 error: Unsupported argument"}},
		{"empty when matches everything, later rule unreachable", minimalTLS + `rule "all" {
  when {
    client_dns = []
  }
  answer {}
}
rule "late" {
  reject {}
}`, []string{"13:6 warning: Unreachable rule"}},
		{"control character in AE pattern", minimalTLS + `rule "r" {
  when { calling_ae = ["CT\u0001"] }
  answer {}
}`, []string{"8:24 error: Invalid AE title"}},
		{"AE of only spaces", minimalTLS + `rule "r" {
  when { called_ae = ["   "] }
  answer {}
}`, []string{"8:23 error: Invalid AE title"}},
		{"empty CN pattern and space in DNS", minimalTLS + `rule "r" {
  when {
    client_cn  = [""]
    client_dns = ["a b"]
  }
  answer {}
}`, []string{"9:19 error: Empty pattern", "10:19 error: Invalid pattern"}},
		{"bad fingerprint", minimalTLS + `rule "r" {
  when { client_fingerprint = ["sha1:abcd"] }
  answer {}
}`, []string{"8:32 error: Invalid fingerprint"}},
		{"CIDR with zone or garbage", minimalTLS + `rule "r" {
  when { source_cidr = ["fe80::1%eth0", "10.0.0.0/8", "ten"] }
  answer {}
}`, []string{"8:25 error: Invalid CIDR", "8:55 error: Invalid CIDR"}},
		{"non-string list element", minimalTLS + `rule "r" {
  when { called_ae = ["A", ["B"]] }
  answer {}
}`, []string{"8:28 error: Unsuitable value type"}},
		{"empty services", minimalTLS + `backend "p" {
  address = "h:104"
  ae_title = "P"
}
rule "r" {
  relay {
    backend = "p"
    services = []
  }
}`, []string{"14:16 error: Empty services"}},
		{"C-CANCEL and lower-case names", minimalTLS + `backend "p" {
  address = "h:104"
  ae_title = "P"
}
rule "r" {
  relay {
    backend = "p"
    services = ["C-CANCEL", "c-store"]
  }
}`, []string{"14:17 error: Unknown DIMSE service", "14:29 error: Unknown DIMSE service"}},
		{"bad SOP class UIDs", minimalTLS + `backend "p" {
  address = "h:104"
  ae_title = "P"
}
rule "r" {
  relay {
    backend = "p"
    sop_classes = ["1.2.840.10008.5.1.4.1.1.2", "1.02.3", "1..2", "1.2.a"]
  }
}`, []string{"14:49 error: Invalid SOP class UID", "14:59 error: Invalid SOP class UID", "14:67 error: Invalid SOP class UID"}},
		{"move destinations without C-MOVE", minimalTLS + `backend "p" {
  address = "h:104"
  ae_title = "P"
}
rule "r" {
  relay {
    backend = "p"
    services = ["C-FIND"]
    move_destinations = ["WS1"]
  }
}`, []string{"15:25 warning: move_destinations without C-MOVE"}},
		{"transient must be bool", minimalTLS + `rule "r" {
  reject { transient = "yes" }
}`, []string{"8:25 error: Unsuitable value type"}},
		{"valid: null-free minimal", minimalTLS, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, diags := Load("t.hcl", []byte(tc.src))
			got := diagKeys(diags)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				var b strings.Builder
				WriteDiagnostics(&b, diags, cfg.Files)
				t.Errorf("diagnostics:\n got %q\nwant %q\n%s", got, tc.want, b.String())
			}
			if diags.HasErrors() != (cfg.Policy == nil) {
				t.Errorf("HasErrors=%v but Policy=%v", diags.HasErrors(), cfg.Policy)
			}
		})
	}
}

func TestAcceptedVariants(t *testing.T) {
	src := minimalTLS + `
backend "p" {
  address  = "h:104"
  ae_title = "P"
}
rule "fp" {
  when { client_fingerprint = ["SHA256:` + strings.Repeat("AB", 32) + `"] }
  reject {
    reason    = "application-context-not-supported"
    transient = true
  }
}
rule "host" {
  when { source_cidr = ["192.0.2.7", "::ffff:198.51.100.0/120"] }
  relay { backend = "p" }
}
rule "link-local" {
  when { source_cidr = ["fe80::/10"] }
  answer {}
}
rule "default-reason" {
  when { calling_ae = ["X"] }
  reject {}
}
`
	cfg, diags := Load("t.hcl", []byte(src))
	if len(diags) != 0 {
		t.Fatalf("diagnostics: %q", diagKeys(diags))
	}
	cases := []struct {
		name   string
		in     Input
		rule   string
		reject [3]uint8
	}{
		{"fingerprint normalised", Input{Fingerprint: "sha256:" + strings.Repeat("ab", 32)}, "fp", [3]uint8{2, 1, 2}},
		{"bare IPv4 is a /32", Input{SourceIP: netip.MustParseAddr("192.0.2.7")}, "host", [3]uint8{}},
		{"neighbour of the /32", Input{SourceIP: netip.MustParseAddr("192.0.2.8"), CallingAE: "X"}, "default-reason", [3]uint8{1, 1, 1}},
		{"zoned IPv6 client matches its network", Input{SourceIP: netip.MustParseAddr("fe80::1%eth0")}, "link-local", [3]uint8{}},
		{"mapped prefix matches IPv4 client", Input{SourceIP: netip.MustParseAddr("198.51.100.9")}, "host", [3]uint8{}},
		{"no match at all", Input{}, "", [3]uint8{1, 1, 3}},
	}
	for _, tc := range cases {
		d := cfg.Policy.Evaluate(&tc.in)
		if d.Rule != tc.rule {
			t.Errorf("%s: rule %q, want %q", tc.name, d.Rule, tc.rule)
		}
		if got := [3]uint8{d.Reject.Result, d.Reject.Source, d.Reject.Reason}; d.Action == ActionReject && got != tc.reject {
			t.Errorf("%s: reject %v, want %v", tc.name, got, tc.reject)
		}
	}
	if got := strings.Join(cfg.Policy.Rules(), ","); got != "fp,host,link-local,default-reason" {
		t.Errorf("Rules() = %s", got)
	}
}

func TestLoadFileMissing(t *testing.T) {
	cfg, diags := LoadFile(filepath.Join(t.TempDir(), "nope.hcl"))
	if !diags.HasErrors() || cfg == nil || cfg.Files == nil || !strings.Contains(diags[0].Detail, "nope.hcl") {
		t.Fatalf("got %v %v", cfg, diags)
	}
	var b strings.Builder
	WriteDiagnostics(&b, diags, cfg.Files)
	if !strings.HasPrefix(b.String(), "error: Failed to read configuration file; ") {
		t.Errorf("got %q", b.String())
	}
}

// The pre-association limits and the per-client default follow
// max_associations and artim_timeout as docs/limits.md states.
func TestAdmission(t *testing.T) {
	for _, c := range []struct {
		maxA       int
		artim      time.Duration
		pre, per   int
		perClient  int
		handshake  time.Duration
		headerWait time.Duration
	}{
		{16, 30 * time.Second, 64, 8, 4, 10 * time.Second, 3 * time.Second},
		{512, 30 * time.Second, 1024, 64, 128, 10 * time.Second, 3 * time.Second},
		{4, 2 * time.Second, 64, 8, 4, 2 * time.Second, 2 * time.Second},
	} {
		e := Edge{MaxAssociations: c.maxA, ARTIMTimeout: c.artim}
		a := e.Admission()
		if a.PreAssociation != c.pre || a.PerSource != c.per || a.AwaitingProxyHeader != c.pre/2 ||
			a.Handshake != c.handshake || a.ProxyHeader != c.headerWait || e.PerClient() != c.perClient {
			t.Errorf("max_associations %d, artim %v: %+v, per client %d", c.maxA, c.artim, a, e.PerClient())
		}
	}
}

// TestACMEStorageDefault: serve cannot run ACME without a storage
// directory, so a policy that leaves it out gets the run directory beside
// the policy file rather than passing check and failing at start.
func TestACMEStorageDefault(t *testing.T) {
	cfg, diags := Load("/etc/dicomedge/policy.hcl", []byte(`
tls {
  client_ca = ["ca.pem"]
  acme { domains = ["edge.example.org"] }
}
`))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if got, want := cfg.TLS.ACME.Storage, "/etc/dicomedge/var/acme"; got != want {
		t.Errorf("acme storage = %q, want %q", got, want)
	}
}
