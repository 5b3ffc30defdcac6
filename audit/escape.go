package audit

import (
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Clip bounds a string a peer chose before it goes into a record: longer
// than n bytes, it is cut to n at a UTF-8 boundary and mark is appended,
// so the record shows it was cut.
func Clip(s string, n int, mark string) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + mark
}

// unsafeRune reports whether r must never appear raw in a record or on a
// reviewer's screen: C0 and C1 control characters and DEL (they move the
// cursor or start terminal control sequences: U+009B is a one-byte CSI,
// U+0085 a line break), and the format characters (Unicode category Cf),
// which are invisible or change how what follows displays: the
// bidirectional embeddings, overrides, isolates and marks (U+202A-U+202E,
// U+2066-U+2069, U+200E/U+200F, U+061C) reorder it, zero-width ones
// (U+200B-U+200D, U+2060, U+FEFF, U+00AD, the tag characters) hide inside
// it, so that a crafted name displays as another. U+2028/U+2029 end lines
// in JavaScript. Such characters reach the trail in AE titles, UIDs and
// certificate fields that clients choose.
func unsafeRune(r rune) bool {
	switch {
	case r < 0x20, r >= 0x7f && r <= 0x9f:
		return true
	case r == 0x2028, r == 0x2029:
		return true
	case r < 0xad:
		return false // printable ASCII and Latin-1: the common case, no table lookup
	}
	return unicode.Is(unicode.Cf, r)
}

// Escape returns s with every character unsafeRune names written as
// \uXXXX (and invalid UTF-8 as \ufffd), for tables and summaries: what a
// client sent is shown, never interpreted by the terminal.
func Escape(s string) string {
	clean := true
	for _, r := range s {
		if unsafeRune(r) || r == utf8.RuneError {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteString(`\ufffd`)
		case unsafeRune(r):
			b.Write(appendU(nil, r))
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// EscapeLine rewrites the characters unsafeRune names that a JSON line
// holds raw (a line written by an older version, or by hand) as \uXXXX,
// and each byte that is not UTF-8 as \ufffd: the same JSON value, safe to
// print. Lines the Writer wrote come back unchanged.
func EscapeLine(line []byte) []byte {
	var out []byte
	start := 0
	for i := 0; i < len(line); {
		c := line[i]
		if c < utf8.RuneSelf && c != 0x7f {
			i++
			continue
		}
		r, size := rune(c), 1
		if c >= utf8.RuneSelf {
			r, size = utf8.DecodeRune(line[i:])
		}
		if r == utf8.RuneError && size == 1 {
			// Not UTF-8: encoding/json reads the byte as U+FFFD, and a
			// terminal not in UTF-8 mode may take it for a C1 control
			// (0x9b is a one-byte CSI). Written as the value it decodes to.
			out = append(out, line[start:i]...)
			out = append(out, `\ufffd`...)
			start = i + 1
			i++
			continue
		}
		if (r >= 0x20 || r == 0x7f) && unsafeRune(r) {
			out = append(out, line[start:i]...)
			out = appendU(out, r)
			start = i + size
		}
		i += size
	}
	if out == nil {
		return line
	}
	return append(out, line[start:]...)
}

// appendU writes r as \uXXXX, as a JSON surrogate pair (RFC 8259 7)
// beyond the Basic Multilingual Plane (the tag characters U+E0001-U+E007F).
func appendU(b []byte, r rune) []byte {
	if r > 0xffff {
		hi, lo := utf16.EncodeRune(r)
		return appendU(appendU(b, hi), lo)
	}
	return append(b, '\\', 'u', hexDigits[r>>12&0xf], hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
}
