package policy

import (
	"path/filepath"
	"slices"
	"testing"
)

// A hash `dicomedge admin passwd` printed (of "dev"), with small argon2
// parameters; only its form is checked here.
const testHash = "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5"

func TestAdminConsole(t *testing.T) {
	cfg, diags := Load(filepath.Join("/etc", "dicomedge", "policy.hcl"), []byte(minimalTLS+`
edge { admin_listen = "127.0.0.1:9102" }
admin {
  console {
    client_ca = ["admin-ca.pem"]
    user "pacs-admin" {
      password_hash = "`+testHash+`"
      role          = "operator"
    }
    user "privacy" {
      password_hash = "`+testHash+`"
    }
  }
}
`))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	c := cfg.Admin.Console
	if c == nil {
		t.Fatal("no console")
	}
	if !slices.Equal(c.ClientCA, []string{"/etc/dicomedge/admin-ca.pem"}) {
		t.Errorf("client_ca %v: not resolved beside the policy file", c.ClientCA)
	}
	want := []ConsoleUser{{"pacs-admin", testHash, RoleOperator}, {"privacy", testHash, RoleViewer}}
	if !slices.Equal(c.Users, want) {
		t.Errorf("users %+v, want %+v (role defaults to viewer)", c.Users, want)
	}

	cfg, diags = Load("p.hcl", []byte(minimalTLS))
	if diags.HasErrors() || cfg.Admin.Console != nil {
		t.Errorf("no admin block: console %+v, %v", cfg.Admin.Console, diags)
	}
}

func TestAdminConsoleMistakes(t *testing.T) {
	_, diags := Load("p.hcl", []byte(minimalTLS+`
admin {
  console {
    user "a" {
      password_hash = "hunter2"
      role          = "admin"
    }
    user "a" {
      password_hash = "`+testHash+`"
    }
    user "b c" {
      password_hash = "`+testHash+`"
    }
    user "d" {}
    colour = "red"
  }
}
admin {
  console {}
}
`))
	got := diagKeys(diags)
	for _, s := range []string{
		"Console without admin_listen", "Invalid password_hash", "Unknown console role", "Duplicate user name",
		"Invalid user name", "Missing password_hash", "Unsupported argument", "Duplicate admin block",
	} {
		found := false
		for _, g := range got {
			found = found || len(g) > len(s) && g[len(g)-len(s):] == s
		}
		if !found {
			t.Errorf("no %q diagnostic in %q", s, got)
		}
	}
}
