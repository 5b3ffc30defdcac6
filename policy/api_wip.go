package policy

import (
	"io"

	"github.com/hashicorp/hcl/v2"
)

// This file fixes the exported API so that other packages can code against
// it while the implementation lands; every body here is replaced.

// Policy is the compiled, immutable rule set.
type Policy struct {
	rules []rule
}

type rule struct{ name string }

// LoadFile reads, decodes, validates and compiles path.
func LoadFile(path string) (*Config, hcl.Diagnostics) { panic("policy: LoadFile not implemented yet") }

// Load decodes, validates and compiles src, named filename in diagnostics.
func Load(filename string, src []byte) (*Config, hcl.Diagnostics) {
	panic("policy: Load not implemented yet")
}

// WriteDiagnostics prints diags as "file:line:col: severity: summary; detail"
// with a source snippet and caret.
func WriteDiagnostics(w io.Writer, diags hcl.Diagnostics, files map[string]*hcl.File) {
	panic("policy: WriteDiagnostics not implemented yet")
}

// Evaluate decides on in: the first rule in file order whose when matches.
func (p *Policy) Evaluate(in *Input) Decision { panic("policy: Evaluate not implemented yet") }

// Explain is Evaluate with the reason for every rule tried.
func (p *Policy) Explain(in *Input) Explanation { panic("policy: Explain not implemented yet") }

// AllowsService reports whether the DIMSE service name ("C-STORE", "N-GET", ...) may be used.
func (d *Decision) AllowsService(name string) bool { panic("policy: not implemented yet") }

// AllowsSOPClass reports whether the abstract syntax uid may be used.
func (d *Decision) AllowsSOPClass(uid string) bool { panic("policy: not implemented yet") }

// AllowsMoveDestination reports whether a C-MOVE may name ae as destination.
func (d *Decision) AllowsMoveDestination(ae string) bool { panic("policy: not implemented yet") }
