package policy

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The repository's example must stay valid and keep the behaviour its
// comments promise for `serve --dev`.
func TestRepoPolicy(t *testing.T) {
	path := filepath.Join("..", "policy.hcl")
	// Its deidentify block's key lives in the ignored run directory, made
	// by serve --dev on a fresh checkout: made here the same way.
	if _, err := CreateDevKeys(path); err != nil {
		t.Fatal(err)
	}
	cfg, diags := LoadFile(path)
	if len(diags) > 0 {
		WriteDiagnostics(os.Stderr, diags, cfg.Files)
		t.Fatalf("policy.hcl: %d diagnostics", len(diags))
	}
	dir := filepath.Dir(path)
	if want := filepath.Join(dir, "certs/ca.pem"); len(cfg.TLS.ClientCA) != 1 || cfg.TLS.ClientCA[0] != want {
		t.Errorf("client_ca = %q, want [%q] (resolved against the file's directory)", cfg.TLS.ClientCA, want)
	}
	cases := []struct {
		name string
		in   Input
		want string
		rule string
	}{
		{"dev client echoes the edge", Input{CN: "client", CallingAE: "MODALITY1", CalledAE: "DICOMEDGE"}, "answer", "echo"},
		{"dev modality stores to pacs", Input{CN: "client", CallingAE: "MODALITY1", CalledAE: "MAINPACS"}, "relay pacs", "modalities-to-pacs"},
		{"dev client with another AE is refused", Input{CN: "client", CallingAE: "WS1", CalledAE: "MAINPACS"}, "reject calling-ae-not-recognized", "deny"},
		{"clinic-a example", Input{CN: "ct.clinic-a.example.org", SourceIP: netip.MustParseAddr("203.0.113.9"), CallingAE: "CLINA_CT", CalledAE: "MAINPACS"}, "relay pacs", "clinic-a"},
		{"other client is refused", Input{CN: "intruder", CallingAE: "MODALITY1", CalledAE: "DICOMEDGE", SourceIP: netip.MustParseAddr("127.0.0.1")}, "reject calling-ae-not-recognized", "deny"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := cfg.Policy.Evaluate(&tc.in)
			if d.String() != tc.want || d.Rule != tc.rule {
				t.Errorf("Evaluate = %q by rule %q, want %q by rule %q", d, d.Rule, tc.want, tc.rule)
			}
		})
	}
}

// The commented examples of the bundled policy (the way out to a clinic,
// de-identified to an AI vendor) are valid once uncommented and decide as
// their comments say.
func TestRepoPolicyCommentedExamples(t *testing.T) {
	path := filepath.Join("..", "policy.hcl")
	if _, err := CreateDevKeys(path); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	in := false
	for _, l := range strings.Split(string(src), "\n") {
		switch {
		case !in && (strings.HasPrefix(l, "# listener ") || strings.HasPrefix(l, "# backend ") || strings.HasPrefix(l, "# rule ")):
			in = true
			l = strings.TrimPrefix(l, "# ")
		case in:
			if l == "# }" {
				in = false
			}
			l = strings.TrimPrefix(strings.TrimPrefix(l, "#"), " ")
		}
		out = append(out, l)
	}
	cfg, diags := Load(path, []byte(strings.Join(out, "\n")))
	if len(diags) > 0 {
		WriteDiagnostics(os.Stderr, diags, cfg.Files)
		t.Fatalf("policy.hcl with its examples uncommented: %d diagnostics", len(diags))
	}
	pacs := netip.MustParseAddr("127.0.0.1")
	d := cfg.Policy.Evaluate(&Input{Listener: "inside", SourceIP: pacs, CallingAE: "MAINPACS", CalledAE: "AIVENDOR"})
	if d.String() != "relay ai-vendor" || d.Deidentify == nil || d.Deidentify.Name != "ai-vendor" || d.Deidentify.Profile == nil {
		t.Errorf("MAINPACS to AIVENDOR: %q by %q, deidentify %+v; want relay ai-vendor, de-identified by ai-vendor", d, d.Rule, d.Deidentify)
	}
	if !d.Deidentify.Profile.HasOption("retain-modified-dates") {
		t.Error("the ai-vendor block lost retain-modified-dates")
	}
	d = cfg.Policy.Evaluate(&Input{Listener: "inside", SourceIP: pacs, CallingAE: "MAINPACS", CalledAE: "CLINA_WS1"})
	if d.String() != "relay clinic-a-ws1" || d.Deidentify != nil {
		t.Errorf("MAINPACS to CLINA_WS1: %q by %q, want relay clinic-a-ws1, not de-identified", d, d.Rule)
	}
}
