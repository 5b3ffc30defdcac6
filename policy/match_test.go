package policy

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestPatternMatch(t *testing.T) {
	cases := []struct {
		pattern string
		fold    bool
		s       string
		want    bool
	}{
		{"MAINPACS", false, "MAINPACS", true},
		{"MAINPACS", false, "MAINPAC", false},
		{"MAINPACS", false, "mainpacs", false},
		{"client", true, "CLIENT", true},
		{"*", false, "", true},
		{"**", false, "anything", true},
		{"CLINA_*", false, "CLINA_", true},
		{"CLINA_*", false, "CLINA_CT1", true},
		{"CLINA_*", false, "CLINB_CT1", false},
		{"*.clinic-a.example.org", true, "ct.Clinic-A.example.org", true},
		{"*.clinic-a.example.org", true, "clinic-a.example.org", false},
		{"CT?", false, "CT1", true},
		{"CT?", false, "CT", false},
		{"CT?", false, "CT12", false},
		{"a*b*c", false, "abc", true},
		{"a*b*c", false, "aXbYc", true},
		{"a*b*c", false, "aXbYcZ", false},
		{"a*b?c", false, "abbbXc", true},
		{"*a*a*a*b", false, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
		{"spiffe://example.org/*/modality", false, "spiffe://example.org/clinic-a/modality", true},
		{"Dr ?", true, "dr Ö", true}, // '?' is one character, not one byte
		{"Dr ??", true, "dr Ö", false},
	}
	for _, tc := range cases {
		p := compilePattern(tc.pattern, tc.fold)
		if got := p.match(tc.s); got != tc.want {
			t.Errorf("%q (fold %v) match %q = %v, want %v (kind %d)", tc.pattern, tc.fold, tc.s, got, tc.want, p.kind)
		}
	}
}

// globRegexp is the reference the fast matcher is checked against.
func globRegexp(pattern string, fold bool) *regexp.Regexp {
	var b strings.Builder
	b.WriteString(`^(?s)`)
	if fold {
		b.WriteString(`(?i)`)
	}
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(`.*`)
		case '?':
			b.WriteString(`.`)
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString(`$`)
	return regexp.MustCompile(b.String())
}

// FuzzPatternMatch checks the glob matcher against a regexp built from the
// same pattern. Case folding is compared on ASCII only, the documented scope.
func FuzzPatternMatch(f *testing.F) {
	for _, s := range [][2]string{{"CLINA_*", "CLINA_CT"}, {"*.example.org", "a.example.org"}, {"a*b?c*", "aXXbYcZZ"},
		{"??", "Öx"}, {"*", ""}, {"x*y*z", "xyzxyz"}, {"A?B", "a\x00b"}} {
		f.Add(s[0], s[1], false)
		f.Add(s[0], s[1], true)
	}
	f.Fuzz(func(t *testing.T, pattern, s string, fold bool) {
		if !utf8.ValidString(pattern) || !utf8.ValidString(s) || len(pattern) > 64 || len(s) > 256 {
			return
		}
		if fold && (!isASCII(pattern) || !isASCII(s)) {
			return
		}
		want := globRegexp(pattern, fold).MatchString(s)
		p := compilePattern(pattern, fold)
		if got := p.match(s); got != want {
			t.Fatalf("%q (fold %v, kind %d) match %q = %v, regexp says %v", pattern, fold, p.kind, s, got, want)
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
