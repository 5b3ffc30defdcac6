package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
