package policytool

import (
	"bytes"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
)

// Format returns src in canonical HCL layout (hclwrite.Format: indentation,
// aligned equals signs and comments, spacing around operators), the layout
// `terraform fmt` gives. hclwrite formats whatever tokens it gets, so src is
// parsed first: a syntax error is returned as positioned diagnostics (named
// by filename) and nothing is formatted. The returned file is the parse of
// src, for the diagnostics' source lines.
func Format(filename string, src []byte) ([]byte, *hcl.File, hcl.Diagnostics) {
	file, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, file, diags
	}
	return hclwrite.Format(src), file, nil
}

// Formatted reports whether src is already in canonical layout; see Format.
func Formatted(filename string, src []byte) (bool, *hcl.File, hcl.Diagnostics) {
	out, file, diags := Format(filename, src)
	if diags.HasErrors() {
		return false, file, diags
	}
	return bytes.Equal(out, src), file, nil
}
