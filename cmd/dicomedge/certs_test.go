package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCertsInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	cases := []struct {
		name      string
		args      []string
		code      int
		created   []string
		kept      []string
		stderrHas string
	}{
		{"first run creates CA, edge and the default client",
			[]string{"certs", "init", "--dir", dir, "--host", "edge.example.org"}, 0,
			[]string{"ca.pem", "ca-key.pem", "edge.pem", "edge-key.pem", "client.pem", "client-key.pem"}, nil, ""},
		{"second run keeps everything",
			[]string{"certs", "init", "--dir", dir}, 0,
			nil, []string{"ca.pem", "ca-key.pem", "edge.pem", "edge-key.pem", "client.pem", "client-key.pem"}, ""},
		{"a new client is added next to the kept files",
			[]string{"certs", "init", "--dir", dir, "--client", "ct1"}, 0,
			[]string{"ct1.pem", "ct1-key.pem"}, []string{"ca.pem", "edge.pem"}, ""},
		{"bad client name fails with status 1",
			[]string{"certs", "init", "--dir", dir, "--client", "../x"}, 1, nil, nil, "client name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tc.args, &stdout, &stderr); code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, stdout.String(), stderr.String())
			}
			for _, f := range tc.created {
				if !strings.Contains(stdout.String(), "created "+filepath.Join(dir, f)+"\n") {
					t.Errorf("stdout does not report created %s:\n%s", f, stdout.String())
				}
			}
			for _, f := range tc.kept {
				if !strings.Contains(stdout.String(), "kept "+filepath.Join(dir, f)+"\n") {
					t.Errorf("stdout does not report kept %s:\n%s", f, stdout.String())
				}
			}
			if tc.stderrHas != "" && !strings.Contains(stderr.String(), tc.stderrHas) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tc.stderrHas)
			}
		})
	}
	fi, err := os.Stat(filepath.Join(dir, "ct1-key.pem"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ct1-key.pem: %v %v", fi, err)
	}
}
