package policytool

import (
	"bytes"
	"fmt"
	"io"
	"os"

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
	out := hclwrite.Format(src)
	if _, outDiags := hclsyntax.ParseConfig(out, filename, hcl.InitialPos); outDiags.HasErrors() {
		// hclwrite can join tokens that must stay apart ("0.0. 0", a
		// number with a traversal, becomes the malformed number "0.0.0"):
		// refuse rather than write a file that no longer parses.
		return nil, file, hcl.Diagnostics{unformattable(filename, src, outDiags[0])}
	}
	return out, file, nil
}

// unformattable locates a refusal to format in src. hclwrite changes only
// the spacing within lines, so the line of the error in its output is the
// line to look at in src.
func unformattable(filename string, src []byte, d *hcl.Diagnostic) *hcl.Diagnostic {
	line := 1
	if d.Subject != nil {
		line = d.Subject.Start.Line
	}
	start, end := hcl.InitialPos, hcl.InitialPos
	for i, n := 0, 1; i <= len(src); i++ {
		if n == line && start.Line != line {
			start = hcl.Pos{Line: line, Column: 1, Byte: i}
		}
		if i == len(src) || src[i] == '\n' {
			if n == line {
				end = hcl.Pos{Line: line, Column: i - start.Byte + 1, Byte: i}
				break
			}
			n++
		}
	}
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Cannot be formatted",
		Detail: fmt.Sprintf("Formatting would turn this line into HCL that does not parse (%s); write its value another way "+
			"(a traversal on a number, as in \"0.0. 0\", is one such case).", d.Summary),
		Subject: &hcl.Range{Filename: filename, Start: start, End: end},
	}
}

// Formatted reports whether src is already in canonical layout; see Format.
func Formatted(filename string, src []byte) (bool, *hcl.File, hcl.Diagnostics) {
	out, file, diags := Format(filename, src)
	if diags.HasErrors() {
		return false, file, diags
	}
	return bytes.Equal(out, src), file, nil
}

// MaxSource bounds the policy and test files the tools read: a policy with
// thousands of rules is well under a megabyte, and a path may name a device.
const MaxSource = 16 << 20

// ReadSource reads at most MaxSource bytes of r, and fails beyond that.
func ReadSource(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxSource+1))
	if err == nil && len(b) > MaxSource {
		err = fmt.Errorf("larger than %d bytes", MaxSource)
	}
	return b, err
}

// ReadSourceFile reads a regular file of at most MaxSource bytes.
func ReadSourceFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file")
	}
	return ReadSource(f)
}
