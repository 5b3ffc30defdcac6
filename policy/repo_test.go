package policy

import (
	"net/netip"
	"os"
	"path/filepath"
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
