package policy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestDeidentifyBlock(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "deid.key"), []byte(strings.Repeat("k", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "short.key"), []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := minimalTLS + `
backend "vendor" {
  address  = "127.0.0.1:104"
  ae_title = "VENDOR"
}
deidentify "ai" {
  options  = ["retain-modified-dates", "clean-descriptors"]
  key_file = "deid.key"
  keep     = ["(0008,0060)", "Modality", "0008,0070"]
  replace  = { "(0010,0010)" = "ANONYMOUS" }
}
rule "out" {
  when { called_ae = ["VENDOR"] }
  relay {
    backend    = "vendor"
    services   = ["C-ECHO", "C-STORE"]
    deidentify = "ai"
  }
}
`
	cfg, diags := Load(filepath.Join(dir, "policy.hcl"), []byte(src))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	d := cfg.Deidentify["ai"]
	if d == nil || d.Profile == nil || !d.Profile.HasOption("clean-descriptors") {
		t.Fatalf("%+v", d)
	}

	bad := minimalTLS + `
backend "vendor" {
  address  = "127.0.0.1:104"
  ae_title = "VENDOR"
}
deidentify "short" {
  key_file = "short.key"
}
deidentify "missing" {
  key_file = "nothere.key"
  options  = ["retain-everything"]
  keep     = ["(0008,006)", "Modalty"]
  burned_in = "maybe"
}
deidentify "nokey" {
}
rule "out" {
  relay {
    backend    = "vendor"
    services   = ["C-ECHO", "C-STORE", "C-FIND"]
    deidentify = "short"
  }
}
rule "all" {
  relay {
    backend    = "vendor"
    deidentify = "unknown"
  }
}
`
	_, diags = Load(filepath.Join(dir, "policy.hcl"), []byte(bad))
	got := diagKeys(diags)
	want := []string{
		"13:14 error: Key too short",
		"16:14 error: Unreadable key file",
		"17:15 error: Unknown deidentify \"missing\" options",
		"18:15 error: Unknown attribute",
		"18:29 error: Unknown attribute",
		"19:15 error: Unknown deidentify \"missing\" burned_in",
		"21:1 error: Missing key_file",
		"26:18 error: Service not allowed with deidentify",
		"33:18 error: Unknown deidentify block",
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("no diagnostic at %s; got:\n%s", w, strings.Join(got, "\n"))
		}
	}
}
