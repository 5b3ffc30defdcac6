package policy

import (
	"io"
	"net/netip"
	"os"
	"testing"
)

// FuzzLoad feeds arbitrary source to the loader: it must never panic, every
// error must come back as a diagnostic, and a file that loads must evaluate
// consistently with its explanation.
func FuzzLoad(f *testing.F) {
	for _, name := range []string{"../policy.hcl", "testdata/many.hcl", "testdata/broken.hcl", "testdata/wayout.hcl", "testdata/listeners-broken.hcl"} {
		src, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	for _, s := range []string{
		``,
		`tls {`,
		minimalTLS + `rule "r" { 
  when { calling_ae = ["*A?"] 
         source_cidr = ["::/0", "0.0.0.0/0"] }
  answer {}
}`,
		minimalTLS + `rule "r" {
  relay { backend = "${x}" }
}`,
		minimalTLS + `edge { max_pdu_length = 1e100 }`,
		minimalTLS + `edge { proxy_protocol = [null, 1, true] }`,
		"rule \"\xff\" {\n reject { reason = \"\\u0000\" }\n}",
		minimalTLS + `audit { syslog { ca = {} } }`,
		`tls {
  client_ca = ["ca.pem"]
  acme {
    domains = ["*.edge.example.org", "edge.example.org."]
    dns {
      rfc2136 {
        server = "[::1]:53"
        key_name = "k."
        key_alg = "hmac-sha512"
        key_secret_file = "testdata/none.key"
        zone = "example.org"
      }
    }
  }
}`,
	} {
		f.Add([]byte(s))
	}
	inputs := []*Input{
		{},
		{CN: "client", CallingAE: "MODALITY1", CalledAE: "DICOMEDGE", SourceIP: netip.MustParseAddr("127.0.0.1")},
		{DNS: []string{"a.ai.vendor.example"}, URI: []string{"spiffe://x"}, Email: []string{"a@b"}, CallingAE: "AI01 ", CalledAE: " MAINPACS",
			SourceIP: netip.MustParseAddr("2001:db8:a::1")},
		{Listener: "inside", CN: "client", CallingAE: "MAINPACS", CalledAE: "CLINA_WS1", SourceIP: netip.MustParseAddr("10.0.0.5")},
		{Listener: "nope", CallingAE: "X", CalledAE: "Y"},
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		cfg, diags := Load("fuzz.hcl", src)
		if cfg == nil {
			t.Fatal("nil Config")
		}
		WriteDiagnostics(io.Discard, diags, cfg.Files)
		if diags.HasErrors() {
			if cfg.Policy != nil {
				t.Fatal("Policy set despite errors")
			}
			return
		}
		if cfg.Policy == nil || cfg.TLS.Profile == "" || len(cfg.TLS.ClientCA) == 0 {
			t.Fatalf("valid config without policy or tls: %+v", cfg)
		}
		for _, in := range inputs {
			d := cfg.Policy.Evaluate(in)
			e := cfg.Policy.Explain(in)
			if d.Rule != e.Decision.Rule || d.String() != e.Decision.String() {
				t.Fatalf("Evaluate %q/%q but Explain %q/%q", d.Rule, d, e.Decision.Rule, e.Decision)
			}
			if d.Action == ActionRelay && d.Backend == nil {
				t.Fatal("relay without backend")
			}
			d.AllowsService("C-STORE")
			d.AllowsSOPClass("1.2.3")
			d.AllowsMoveDestination("X")
		}
	})
}
