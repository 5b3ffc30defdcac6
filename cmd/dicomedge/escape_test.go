package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/dicomedge/dicomedge/audit"
)

// A right-to-left override in a CN and C1 controls (U+0085 NEL, U+009B
// CSI) in a client-chosen UID appear neither in the file nor in any view:
// the line holds \uXXXX, and the table, --json and summary show that.
func TestAuditEscapesControlAndBidi(t *testing.T) {
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	w, err := audit.Open(audit.Config{File: file, PatientIDs: "plain"})
	if err != nil {
		t.Fatal(err)
	}
	client := &audit.Client{CN: "exe.\u202egnp-modality", Fingerprint: "sha256:ab"}
	w.Log(audit.Event{Event: audit.EventAccepted, Client: client, CallingAE: "CT\u009b1", CalledAE: "MAINPACS", Rule: "r", Action: "answer"})
	w.Log(audit.Event{Event: audit.EventDIMSE, Client: client, CallingAE: "CT1", CalledAE: "MAINPACS", Service: "C-STORE",
		SOPClass: "1.2.840.10008.5.1.4.1.1.7", SOPInstance: "1.2.3\u0085\u009b2J", Status: "0x0000"})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	raw := []string{"\u202e", "\u0085", "\u009b"}
	check := func(what, out string, want ...string) {
		t.Helper()
		for _, r := range raw {
			if strings.Contains(out, r) {
				t.Errorf("%s shows %U raw:\n%s", what, []rune(r)[0], out)
			}
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("%s lacks %q:\n%s", what, w, out)
			}
		}
	}
	code, out, errOut := runAudit(t, "--file", file)
	if code != 0 {
		t.Fatalf("audit: exit %d %q", code, errOut)
	}
	check("the table", out, `exe.\u202egnp-modality`, `CT\u009b1`)
	code, out, _ = runAudit(t, "--file", file, "--json")
	check("--json", out, `exe.\u202egnp-modality`, `1.2.3\u0085\u009b2J`)
	if code != 0 {
		t.Fatalf("audit --json: exit %d", code)
	}
	code, out, _ = runAudit(t, "summary", "--file", file)
	check("the summary", out, `exe.\u202egnp-modality`)
	if code != 0 {
		t.Fatalf("audit summary: exit %d", code)
	}
	if code, out, errOut := runAudit(t, "verify", "--file", file); code != 0 {
		t.Fatalf("verify: exit %d %q %q", code, out, errOut)
	}
}
