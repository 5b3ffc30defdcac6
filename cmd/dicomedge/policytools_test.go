package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/audit"
)

const toolData = "../../policytool/testdata/"

// goldenAt compares got with the golden file testdata/policytool/name
// (rewritten with -update).
func goldenAt(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "policytool", name)
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
		t.Errorf("output differs from %s:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o640); err != nil {
		t.Fatal(err)
	}
}

func readString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestPolicyFmt formats a messy hand-written policy: --check names it and
// changes nothing, fmt rewrites it to the golden layout, and from then on
// --check passes and a second fmt changes nothing.
func TestPolicyFmt(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.hcl")
	copyFile(t, toolData+"messy.hcl", file)
	messy := readString(t, file)

	code, out, errOut := policyRun(t, "policy", "fmt", "--check", file)
	if code != 1 || out != file+"\n" || errOut != "" {
		t.Errorf("fmt --check on a messy file: exit %d, stdout %q, stderr %q; want 1 and the file named", code, out, errOut)
	}
	if readString(t, file) != messy {
		t.Fatal("fmt --check changed the file")
	}

	// No FILE: the --config file is formatted.
	code, out, errOut = policyRun(t, "policy", "fmt", "--config", file)
	if code != 0 || out != file+"\n" || errOut != "" {
		t.Errorf("fmt --config: exit %d, stdout %q, stderr %q; want 0 and the file named", code, out, errOut)
	}
	formatted := readString(t, file)
	goldenAt(t, "messy.fmt.golden", formatted)
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("formatted file mode %v (%v), want the original 0640", st.Mode(), err)
	}

	code, out, errOut = policyRun(t, "policy", "fmt", "--check", file)
	if code != 0 || out != "" || errOut != "" {
		t.Errorf("fmt --check after fmt: exit %d, stdout %q, stderr %q; want 0 and nothing", code, out, errOut)
	}
	code, out, _ = policyRun(t, "policy", "fmt", file)
	if code != 0 || out != "" || readString(t, file) != formatted {
		t.Errorf("second fmt: exit %d, stdout %q, file changed %v; want nothing changed", code, out, readString(t, file) != formatted)
	}

	// A syntax error is located and nothing is written; the other files
	// are still checked.
	broken := filepath.Join(dir, "unclosed.hcl")
	copyFile(t, toolData+"unclosed.hcl", broken)
	before := readString(t, broken)
	code, out, errOut = policyRun(t, "policy", "fmt", "--check", broken, file)
	if code != 2 || out != "" {
		t.Errorf("fmt --check with a syntax error: exit %d, stdout %q; want 2", code, out)
	}
	goldenAt(t, "unclosed.fmt.golden", strings.ReplaceAll(errOut, dir, "DIR"))
	code, _, _ = policyRun(t, "policy", "fmt", broken)
	if code != 2 || readString(t, broken) != before {
		t.Errorf("fmt on a syntax error: exit %d, file changed %v; want 2 and untouched", code, readString(t, broken) != before)
	}

	// A file that parses but whose canonical layout would not (hclwrite
	// joins "0.0. 0" into the malformed number "0.0.0") is refused on its
	// line, and left as it is.
	odd := filepath.Join(dir, "odd.hcl")
	oddSrc := "edge {\n  listen = \"127.0.0.1:2762\"\n}\nx = 0.0. 0\n"
	if err := os.WriteFile(odd, []byte(oddSrc), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = policyRun(t, "policy", "fmt", odd)
	if code != 2 || out != "" || !strings.Contains(errOut, odd+":4:1") || !strings.Contains(errOut, "Cannot be formatted") ||
		readString(t, odd) != oddSrc {
		t.Errorf("fmt on a file hclwrite would break: exit %d, stdout %q, stderr %q, file changed %v; want 2, %s:4:1 and untouched",
			code, out, errOut, readString(t, odd) != oddSrc, odd)
	}

	// Only regular files are read: a device is refused, not read forever.
	code, _, errOut = policyRun(t, "policy", "fmt", "--check", "/dev/zero")
	if code != 2 || !strings.Contains(errOut, "/dev/zero: not a regular file") {
		t.Errorf("fmt --check /dev/zero: exit %d, stderr %q; want 2, not a regular file", code, errOut)
	}

	// FILE - filters standard input to standard output.
	var stdout, stderr bytes.Buffer
	root := newRootCmd(&stdout, &stderr)
	root.SetIn(strings.NewReader(messy))
	root.SetArgs([]string{"policy", "fmt", "-"})
	if err := root.Execute(); err != nil || stdout.String() != formatted {
		t.Errorf("fmt -: %v, stdout:\n%s\nwant the formatted file", err, stdout.String())
	}
}

// The repository's own policy files are kept in canonical layout.
func TestRepoPolicyFormatted(t *testing.T) {
	code, out, errOut := policyRun(t, "policy", "fmt", "--check", "../../policy.hcl", "../../policy.tests.hcl")
	if code != 0 {
		t.Errorf("policy fmt --check: exit %d; not formatted:\n%s%s(run `dicomedge policy fmt FILE`)", code, out, errOut)
	}
}

// TestPolicyTestCLI runs test files through the CLI: cases written for
// v1.hcl pass there and fail on the edited v2.hcl with messages naming what
// differed; a test file with misspelt attributes and bad values is located
// file:line:col; the bundled policy.hcl passes its policy.tests.hcl.
func TestPolicyTestCLI(t *testing.T) {
	cases := []struct {
		name, config, tests string
		code                int
		golden              string // of stdout and stderr
	}{
		{"v1 passes", toolData + "v1.hcl", toolData + "cases.tests.hcl", 0, "test-v1.golden"},
		{"v2 fails", toolData + "v2.hcl", toolData + "cases.tests.hcl", 1, "test-v2.golden"},
		{"misspelt test file", toolData + "v1.hcl", toolData + "misspelt.tests.hcl", 2, "test-misspelt.golden"},
		{"invalid policy", "../../policy/testdata/broken.hcl", toolData + "cases.tests.hcl", 2, ""},
		{"bundled policy", "../../policy.hcl", "../../policy.tests.hcl", 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := policyRun(t, "policy", "test", "--config", tc.config, tc.tests)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errOut)
			}
			if tc.golden != "" {
				goldenAt(t, tc.golden, "--- stdout\n"+out+"--- stderr\n"+errOut)
			}
			if tc.name == "bundled policy" && (strings.Contains(out, "FAIL") || !strings.Contains(out, ": 6 passed, 0 failed")) {
				t.Errorf("policy.tests.hcl on policy.hcl:\n%s", out)
			}
		})
	}
}

var replayBase = time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)

// writeReplayLog writes, with the real writer (rotating every few records,
// so that replay reads rotated files too), the traffic a day under
// policytool/testdata/v1.hcl could have produced: every association record
// is what v1 decides, so replaying with v1 changes nothing.
func writeReplayLog(t *testing.T, dir string) string {
	t.Helper()
	file := filepath.Join(dir, "audit", "audit.jsonl")
	tick := replayBase
	w, err := audit.Open(audit.Config{File: file, PatientIDs: "omit", RotateSize: 2048, Now: func() time.Time {
		tick = tick.Add(time.Minute)
		return tick
	}})
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := &audit.Client{CN: "modality.elsewhere.net", Fingerprint: "sha256:0a"}
	ct1 := &audit.Client{CN: "ct1.clinic-a.example.org", DNS: []string{"ct1.clinic-a.example.org"}, Fingerprint: "sha256:0b"}
	ct2 := &audit.Client{CN: "ct2.clinic-a.example.org", Fingerprint: "sha256:0c"}
	stats := &audit.Client{CN: "stats.research.example.org", Fingerprint: "sha256:0d"}
	ws := &audit.Client{Subject: "CN=ws1.other.example.org,O=Other", CN: "ws1.other.example.org"}
	const ct, move, find = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.2.2.2", "1.2.840.10008.5.1.4.1.2.2.1"
	events := []audit.Event{
		{Event: audit.EventTLSFailed, Conn: "c0", Remote: "203.0.113.9:50000", Reason: "unknown-ca"},
		// v2's echo rule wants a client under example.org.
		{Event: audit.EventAccepted, Conn: "c1", Assoc: "a1", Remote: "192.0.2.1:1001", Client: elsewhere, CallingAE: "ANY", CalledAE: "DICOMEDGE", Rule: "echo", Action: "answer"},
		{Event: audit.EventDIMSE, Conn: "c1", Assoc: "a1", Service: "C-ECHO", SOPClass: "1.2.840.10008.1.1", MessageID: 1, Status: "0x0000", Allowed: audit.Bool(true)},
		{Event: audit.EventReleased, Conn: "c1", Assoc: "a1"},
		// v2 takes C-MOVE from clinic-a: the allowed move changes, the refused one does not.
		{Event: audit.EventAccepted, Conn: "c2", Assoc: "a2", Remote: "203.0.113.7:1002", Client: ct1, CallingAE: "CLINA_CT1", CalledAE: "MAINPACS", Rule: "clinic-a", Action: "relay", Backend: "pacs"},
		{Event: audit.EventDIMSE, Conn: "c2", Assoc: "a2", Service: "C-STORE", SOPClass: ct, MessageID: 1, Status: "0x0000", Allowed: audit.Bool(true), Bytes: 4096},
		{Event: audit.EventDIMSE, Conn: "c2", Assoc: "a2", Service: "C-MOVE", SOPClass: move, MoveDestination: "CLINA_WS1", MessageID: 2, Status: "0x0000", Allowed: audit.Bool(true)},
		{Event: audit.EventDIMSE, Conn: "c2", Assoc: "a2", Service: "C-MOVE", SOPClass: move, MoveDestination: "EVIL", MessageID: 3, Status: "0x0124", Allowed: audit.Bool(false)},
		{Event: audit.EventReleased, Conn: "c2", Assoc: "a2"},
		// v2 drops clinic-a's source_cidr: the reject from outside becomes a relay.
		{Event: audit.EventRejected, Conn: "c3", Assoc: "a3", Remote: "198.51.100.7:1003", Client: ct1, CallingAE: "CLINA_CT1", CalledAE: "MAINPACS", Rule: "deny",
			Result: 1, Source: 1, ReasonCode: 3, Reason: "calling-ae-not-recognized"},
		// v2 sends research to pacs; the C-GET sub-operation is the backend's, not judged.
		{Event: audit.EventAccepted, Conn: "c4", Assoc: "a4", Remote: "192.0.2.9:1004", Client: stats, CallingAE: "RESEARCH", CalledAE: "ARCHIVE", Rule: "research", Action: "relay", Backend: "archive"},
		{Event: audit.EventDIMSE, Conn: "c4", Assoc: "a4", Service: "C-FIND", SOPClass: find, MessageID: 1, Status: "0x0000", Allowed: audit.Bool(true)},
		{Event: audit.EventDIMSE, Conn: "c4", Assoc: "a4", Service: "C-STORE", SOPClass: ct, MessageID: 7, Status: "0x0000", Allowed: audit.Bool(true), Detail: "C-GET sub-operation of message 2"},
		{Event: audit.EventAborted, Conn: "c4", Assoc: "a4", AbortSource: "service-user"},
		// v2's busy rule rejects with another reason.
		{Event: audit.EventRejected, Conn: "c5", Assoc: "a5", Remote: "198.51.100.1:1005", Client: ws, CallingAE: "OTHER_WS1", CalledAE: "LATER", Rule: "busy",
			Result: 2, Source: 1, ReasonCode: 7, Reason: "called-ae-not-recognized"},
		// The rule relayed, the backend was down: the same under v2.
		{Event: audit.EventRejected, Conn: "c6", Assoc: "a6", Remote: "203.0.113.8:1006", Client: ct2, CallingAE: "CLINA_CT2", CalledAE: "MAINPACS", Rule: "clinic-a", Action: "relay", Backend: "pacs",
			Result: 2, Source: 3, ReasonCode: 1, Reason: "backend-unreachable"},
		// The way out, on the plain listener: no certificate, the same under v2.
		{Event: audit.EventAccepted, Conn: "c7", Assoc: "a7", Remote: "10.0.0.5:1007", Listener: "inside", CallingAE: "MAINPACS", CalledAE: "CLINA_WS1", Rule: "pacs-out", Action: "relay", Backend: "clinic-a-ws1"},
		{Event: audit.EventDIMSE, Conn: "c7", Assoc: "a7", Listener: "inside", Service: "C-STORE", SOPClass: ct, MessageID: 1, Status: "0x0000", Allowed: audit.Bool(true)},
		{Event: audit.EventReleased, Conn: "c7", Assoc: "a7", Listener: "inside"},
		// Not decided again: a listener neither policy has, a record without the client.
		{Event: audit.EventAccepted, Conn: "c10", Assoc: "a10", Remote: "192.0.2.7:1010", Listener: "dmz", CallingAE: "MAINPACS", CalledAE: "CLINA_WS1", Rule: "out", Action: "relay", Backend: "ws1"},
		{Event: audit.EventAccepted, Conn: "c8", Assoc: "a8", Remote: "192.0.2.1:1008", CallingAE: "ANY", CalledAE: "DICOMEDGE", Rule: "echo", Action: "answer"},
		// A crafted AE title is shown escaped.
		{Event: audit.EventRejected, Conn: "c9", Assoc: "a9", Remote: "192.0.2.66:1009", Client: elsewhere, CallingAE: "CLINA_X\x1b[2K", CalledAE: "LATER", Rule: "busy",
			Result: 2, Source: 1, ReasonCode: 7, Reason: "called-ae-not-recognized"},
	}
	for _, e := range events {
		if !w.Log(e) {
			t.Fatal("Log refused")
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(audit.Files(file)); n < 3 {
		t.Fatalf("the fixture log has %d files; want it rotated", n)
	}
	return file
}

// TestPolicyReplayCLI replays the fixture log: under the policy it was made
// with nothing changes; under v2.hcl exactly the associations and requests
// its edits touch are listed, with old and new rules.
func TestPolicyReplayCLI(t *testing.T) {
	file := writeReplayLog(t, t.TempDir())
	auditNow = func() time.Time { return replayBase.Add(time.Hour) }
	t.Cleanup(func() { auditNow = time.Now })
	cases := []struct {
		name   string
		args   []string
		code   int
		golden string
	}{
		{"v1 changes nothing", []string{"--config", toolData + "v1.hcl"}, 0, "replay-v1.golden"},
		{"v2", []string{"--config", toolData + "v2.hcl"}, 0, "replay-v2.golden"},
		{"v2 exit code", []string{"--config", toolData + "v2.hcl", "--exit-code"}, 1, ""},
		{"v1 exit code", []string{"--config", toolData + "v1.hcl", "--exit-code"}, 0, ""},
		{"v2 since", []string{"--config", toolData + "v2.hcl", "--since", "2026-11-25T08:05:00Z", "--until", "49m"}, 0, "replay-v2-window.golden"},
		{"bad since", []string{"--config", toolData + "v2.hcl", "--since", "yesterday"}, 2, ""},
		{"invalid policy", []string{"--config", "../../policy/testdata/broken.hcl"}, 2, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"policy", "replay", "--audit", file}, tc.args...)
			code, out, errOut := policyRun(t, args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errOut)
			}
			if tc.golden != "" {
				goldenAt(t, tc.golden, out)
			}
		})
	}
}
