package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// thousandRules builds a policy of 1,000 realistic rules (CN globs, CIDRs, AE
// prefixes) where only the last one matches the benchmark's input.
func thousandRules(tb testing.TB) *Policy {
	tb.Helper()
	var b strings.Builder
	b.WriteString(minimalTLS)
	b.WriteString("backend \"pacs\" {\n  address = \"10.0.0.5:104\"\n  ae_title = \"MAINPACS\"\n}\n")
	for i := 0; i < 999; i++ {
		fmt.Fprintf(&b, `rule "clinic-%d" {
  when {
    client_cn   = ["*.clinic-%d.example.org"]
    source_cidr = ["10.%d.%d.0/24"]
    calling_ae  = ["C%d_*"]
    called_ae   = ["MAINPACS"]
  }
  relay {
    backend  = "pacs"
    services = ["C-ECHO", "C-STORE"]
  }
}
`, i, i, i/256, i%256, i)
	}
	b.WriteString(`rule "last" {
  when {
    client_cn   = ["*.last.example.org"]
    source_cidr = ["192.0.2.0/24"]
    calling_ae  = ["LAST_*"]
    called_ae   = ["MAINPACS"]
  }
  relay { backend = "pacs" }
}
`)
	cfg, diags := Load("bench.hcl", []byte(b.String()))
	if diags.HasErrors() {
		tb.Fatal(diags)
	}
	return cfg.Policy
}

func BenchmarkEvaluate1000RulesLastMatches(b *testing.B) {
	p := thousandRules(b)
	in := &Input{CN: "ct1.last.example.org", SourceIP: netip.MustParseAddr("192.0.2.10"), CallingAE: "LAST_CT1", CalledAE: "MAINPACS"}
	if d := p.Evaluate(in); d.Rule != "last" {
		b.Fatalf("matched %q", d.Rule)
	}
	b.ReportAllocs()
	for b.Loop() {
		p.Evaluate(in)
	}
}

// The worst case for the rule scan: every rule's first condition passes
// (the CN), so each is rejected only by a later one.
func BenchmarkEvaluate1000RulesDeepFail(b *testing.B) {
	p := thousandRules(b)
	in := &Input{CN: "x.clinic-5.example.org", SourceIP: netip.MustParseAddr("192.0.2.10"), CallingAE: "LAST_CT1", CalledAE: "MAINPACS"}
	b.ReportAllocs()
	for b.Loop() {
		p.Evaluate(in)
	}
}

func BenchmarkExplain1000Rules(b *testing.B) {
	p := thousandRules(b)
	in := &Input{CN: "ct1.last.example.org", SourceIP: netip.MustParseAddr("192.0.2.10"), CallingAE: "LAST_CT1", CalledAE: "MAINPACS"}
	b.ReportAllocs()
	for b.Loop() {
		p.Explain(in)
	}
}

func BenchmarkLoad1000Rules(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		thousandRules(b)
	}
}

func TestEvaluate1000RulesDoesNotAllocate(t *testing.T) {
	p := thousandRules(t)
	in := &Input{CN: "ct1.last.example.org", SourceIP: netip.MustParseAddr("192.0.2.10"), CallingAE: "LAST_CT1", CalledAE: "MAINPACS"}
	if n := testing.AllocsPerRun(20, func() { p.Evaluate(in) }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}
