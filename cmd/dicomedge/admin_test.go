package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/dicomedge/dicomedge/console/password"
	"github.com/dicomedge/dicomedge/policy"
)

func runWithStdin(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	root := newRootCmd(&stdout, &stderr)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	code := 0
	if err := root.Execute(); err != nil {
		code = 1
		if ee, ok := err.(*exitError); ok {
			code = ee.code
		}
		stderr.WriteString(err.Error())
	}
	return code, stdout.String(), stderr.String()
}

func TestAdminPasswd(t *testing.T) {
	code, out, errOut := runWithStdin(t, "s3cret pw\ns3cret pw\n", "admin", "passwd")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	h := strings.TrimSpace(out)
	p, err := password.Parse(h)
	if err != nil {
		t.Fatalf("printed %q: %v", out, err)
	}
	if !p.Verify("s3cret pw") || p.Verify("s3cret") {
		t.Error("the printed hash does not verify the password read")
	}
	// What it prints goes into a user block as it is.
	cfg, diags := policy.Load("p.hcl", []byte(`
edge { admin_listen = "127.0.0.1:0" }
tls {
  client_ca = ["ca.pem"]
  cert_file = "edge.pem"
  key_file  = "edge-key.pem"
}
admin {
  console {
    user "pacs-admin" {
      password_hash = "`+h+`"
      role = "operator"
    }
  }
}`))
	if diags.HasErrors() || cfg.Admin.Console.Users[0].PasswordHash != h {
		t.Fatalf("the printed hash is not a valid password_hash: %v", diags)
	}

	for name, in := range map[string]string{
		"differ":   "one\ntwo\n",
		"one line": "one\n",
		"empty":    "\n\n",
		"too long": strings.Repeat("x", 2000) + "\n" + strings.Repeat("x", 2000) + "\n",
		"no input": "",
	} {
		code, out, errOut := runWithStdin(t, in, "admin", "passwd")
		if code != 1 || out != "" {
			t.Errorf("%s: exit %d, stdout %q (stderr %q): want 1 and nothing printed", name, code, out, errOut)
		}
	}
}
