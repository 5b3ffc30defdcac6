package audit

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEscape(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"MODALITY1", "MODALITY1"},
		{"a\u202eb", `a\u202eb`},
		{"\u0085\u009b[2J", `\u0085\u009b[2J`},
		{"x\x1b[31m\x7f", `x\u001b[31m\u007f`},
		{"\u2066\u2069\u200e\u200f\u061c", `\u2066\u2069\u200e\u200f\u061c`},
		{"bad\xffutf8", `bad\ufffdutf8`},
		// Invisible: a name with a zero-width space, joiner, soft hyphen,
		// byte order mark or tag character displays as the name without.
		{"modality\u200b-a", `modality\u200b-a`},
		{"a\u200d\u2060\u00ad\ufeffb", `a\u200d\u2060\u00ad\ufeffb`},
		{"a\U000E0041b", `a\udb40\udc41b`},
		{"Müller→Ω", "Müller→Ω"},
	} {
		if got := Escape(c.in); got != c.want {
			t.Errorf("Escape(%q) = %q, want %q", c.in, got, c.want)
		}
		line := appendString(nil, c.in)
		var back string
		if err := json.Unmarshal(line, &back); err != nil || strings.ContainsFunc(string(line), unsafeRune) {
			t.Errorf("appendString(%q) = %s: %v (must be valid JSON with nothing unsafe raw)", c.in, line, err)
		}
	}
	// A line with raw C1 and bidi characters (written by hand or an older
	// version) is printed with them escaped: the same JSON value.
	old := []byte("{\"event\":\"dimse\",\"sop_instance\":\"1.2\u0085\u009b\",\"cn\":\"a\u202eb\"}")
	got := EscapeLine(old)
	if bytes.ContainsFunc(got, unsafeRune) || !json.Valid(got) {
		t.Fatalf("EscapeLine = %s", got)
	}
	var a, b map[string]string
	_ = json.Unmarshal(old, &a)
	_ = json.Unmarshal(got, &b)
	if a["sop_instance"] != b["sop_instance"] || a["cn"] != b["cn"] {
		t.Errorf("EscapeLine changed the value: %v vs %v", a, b)
	}
}

// EscapeLine keeps a valid JSON line's value and leaves nothing unsafe raw.
func FuzzEscapeLine(f *testing.F) {
	f.Add([]byte("{\"cn\":\"a\u202eb\"}"))
	f.Add([]byte("{\"x\":\"\u0085\u009b\x7f\"}"))
	f.Add([]byte("{\"x\":\"\\u202e\"}"))
	f.Fuzz(func(t *testing.T, line []byte) {
		got := EscapeLine(line)
		if bytes.ContainsFunc(got, func(r rune) bool { return r >= 0x7f && unsafeRune(r) }) {
			t.Fatalf("EscapeLine(%q) = %q keeps an unsafe character", line, got)
		}
		var a, b any
		if json.Unmarshal(line, &a) == nil {
			if err := json.Unmarshal(got, &b); err != nil {
				t.Fatalf("EscapeLine(%q) = %q is no longer JSON: %v", line, got, err)
			}
			ja, _ := json.Marshal(a)
			jb, _ := json.Marshal(b)
			if !bytes.Equal(ja, jb) {
				t.Fatalf("EscapeLine(%q) changed the value", line)
			}
		}
	})
}

// A line written by hand may hold bytes that are not UTF-8: encoding/json
// reads each as U+FFFD, so the line is a record to `dicomedge audit
// --json`, but printed raw a lone 0x9b is a one-byte CSI to a terminal not
// in UTF-8 mode (and 0x85 a line break). EscapeLine writes each as \ufffd,
// the value the line already decodes to, as Escape does for the table.
func TestEscapeLineInvalidUTF8(t *testing.T) {
	line := []byte("{\"event\":\"dimse\",\"calling_ae\":\"EVIL\x9b2J\x85\xff\",\"called_ae\":\"\xe2\x80\"}")
	var want map[string]string
	if err := json.Unmarshal(line, &want); err != nil {
		t.Fatalf("the line does not decode: %v", err)
	}
	got := EscapeLine(line)
	if !utf8.Valid(got) {
		t.Fatalf("EscapeLine(%q) = %q keeps bytes that are not UTF-8", line, got)
	}
	var back map[string]string
	if err := json.Unmarshal(got, &back); err != nil || back["calling_ae"] != want["calling_ae"] || back["called_ae"] != want["called_ae"] {
		t.Fatalf("EscapeLine(%q) = %q decodes to %v (%v), want %v", line, got, back, err, want)
	}
}

func TestClip(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 8, "short"},
		{"exactly8", 8, "exactly8"},
		{"ninechars", 8, "ninechar..."},
		{"aéé", 2, "a..."}, // the cut falls inside é: back to its start
		{"ééé", 1, "..."},
	} {
		if got := Clip(c.in, c.n, "..."); got != c.want {
			t.Errorf("Clip(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}
