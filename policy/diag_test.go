package policy

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := "testdata/" + name
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// TestDiagnosticsGolden loads a file with many different mistakes and checks
// that every one is reported in the same run, at its own position.
func TestDiagnosticsGolden(t *testing.T) {
	cfg, diags := LoadFile("testdata/broken.hcl")
	if !diags.HasErrors() {
		t.Fatal("broken.hcl loaded without errors")
	}
	if cfg.Policy != nil || cfg.Files["testdata/broken.hcl"] == nil {
		t.Errorf("with errors the Config must carry only the sources: %+v", cfg)
	}
	var b strings.Builder
	WriteDiagnostics(&b, diags, cfg.Files)
	golden(t, "broken.golden", b.String())

	// Independently of the golden file: each deliberate mistake, where it is.
	want := []string{
		"4:20 Invalid AE title",              // longer than 16
		"5:20 Invalid address",               // listen without port
		"6:20 Invalid duration",              // "30 seconds"
		"7:20 Value out of range",            // max_pdu_length
		"8:3 Unsupported argument",           // proxy_protocl typo
		"11:1 Missing client_ca",             // tls without client_ca
		"12:15 Unknown TLS profile",          // tls13-only
		"13:3 Missing key_file",              // cert_file alone
		"17:17 Unknown patient_ids mode",     // masked
		"18:17 Unknown on_full mode",         // wait
		"26:9 Duplicate backend name",        // second "pacs"
		"33:20 Invalid CIDR",                 // /33, first element only
		"34:20 Invalid AE title",             // backslash
		"35:19 Unsuitable value type",        // number for a list
		"38:16 Unknown backend",              // "pac"
		"39:28 Unknown DIMSE service",        // C-FETCH, second element
		"45:3 Rule has more than one action", // answer + reject
		"45:21 Unknown reject reason",        // go-away
		"48:1 Rule has no action",            // "nothing"
		"52:6 Duplicate rule name",           // second "clinic-a"
		"53:3 Unsupported argument",          // colour
		"56:18 Unsuitable value type",        // transient = "sometimes"
		"58:3 Unsupported block type",        // audit inside a rule
		"48:6 Unreachable rule (warning)",    // after the catch-all "two-actions"
		"52:6 Unreachable rule (warning)",
	}
	got := map[string]bool{}
	summaries := map[string]bool{}
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
		summaries[d.Summary] = true
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
	if len(summaries) < 8 {
		t.Errorf("only %d different kinds of mistake reported", len(summaries))
	}
}

func TestWriteDiagnosticsFormat(t *testing.T) {
	src := "rule \"x\" {\n\twhen { calling_ae = [\"ÄÖ\", \"TOO_LONG_AE_TITLE_HERE\"] }\n\tanswer {}\n}\n"
	cfg, diags := Load("tab.hcl", []byte(src))
	var b strings.Builder
	WriteDiagnostics(&b, diags, cfg.Files)
	out := b.String()
	for _, want := range []string{
		"tab.hcl:2:23: error: Invalid AE title; when.calling_ae: \"ÄÖ\" contains a non-ASCII character",
		// The caret keeps the tab and counts characters, not bytes.
		"     2 | \twhen { calling_ae = [\"ÄÖ\", \"TOO_LONG_AE_TITLE_HERE\"] }\n       | \t" + strings.Repeat(" ", len(`when { calling_ae = [`)) + "^^^^\n",
		"tab.hcl:2:29: error: Invalid AE title; when.calling_ae: \"TOO_LONG_AE_TITLE_HERE\" is 22 characters long",
		"       | \t" + strings.Repeat(" ", len(`when { calling_ae = ["AO", `)) + strings.Repeat("^", len(`"TOO_LONG_AE_TITLE_HERE"`)) + "\n",
		"error: Missing tls block",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// A diagnostic without a position and without a source still prints.
	b.Reset()
	WriteDiagnostics(&b, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "S", Detail: "line one\n  line two"}}, nil)
	if b.String() != "error: S; line one line two\n" {
		t.Errorf("got %q", b.String())
	}
}
