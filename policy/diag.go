package policy

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
)

// WriteDiagnostics prints each diagnostic as one line
//
//	file:line:col: severity: summary; detail
//
// followed, when the source is in files, by the offending line with a caret
// under the range, as hcl.NewDiagnosticTextWriter shows it but in the
// file:line:col form editors and CI logs link to.
func WriteDiagnostics(w io.Writer, diags hcl.Diagnostics, files map[string]*hcl.File) {
	for _, d := range diags {
		var b strings.Builder
		if d.Subject != nil {
			fmt.Fprintf(&b, "%s:%d:%d: ", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
		}
		if d.Severity == hcl.DiagWarning {
			b.WriteString("warning: ")
		} else {
			b.WriteString("error: ")
		}
		b.WriteString(d.Summary)
		if d.Detail != "" {
			b.WriteString("; ")
			b.WriteString(strings.Join(strings.Fields(d.Detail), " "))
		}
		b.WriteByte('\n')
		if d.Subject != nil {
			if f := files[d.Subject.Filename]; f != nil {
				snippet(&b, f.Bytes, *d.Subject)
			}
		}
		io.WriteString(w, b.String())
	}
}

// snippet writes the first line of rng with carets under the range (to the
// end of that line when the range spans several).
func snippet(b *strings.Builder, src []byte, rng hcl.Range) {
	start := rng.Start.Byte
	if start < 0 || start > len(src) || rng.Start.Line < 1 {
		return
	}
	lineStart := bytes.LastIndexByte(src[:start], '\n') + 1
	lineEnd := len(src)
	if i := bytes.IndexByte(src[start:], '\n'); i >= 0 {
		lineEnd = start + i
	}
	line := strings.TrimRight(string(src[lineStart:lineEnd]), "\r")
	if !utf8.ValidString(line) {
		line = strings.ToValidUTF8(line, "\uFFFD")
	}
	end := rng.End.Byte
	if end > lineEnd || end < start {
		end = lineEnd
	}
	fmt.Fprintf(b, "%6d | %s\n", rng.Start.Line, line)
	b.WriteString("       | ")
	// Keep tabs so that the caret lines up however the terminal expands them.
	for _, r := range string(src[lineStart:start]) {
		if r == '\t' {
			b.WriteByte('\t')
		} else {
			b.WriteByte(' ')
		}
	}
	n := utf8.RuneCount(src[start:end])
	if n < 1 {
		n = 1
	}
	b.WriteString(strings.Repeat("^", n))
	b.WriteByte('\n')
}
