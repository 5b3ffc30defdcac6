package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

func TestListenersLoaded(t *testing.T) {
	cfg := loadTestdata(t, "wayout.hcl")
	var got []string
	for _, l := range cfg.Listeners {
		got = append(got, fmt.Sprintf("%s %s tls=%v allow=%v", l.Name, l.Listen, l.TLS, l.AllowCIDR))
	}
	want := []string{
		"edge 127.0.0.1:2762 tls=true allow=[]",
		"inside 10.0.0.2:11112 tls=false allow=[10.0.0.0/24]",
		"partners 127.0.0.1:2763 tls=true allow=[]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("listeners:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if cfg.Listener("") != cfg.Listeners[0] || cfg.Listener("inside") != cfg.Listeners[1] || cfg.Listener("nope") != nil {
		t.Error("Config.Listener lookup")
	}
	in := cfg.Listener("inside")
	if !in.Plain() || !in.AllowsSource(netip.MustParseAddr("::ffff:10.0.0.5")) || in.AllowsSource(netip.MustParseAddr("10.0.1.5")) {
		t.Error("inside: plain, allows 10.0.0.5 (also IPv4-mapped), not 10.0.1.5")
	}
	if !cfg.Listener("edge").AllowsSource(netip.MustParseAddr("198.51.100.1")) {
		t.Error("a listener without allow_cidr allows any source")
	}
}

func TestListenerDecisions(t *testing.T) {
	cfg := loadTestdata(t, "wayout.hcl")
	pacs := netip.MustParseAddr("10.0.0.5")
	const (
		insideNoListener = `has no when.listener, so it applies to TLS listeners only; "inside" is a plain listener`
	)
	cases := []struct {
		name     string
		in       Input
		decision string
		rule     string
		steps    []string
	}{
		{
			name:     "the PACS sends out through the inside listener",
			in:       Input{Listener: "inside", SourceIP: pacs, CallingAE: "MAINPACS", CalledAE: "CLINA_WS1"},
			decision: "relay clinic-a-ws1", rule: "pacs-to-clinic-a",
			steps: []string{`rule "pacs-to-clinic-a": matches (listener "inside", source_cidr 10.0.0.5, calling_ae "MAINPACS", called_ae "CLINA_WS1")`},
		},
		{
			name:     "a rule without listener never matches on a plain listener, not even a catch-all",
			in:       Input{Listener: "inside", SourceIP: pacs, CallingAE: "MAINPACS", CalledAE: "DICOMEDGE"},
			decision: "reject calling-ae-not-recognized", rule: "",
			steps: []string{
				`rule "pacs-to-clinic-a": called_ae "DICOMEDGE" does not match ["CLINA_WS1"]`,
				`rule "clinic-a": ` + insideNoListener,
				`rule "echo": ` + insideNoListener,
				`rule "deny": ` + insideNoListener,
			},
		},
		{
			name:     "a certificate identity claimed on a plain listener is ignored",
			in:       Input{Listener: "inside", CN: "ct1.clinic-a.example.org", SourceIP: pacs, CallingAE: "CLINA_CT1", CalledAE: "MAINPACS"},
			decision: "reject calling-ae-not-recognized", rule: "",
		},
		{
			name:     "the outbound rule does not apply on the TLS listener",
			in:       Input{SourceIP: pacs, CallingAE: "MAINPACS", CalledAE: "CLINA_WS1"},
			decision: "reject calling-ae-not-recognized", rule: "deny",
			steps: []string{
				`rule "pacs-to-clinic-a": listener "edge" does not match ["inside"]`,
				`rule "clinic-a": client_cn "" does not match ["*.clinic-a.example.org"]`,
				`rule "echo": called_ae "CLINA_WS1" does not match ["DICOMEDGE"]`,
				`rule "deny": matches every association (no when conditions)`,
			},
		},
		{
			name:     "rules without listener apply on every TLS listener",
			in:       Input{Listener: "partners", CN: "ct1.clinic-a.example.org", CallingAE: "CLINA_CT1", CalledAE: "MAINPACS"},
			decision: "relay pacs", rule: "clinic-a",
		},
		{
			name:     "an unknown listener is treated as plain and matches nothing",
			in:       Input{Listener: "bogus", CN: "ct1.clinic-a.example.org", CallingAE: "CLINA_CT1", CalledAE: "MAINPACS"},
			decision: "reject calling-ae-not-recognized", rule: "",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := cfg.Policy.Evaluate(&tc.in)
			if d.String() != tc.decision || d.Rule != tc.rule {
				t.Errorf("Evaluate = %q by %q, want %q by %q", d, d.Rule, tc.decision, tc.rule)
			}
			e := cfg.Policy.Explain(&tc.in)
			if e.Decision.String() != d.String() || e.Decision.Rule != d.Rule {
				t.Errorf("Explain decides %q by %q, Evaluate %q by %q", e.Decision, e.Decision.Rule, d, d.Rule)
			}
			if tc.steps == nil {
				return
			}
			var got []string
			for _, s := range e.Steps {
				got = append(got, s.Why)
			}
			if strings.Join(got, "\n") != strings.Join(tc.steps, "\n") {
				t.Errorf("steps:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.steps, "\n"))
			}
		})
	}
}

func TestListenerEvaluateDoesNotAllocate(t *testing.T) {
	cfg := loadTestdata(t, "wayout.hcl")
	for _, in := range []*Input{
		{Listener: "inside", SourceIP: netip.MustParseAddr("10.0.0.5"), CallingAE: "MAINPACS", CalledAE: "CLINA_WS1"},
		{Listener: "partners", CN: "ct1.clinic-a.example.org", CallingAE: "CLINA_CT1", CalledAE: "MAINPACS"},
		{Listener: "bogus"},
	} {
		if n := testing.AllocsPerRun(100, func() { cfg.Policy.Evaluate(in) }); n != 0 {
			t.Errorf("%s: %v allocations", in.Listener, n)
		}
	}
}

// TestListenerDiagnosticsGolden loads a file with many listener mistakes
// and checks that each is reported, at its own position.
func TestListenerDiagnosticsGolden(t *testing.T) {
	cfg, diags := LoadFile("testdata/listeners-broken.hcl")
	if !diags.HasErrors() {
		t.Fatal("listeners-broken.hcl loaded without errors")
	}
	var b strings.Builder
	WriteDiagnostics(&b, diags, cfg.Files)
	golden(t, "listeners-broken.golden", b.String())

	want := []string{
		"7:10 Reserved listener name",
		"11:10 Listener no rule names (warning)",
		"11:1 Missing allow_cidr",
		"16:10 Duplicate listener name",
		"20:10 Invalid listener name",
		"25:16 Duplicate listen address",
		"26:17 Unsuitable value type",
		"27:17 Invalid CIDR",
		"30:1 Missing listen",
		"30:10 Listener no rule names (warning)",
		"53:22 Unknown listener",
		"57:6 Rule can never match (warning)",
		"70:26 Move destination not routed out (warning)",
		"74:6 Unreachable rule (warning)",
	}
	got := map[string]bool{}
	for _, d := range diags {
		if d.Subject == nil {
			t.Errorf("diagnostic without a position: %s", d.Summary)
			continue
		}
		key := fmt.Sprintf("%d:%d %s", d.Subject.Start.Line, d.Subject.Start.Column, d.Summary)
		if d.Severity == hcl.DiagWarning {
			key += " (warning)"
		}
		got[key] = true
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("missing diagnostic %q", w)
		}
		delete(got, w)
	}
	for k := range got {
		t.Errorf("unexpected diagnostic %q", k)
	}
}

// The warnings about the way out, alone (the configuration is valid).
func TestWayOutWarnings(t *testing.T) {
	base := minimalTLS + `
listener "inside" {
  listen     = "10.0.0.2:11112"
  tls        = false
  allow_cidr = ["10.0.0.0/24"]
}
backend "pacs" {
  address  = "10.0.0.5:104"
  ae_title = "MAINPACS"
}
backend "ws1" {
  address  = "ws1.example.org:2762"
  ae_title = "CLINA_WS1"
}
rule "in" {
  when { client_cn = ["*.clinic-a.example.org"] }
  relay {
    backend           = "pacs"
    services          = ["C-FIND", "C-MOVE"]
    move_destinations = ["CLINA_WS1", "CLINA_*"]
  }
}
`
	cases := []struct {
		name, rules string
		want        []string
	}{
		{"nothing routes out", ``, []string{
			"8:10 warning: Listener no rule names",
			"26:26 warning: Move destination not routed out",
			"26:39 warning: Move destination not routed out",
		}},
		{"a literal rule routes the literal destination only", `
rule "out" {
  when {
    listener  = ["inside"]
    called_ae = ["CLINA_WS1"]
  }
  relay { backend = "ws1" }
}`, []string{"26:39 warning: Move destination not routed out"}},
		{"a pattern rule routes both", `
rule "out" {
  when {
    listener  = ["inside"]
    called_ae = ["CLINA_*"]
  }
  relay { backend = "ws1" }
}`, nil},
		{"a rule without C-STORE does not route", `
rule "out" {
  when { listener = ["inside"] }
  relay {
    backend  = "ws1"
    services = ["C-ECHO"]
  }
}`, []string{
			"26:26 warning: Move destination not routed out",
			"26:39 warning: Move destination not routed out",
		}},
		{"a rule on a TLS listener does not route out", `
rule "out" {
  when { called_ae = ["CLINA_*"] }
  relay { backend = "ws1" }
}
rule "inside-echo" {
  when { listener = ["inside"] }
  answer {}
}`, []string{
			"26:26 warning: Move destination not routed out",
			"26:39 warning: Move destination not routed out",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, diags := Load("t.hcl", []byte(base+tc.rules))
			if got := diagKeys(diags); strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("got %q\nwant %q", got, tc.want)
			}
		})
	}
	// Without a plain listener there is no way out to check.
	src := strings.Replace(base, "tls        = false", "tls        = true", 1)
	if _, diags := Load("t.hcl", []byte(src)); len(diags) != 0 {
		t.Errorf("no plain listener: %q", diagKeys(diags))
	}
}
