package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/internal/testpeer"
	"github.com/dicomedge/dicomedge/policy"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

var auditBase = time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)

// writeFixtureLog writes a realistic day of events with the real writer and
// a clock that advances one minute per record, and returns the file.
func writeFixtureLog(t *testing.T, dir string) string {
	t.Helper()
	file := filepath.Join(dir, "audit", "audit.jsonl")
	tick := auditBase
	w, err := audit.Open(audit.Config{File: file, PatientIDs: "plain", Now: func() time.Time {
		tick = tick.Add(time.Minute)
		return tick
	}})
	if err != nil {
		t.Fatal(err)
	}
	modA := &audit.Client{CN: "mod1.clinic-a.example.org", DNS: []string{"mod1.clinic-a.example.org"}, Fingerprint: "sha256:0a1b", Issuer: "CN=Clinic A CA"}
	rogue := &audit.Client{CN: "rogue.example.net", Fingerprint: "sha256:ffee"}
	echo := &audit.Client{URI: []string{"spiffe://example.org/clinic-b/echo"}}
	events := []audit.Event{
		{Event: audit.EventTLSFailed, Conn: "c0", Remote: "203.0.113.9:50000", Reason: "unknown-ca"},
		{Event: audit.EventAccepted, Conn: "c1", Assoc: "a1", Remote: "203.0.113.10:50001", Client: modA, CallingAE: "CLINA_CT1", CalledAE: "MAINPACS",
			Rule: "clinic-a-modalities", Action: "relay", Backend: "pacs", Contexts: []string{"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.1"}},
		{Event: audit.EventDIMSE, Conn: "c1", Assoc: "a1", Service: "C-STORE", SOPClass: "1.2.840.10008.5.1.4.1.1.2", SOPInstance: "1.2.3.4.1",
			MessageID: 1, Status: "0x0000", PatientID: w.PatientID("PAT001"), Bytes: 524288, MS: 12, Allowed: audit.Bool(true)},
		{Event: audit.EventDIMSE, Conn: "c1", Assoc: "a1", Service: "C-STORE", SOPClass: "1.2.840.10008.5.1.4.1.1.2", SOPInstance: "1.2.3.4.2",
			MessageID: 2, Status: "0x0000", PatientID: w.PatientID("PAT001"), Bytes: 524288, MS: 11, Allowed: audit.Bool(true)},
		{Event: audit.EventDIMSE, Conn: "c1", Assoc: "a1", Service: "C-MOVE", MessageID: 3, Status: "0x0124", MoveDestination: "EVIL", Allowed: audit.Bool(false)},
		{Event: audit.EventReleased, Conn: "c1", Assoc: "a1", BytesIn: 1050000, BytesOut: 2048, MS: 180},
		{Event: audit.EventRejected, Conn: "c2", Assoc: "a2", Remote: "198.51.100.7:40000", Client: rogue, CallingAE: "UNKNOWN\x1b[31m", CalledAE: "MAINPACS",
			Result: 1, Source: 1, ReasonCode: 3, Reason: "calling-ae-not-recognized"},
		{Event: audit.EventAccepted, Conn: "c3", Assoc: "a3", Remote: "192.0.2.4:1234", Client: echo, CallingAE: "CLINB", CalledAE: "DICOMEDGE", Rule: "echo", Action: "answer",
			Contexts: []string{"1.2.840.10008.1.1"}, UserIdentity: &audit.UserIdentity{Type: "username", User: "tech1"}},
		{Event: audit.EventDIMSE, Conn: "c3", Assoc: "a3", Service: "C-ECHO", MessageID: 1, Status: "0x0000", Allowed: audit.Bool(true)},
		{Event: audit.EventAborted, Conn: "c3", Assoc: "a3", AbortSource: "service-provider", AbortReason: "unexpected-pdu", BytesIn: 200, BytesOut: 190},
		{Event: audit.EventPolicyReloaded, Detail: "policy.hcl: 3 rules"},
		{Event: audit.EventCertRenewed, Detail: "edge.example.org until 2027-02-23"},
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

func runAudit(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(append([]string{"audit"}, args...), &o, &e)
	return code, o.String(), e.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "audit", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if got != string(want) {
		t.Fatalf("output differs from %s:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestAuditCLI(t *testing.T) {
	dir := t.TempDir()
	file := writeFixtureLog(t, dir)
	auditNow = func() time.Time { return auditBase.Add(10*time.Minute + 30*time.Second) }
	t.Cleanup(func() { auditNow = time.Now })

	cases := []struct {
		name string
		args []string
	}{
		{"table", nil},
		{"client", []string{"--client", "mod1.*"}},
		{"client_by_uri_san", []string{"--client", "spiffe://example.org/clinic-b/*"}},
		{"client_by_ip", []string{"--client", "203.0.113.*"}},
		{"calling_ae", []string{"--calling-ae", "clina_*"}},
		{"called_ae", []string{"--called-ae", "DICOMEDGE"}},
		{"decision_reject", []string{"--decision", "reject"}},
		{"decision_refuse", []string{"--decision", "refused"}},
		{"event_glob", []string{"--event", "association.*"}},
		{"since_duration", []string{"--since", "3m"}},
		{"time_window", []string{"--since", "2026-11-25T08:03:00Z", "--until", "2026-11-25 08:05"}},
		{"summary", []string{"summary"}},
		{"summary_client", []string{"summary", "--client", "mod1.clinic-a.example.org"}},
		{"summary_empty", []string{"summary", "--event", "nothing"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runAudit(t, append(tc.args, "--file", file)...)
			if code != 0 || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			golden(t, tc.name, out)
		})
	}
}

func TestAuditJSONPrintsTheRawLines(t *testing.T) {
	file := writeFixtureLog(t, t.TempDir())
	raw, _ := os.ReadFile(file)
	code, out, errOut := runAudit(t, "--file", file, "--json", "--event", "dimse")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("got %d dimse lines; want 4:\n%s", len(lines), out)
	}
	for _, l := range lines {
		if !strings.Contains(string(raw), l+"\n") || !strings.Contains(l, `"event":"dimse"`) {
			t.Fatalf("line is not a raw dimse line of the log: %s", l)
		}
	}
}

func TestAuditVerifyExitCodes(t *testing.T) {
	cases := []struct {
		name     string
		tamper   func(t *testing.T, file string)
		wantCode int
		wantOut  string // in stdout (ok) or stderr (broken); $F is the file
	}{
		{"intact", func(*testing.T, string) {}, 0, "ok: 12 records in 1 file(s), hash chain intact"},
		{"edited", func(t *testing.T, f string) {
			replaceIn(t, f, `"status":"0x0124"`, `"status":"0x0000"`)
		}, 1, "$F:6: seq 6: prev does not match the hash of the previous line: the previous record ($F:5 seq 5) was altered"},
		{"line deleted", func(t *testing.T, f string) { replaceIn(t, f, lineOf(t, f, 3), "") }, 1, "$F:3: seq 3: has seq 4, expected 3"},
		{"truncated", func(t *testing.T, f string) {
			b, _ := os.ReadFile(f)
			os.WriteFile(f, b[:len(b)-40], 0o600)
		}, 1, "$F:12: seq 12: incomplete last record"},
		// Without the head sidecar, records cut from the end cannot be ruled
		// out: a failure, unless --allow-missing-anchor (a copy taken
		// without it), which warns on stderr (below).
		{"head anchor missing", func(t *testing.T, f string) {
			if err := os.Remove(f + ".head"); err != nil {
				t.Fatal(err)
			}
		}, 1, "$F.head: missing"},
		{"records cut and head anchor deleted", func(t *testing.T, f string) {
			replaceIn(t, f, lineOf(t, f, 12), "")
			replaceIn(t, f, lineOf(t, f, 11), "")
			replaceIn(t, f, lineOf(t, f, 10), "")
			os.Remove(f + ".head")
		}, 1, "$F.head: missing"},
		{"head anchor missing, --allow-missing-anchor", func(t *testing.T, f string) {
			os.Remove(f + ".head")
		}, 0, "ok: 12 records in 1 file(s), hash chain intact"},
		{"head anchor missing and edited", func(t *testing.T, f string) {
			os.Remove(f + ".head")
			replaceIn(t, f, `"status":"0x0124"`, `"status":"0x0000"`)
		}, 1, "$F:6: seq 6: prev does not match"},
		{"last record cut with head kept", func(t *testing.T, f string) { replaceIn(t, f, lineOf(t, f, 12), "") }, 1,
			"truncated: the chain ends at seq 11 but $F.head records seq 12"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file := writeFixtureLog(t, dir)
			tc.tamper(t, file)
			args := []string{"verify", "--file", file}
			if strings.HasSuffix(tc.name, "--allow-missing-anchor") {
				args = append(args, "--allow-missing-anchor")
			}
			code, out, errOut := runAudit(t, args...)
			want := strings.ReplaceAll(tc.wantOut, "$F", file)
			got := out
			if tc.wantCode != 0 {
				got = errOut
			}
			if code != tc.wantCode || !strings.Contains(got, want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d with %q", code, out, errOut, tc.wantCode, want)
			}
			if _, err := os.Stat(file + ".head"); os.IsNotExist(err) && tc.wantCode == 0 &&
				!strings.Contains(errOut, "warning: "+file+".head: missing") {
				t.Errorf("no warning about the missing head anchor on stderr: %q", errOut)
			}
		})
	}
}

func replaceIn(t *testing.T, file, old, new string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil || !bytes.Contains(b, []byte(old)) {
		t.Fatalf("cannot find %q in %s: %v", old, file, err)
	}
	os.WriteFile(file, bytes.Replace(b, []byte(old), []byte(new), 1), 0o600)
}

func lineOf(t *testing.T, file string, n int) string {
	t.Helper()
	b, _ := os.ReadFile(file)
	return strings.SplitAfter(string(b), "\n")[n-1]
}

func TestAuditShowsRecordsAroundATornLine(t *testing.T) {
	file := writeFixtureLog(t, t.TempDir())
	replaceIn(t, file, lineOf(t, file, 4), `{"time":"2026-11-25T08:04:00.000000000Z","event":"dim`+"\n")
	code, out, errOut := runAudit(t, "--file", file, "--json")
	if code != 0 || strings.Count(out, "\n") != 11 || !strings.Contains(errOut, "warning: skipped 1 line(s) that are not audit records, first "+file+":4:") {
		t.Fatalf("exit %d, %d lines, stderr %q", code, strings.Count(out, "\n"), errOut)
	}
	code, _, errOut = runAudit(t, "verify", "--file", file)
	if code != 1 || !strings.Contains(errOut, file+":4: seq 4: not a JSON record") {
		t.Fatalf("verify: exit %d, stderr %q", code, errOut)
	}
}

func TestAuditConfigNamesTheFile(t *testing.T) {
	dir := t.TempDir()
	writeFixtureLog(t, dir) // dir/audit/audit.jsonl
	cfg := filepath.Join(dir, "policy.hcl")
	os.WriteFile(cfg, []byte(`
edge { listen = ":2762" }
audit {
  file        = "audit/audit.jsonl"
  patient_ids = "hash"
  syslog { address = "siem:6514" }
}
rule "deny" {
  reject { reason = "no-reason" }
}
`), 0o600)
	code, out, errOut := runAudit(t, "verify", "--config", cfg)
	if code != 0 || !strings.Contains(out, "ok: 12 records") {
		t.Fatalf("verify --config: exit %d %q %q", code, out, errOut)
	}
	code, out, _ = runAudit(t, "summary", "--config", cfg)
	if code != 0 || !strings.HasPrefix(out, "12 records") {
		t.Fatalf("summary --config: exit %d %q", code, out)
	}
}

// TestAuditFindsTheLogServeWrites holds auditFileFromConfig to the policy
// loader's answer (the file serve opens) for every way audit.file can be
// written, and runs the three audit commands with no flags from the policy's
// directory, as README.md describes for the bundled policy.hcl.
func TestAuditFindsTheLogServeWrites(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, audit string }{
		{"no audit block", ""},
		{"audit block without file", "audit {}"},
		{"relative", `audit { file = "var/audit/audit.jsonl" }`},
		{"relative, up", `audit { file = "../logs/a.jsonl" }`},
		{"absolute", `audit { file = "/var/lib/dicomedge/audit/audit.jsonl" }`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "etc", "policy.hcl")
			src := `
tls {
  client_ca = ["ca.pem"]
  cert_file = "edge.pem"
  key_file  = "edge-key.pem"
}
` + tc.audit + "\n"
			os.MkdirAll(filepath.Dir(path), 0o755)
			if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, diags := policy.Load(path, []byte(src))
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			got, err := auditFileFromConfig(path)
			if err != nil || got != cfg.Audit.File {
				t.Fatalf("audit reads %q (%v), serve writes %q", got, err, cfg.Audit.File)
			}
		})
	}

	// The bundled layout: policy.hcl naming var/audit/audit.jsonl, the
	// commands run in its directory with no flags.
	writeFixtureLog(t, filepath.Join(dir, "var")) // dir/var/audit/audit.jsonl
	if err := os.WriteFile(filepath.Join(dir, "policy.hcl"), []byte(`audit { file = "var/audit/audit.jsonl" }`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	if code, out, errOut := runAudit(t, "--json"); code != 0 || strings.Count(out, "\n") != 12 {
		t.Errorf("audit: exit %d, %d lines\n%s", code, strings.Count(out, "\n"), errOut)
	}
	if code, out, errOut := runAudit(t, "summary"); code != 0 || !strings.HasPrefix(out, "12 records") {
		t.Errorf("audit summary: exit %d %q %q", code, out, errOut)
	}
	if code, out, errOut := runAudit(t, "verify"); code != 0 || !strings.Contains(out, "ok: 12 records") {
		t.Errorf("audit verify: exit %d %q %q", code, out, errOut)
	}
	// From elsewhere, --config names the policy and its directory anchors the path.
	t.Chdir(t.TempDir())
	if code, out, errOut := runAudit(t, "verify", "--config", filepath.Join(dir, "policy.hcl")); code != 0 || !strings.Contains(out, "ok: 12 records") {
		t.Errorf("audit verify --config: exit %d %q %q", code, out, errOut)
	}
	// No policy.hcl here and no --file: say how to name the log.
	if code, _, errOut := runAudit(t, "verify"); code != 2 || !strings.Contains(errOut, "policy.hcl") || !strings.Contains(errOut, "--file") {
		t.Errorf("audit verify without a policy: exit %d %q, want 2 naming policy.hcl and --file", code, errOut)
	}
}

func TestAuditErrors(t *testing.T) {
	dir := t.TempDir()
	file := writeFixtureLog(t, dir)
	bad := filepath.Join(dir, "bad.hcl")
	os.WriteFile(bad, []byte("audit { file = 3 + }\n"), 0o600)
	nonString := filepath.Join(dir, "nonstring.hcl")
	os.WriteFile(nonString, []byte("audit { file = [\"a\"] }\n"), 0o600)
	cases := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"bad since", []string{"--file", file, "--since", "yesterday"}, 2, "--since"},
		{"missing file", []string{"--file", filepath.Join(dir, "nope.jsonl")}, 1, "no such file"},
		{"verify missing file", []string{"verify", "--file", filepath.Join(dir, "nope.jsonl")}, 1, "no such file"},
		{"bad config", []string{"--config", bad}, 2, "bad.hcl:1"},
		{"non-string file", []string{"--config", nonString}, 2, "audit.file must be a string"},
		{"file and config", []string{"--file", file, "--config", bad}, 1, "none of the others can be"},
		{"argument", []string{"--file", file, "extra"}, 1, "unknown command"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runAudit(t, tc.args...)
			if code != tc.wantCode || !strings.Contains(errOut, tc.wantErr) {
				t.Fatalf("exit %d, stderr %q; want exit %d containing %q", code, errOut, tc.wantCode, tc.wantErr)
			}
		})
	}
}

func TestAuditFollowPrintsNewRecords(t *testing.T) {
	dir := t.TempDir()
	file := writeFixtureLog(t, dir)
	followPoll = 10 * time.Millisecond
	t.Cleanup(func() { followPoll = 250 * time.Millisecond })

	ctx, cancel := context.WithCancel(context.Background())
	var out testpeer.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- followLog(ctx, file, audit.Filter{Event: "cert.*"}, false, &out) }()

	w, err := audit.Open(audit.Config{File: file, RotateSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 { // enough to rotate a few times while following
		w.Log(audit.Event{Event: audit.EventCertRenewed, Detail: "renewal " + strings.Repeat("x", i%3) + time.Duration(i).String()})
	}
	w.Close()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(out.String(), "cert.renewed") < 31 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if n := strings.Count(got, "cert.renewed"); n != 31 || !strings.HasPrefix(got, "TIME") {
		t.Fatalf("follow printed %d cert.renewed rows; want 31 (1 old + 30 new):\n%s", n, got)
	}
	if len(audit.Files(file)) < 2 {
		t.Fatal("the log did not rotate; the test does not exercise following a rotation")
	}
	// In order: renewal 0ns ... renewal 29ns.
	last := -1
	for _, l := range strings.Split(got, "\n") {
		var i int
		if k := strings.Index(l, "renewal "); k >= 0 {
			s := strings.TrimLeft(strings.Fields(l[k+len("renewal "):])[0], "x")
			d, _ := time.ParseDuration(s)
			i = int(d)
			if i <= last && last >= 0 {
				t.Fatalf("out of order at %q:\n%s", l, got)
			}
			last = i
		}
	}
}

func TestParseWhenDurations(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	old := auditNow
	auditNow = func() time.Time { return now }
	t.Cleanup(func() { auditNow = old })
	cases := []struct {
		name, in string
		want     time.Time
		bad      bool
	}{
		{"hours", "24h", now.Add(-24 * time.Hour), false},
		{"minutes and seconds", "1m30s", now.Add(-90 * time.Second), false},
		{"days", "7d", now.Add(-7 * 24 * time.Hour), false},
		{"days and hours", "1d12h", now.Add(-36 * time.Hour), false},
		{"RFC 3339", "2026-11-24T08:00:00Z", time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC), false},
		{"date only", "2026-11-24", time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC), false},
		{"no day count", "d", time.Time{}, true},
		{"fractional days", "1.5d", time.Time{}, true},
		{"signed days", "+2d", time.Time{}, true},
		{"days then garbage", "2dx", time.Time{}, true},
		{"days then negative", "2d-1h", time.Time{}, true},
		{"huge day count", "99999999999d", time.Time{}, true},
		{"days plus hours overflow", "65535d2562047h", time.Time{}, true},
		{"word", "yesterday", time.Time{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseWhen(tc.in)
			if tc.bad {
				if err == nil {
					t.Fatalf("parseWhen(%q) = %v, want an error", tc.in, got)
				}
				return
			}
			if err != nil || !got.Equal(tc.want) {
				t.Fatalf("parseWhen(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}

// FuzzParseWhen: --since/--until text never panics, and a duration (days
// included) never lands after now.
func FuzzParseWhen(f *testing.F) {
	for _, s := range []string{"24h", "7d", "1d12h", "2d-1h", "d", "99999999999d", "2026-11-24", "2026-11-24T08:00:00Z", "1.5d", "+2d", "0d", "-1h"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	old := auditNow
	auditNow = func() time.Time { return now }
	f.Cleanup(func() { auditNow = old })
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseWhen(s)
		if err != nil {
			return
		}
		if d, derr := parseDuration(s); derr == nil && d >= 0 && got.After(now) {
			t.Fatalf("parseWhen(%q) = %v, after now for a non-negative duration", s, got)
		}
	})
}

// Records carry the listener; --listener selects by it and summary counts
// by it. The association's later records inherit it from the first.
func TestAuditListener(t *testing.T) {
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	tick := auditBase
	w, err := audit.Open(audit.Config{File: file, Now: func() time.Time { tick = tick.Add(time.Minute); return tick }})
	if err != nil {
		t.Fatal(err)
	}
	modA := &audit.Client{CN: "mod1.clinic-a.example.org"}
	for _, e := range []audit.Event{
		{Event: audit.EventAccepted, Conn: "c1", Assoc: "a1", Remote: "203.0.113.10:50001", Listener: "edge", Client: modA, CallingAE: "CLINA_CT1", CalledAE: "MAINPACS",
			Rule: "clinic-a", Action: "relay", Backend: "pacs"},
		{Event: audit.EventReleased, Conn: "c1", Assoc: "a1", BytesIn: 100, BytesOut: 10},
		{Event: audit.EventAccepted, Conn: "c2", Assoc: "a2", Remote: "10.0.0.5:40100", Listener: "inside", CallingAE: "MAINPACS", CalledAE: "CLINA_WS1",
			Rule: "pacs-to-clinic-a", Action: "relay", Backend: "clinic-a-ws1"},
		{Event: audit.EventDIMSE, Conn: "c2", Assoc: "a2", Service: "C-STORE", MessageID: 1, Status: "0x0000", Bytes: 4096, Allowed: audit.Bool(true)},
		{Event: audit.EventReleased, Conn: "c2", Assoc: "a2", BytesIn: 5000, BytesOut: 300},
		{Event: audit.EventRejected, Conn: "c3", Assoc: "a3", Remote: "10.0.0.6:40200", Listener: "inside", CallingAE: "OTHER", CalledAE: "CLINA_WS1",
			Result: 1, Source: 1, ReasonCode: 3, Reason: "calling-ae-not-recognized"},
	} {
		w.Log(e)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(file)
	if n := strings.Count(string(raw), `"listener":"inside"`); n != 2 {
		t.Errorf("%d records written with listener inside, want 2:\n%s", n, raw)
	}
	code, out, errOut := runAudit(t, "--file", file, "--listener", "inside")
	if code != 0 || strings.Count(out, "\n") != 5 || strings.Contains(out, "CLINA_CT1") || !strings.Contains(out, "C-STORE") {
		t.Errorf("--listener inside: exit %d, stderr %q, want the header and four records of the inside listener:\n%s", code, errOut, out)
	}
	code, out, _ = runAudit(t, "summary", "--file", file)
	if code != 0 {
		t.Fatalf("summary: exit %d", code)
	}
	_, section, _ := strings.Cut(out, "By listener:\n")
	section, _, _ = strings.Cut(section, "\n\n")
	lines := strings.Split(section, "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[1]), " ") != "inside 1 1 1 0 4.9 KiB 300 B" ||
		strings.Join(strings.Fields(lines[2]), " ") != "edge 1 0 0 0 100 B 10 B" {
		t.Errorf("summary by listener:\n%s\n(whole output:\n%s)", section, out)
	}
}
