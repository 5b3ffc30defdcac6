package policytool

import (
	"bytes"
	"os"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

func addSeedFiles(f *testing.F, paths ...string) {
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzFormat: Format never panics; what it returns parses and is a fixed
// point (formatting it again changes nothing), and a refusal is located.
func FuzzFormat(f *testing.F) {
	addSeedFiles(f, "../policy.hcl", "../policy.tests.hcl", "testdata/messy.hcl", "testdata/unclosed.hcl", "testdata/v1.hcl")
	f.Add([]byte("a = {\n b = [1,\n2]\n}\n"))
	f.Add([]byte("x = \"${a}\" # c\r\ny=1"))
	f.Fuzz(func(t *testing.T, src []byte) {
		out, _, diags := Format("f.hcl", src)
		if diags.HasErrors() {
			for _, d := range diags {
				if d.Subject == nil {
					t.Fatalf("syntax error without a position: %s", d.Error())
				}
			}
			return
		}
		if _, ds := hclsyntax.ParseConfig(out, "f.hcl", hcl.InitialPos); ds.HasErrors() {
			t.Fatalf("formatted output does not parse: %s\n--- in\n%q\n--- out\n%q", ds.Error(), src, out)
		}
		again, _, _ := Format("f.hcl", out)
		if !bytes.Equal(again, out) {
			t.Fatalf("not idempotent:\n--- once\n%q\n--- twice\n%q", out, again)
		}
	})
}

// FuzzTestFile: decoding a test file never panics, every problem has a
// position, and a file that decodes without errors yields cases that run.
func FuzzTestFile(f *testing.F) {
	addSeedFiles(f, "../policy.tests.hcl", "testdata/cases.tests.hcl", "testdata/misspelt.tests.hcl")
	f.Add([]byte(`test "a" { calling_ae = "X"
 called_ae = "Y"
 expect { decision = "reject" } }`))
	cfg := loadPolicy(f, "testdata/v1.hcl")
	f.Fuzz(func(t *testing.T, src []byte) {
		s, _ := LoadTestFiles()
		diags := s.Add("t.hcl", src)
		for _, d := range diags {
			if d.Severity == hcl.DiagError && d.Subject == nil {
				t.Fatalf("error without a position: %s", d.Error())
			}
		}
		if diags.HasErrors() {
			return
		}
		for _, tc := range s.Cases {
			tc.Run(cfg)
		}
	})
}
