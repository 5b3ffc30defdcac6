package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/audit"
)

// writeTLSFailureLog writes a morning of refused certificates: a clinic's
// modality whose certificate expired keeps retrying; a stranger presents a
// certificate that claims the modality's name (with a right-to-left
// override); another clinic's certificate expires soon.
func writeTLSFailureLog(t *testing.T, dir string) string {
	t.Helper()
	file := filepath.Join(dir, "audit", "audit.jsonl")
	tick := auditBase
	w, err := audit.Open(audit.Config{File: file, Now: func() time.Time {
		tick = tick.Add(time.Minute)
		return tick
	}})
	if err != nil {
		t.Fatal(err)
	}
	verified := &audit.Client{CN: "mod1.clinic-a.example.org", Fingerprint: "sha256:0a1b" + strings.Repeat("3", 60), Issuer: "CN=Clinic A CA"}
	expired := &audit.Client{Subject: "CN=mod1.clinic-a.example.org,O=Clinic A", CN: "mod1.clinic-a.example.org", Issuer: "CN=Clinic A CA",
		Serial: "1f", Fingerprint: "sha256:0a1c" + strings.Repeat("2", 60),
		NotBefore: time.Date(2025, 11, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)}
	events := []audit.Event{
		{Event: audit.EventAccepted, Conn: "c1", Assoc: "a1", Remote: "203.0.113.10:50001", Client: verified, CallingAE: "CLINA_CT1", CalledAE: "MAINPACS",
			Rule: "clinic-a", Action: "relay", Backend: "pacs"},
		{Event: audit.EventTLSFailed, Conn: "c2", Remote: "203.0.113.10:50002", Reason: "expired", Client: expired},
		{Event: audit.EventTLSFailed, Conn: "c3", Remote: "203.0.113.10:50003", Reason: "expired", Client: expired},
		{Event: audit.EventTLSFailed, Conn: "c4", Remote: "198.51.100.66:4444", Reason: "unknown-ca", Client: &audit.Client{
			Subject: "CN=mod1.clinic-a.example.org\u202e", CN: "mod1.clinic-a.example.org\u202e", Fingerprint: "sha256:66" + strings.Repeat("0", 62),
			Issuer: "CN=mod1.clinic-a.example.org", Serial: "1"}},
		{Event: audit.EventTLSFailed, Conn: "c5", Remote: "198.51.100.67:4444", Reason: "not-tls"},
		{Event: audit.EventTLSExpiring, Conn: "c6", Remote: "192.0.2.4:1235", Client: &audit.Client{URI: []string{"spiffe://example.org/clinic-b/echo"},
			Fingerprint: "sha256:ec" + strings.Repeat("1", 62), NotAfter: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
			Detail: "5 days left: the client certificate expires at 2026-12-01T00:00:00Z (tls.warn_expiry 14d)"},
	}
	for _, e := range events {
		if !w.Log(e) {
			t.Fatal("Log refused")
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return file
}

// `dicomedge audit` and `audit summary` name the certificate a refused
// client presented, marked unverified, and summarise failures per
// certificate, so one clinic's expired certificate reads apart from a
// stranger using its name.
func TestAuditShowsPresentedCertificates(t *testing.T) {
	file := writeTLSFailureLog(t, t.TempDir())
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"tlsfailed_table", nil},
		{"tlsfailed_client", []string{"--client", "mod1.clinic-a.example.org"}},
		{"tlsfailed_fingerprint", []string{"--client", "sha256:0a1c*"}},
		{"tlsfailed_summary", []string{"summary"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runAudit(t, append(tc.args, "--file", file)...)
			if code != 0 || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			golden(t, tc.name, out)
		})
	}
	code, out, _ := runAudit(t, "summary", "--file", file)
	if code != 0 || !strings.Contains(out, "TLS failures by presented certificate") ||
		!strings.Contains(out, "mod1.clinic-a.example.org (unverified) [203.0.113.10]") || strings.Contains(out, "\u202e") {
		t.Fatalf("summary does not name the presented certificates, or shows a raw override:\n%s", out)
	}
}
