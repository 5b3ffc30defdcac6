package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzVerify feeds arbitrary log bytes (and an arbitrary head anchor) to the
// verifier and the reader: they must never panic, and they must agree: a
// log that verifies is one the reader reads completely.
func FuzzVerify(f *testing.F) {
	// Seeds: a real log from the writer, and damaged variants of it.
	dir := f.TempDir()
	file := filepath.Join(dir, "seed.jsonl")
	w, err := Open(Config{File: file})
	if err != nil {
		f.Fatal(err)
	}
	for i := range 4 {
		w.Log(sampleEvent(i))
	}
	w.Log(Event{Event: EventRejected, Result: 1, Source: 1, ReasonCode: 3, Reason: "calling-ae-not-recognized"})
	w.Close()
	good, _ := os.ReadFile(file)
	anchor, _ := os.ReadFile(headPath(file))
	f.Add(good, anchor)
	f.Add(good[:len(good)-7], anchor)
	f.Add(bytes.Replace(good, []byte(`"seq":2`), []byte(`"seq":9`), 1), anchor)
	f.Add(good, []byte(`{"seq":99,"hash":"`+ZeroHash+`"}`))
	f.Add([]byte("{}\n"), []byte(nil))
	f.Add([]byte("\n\n\n"), []byte("{"))
	f.Add([]byte(`{"time":"x","event":"e","seq":1,"prev":"`+ZeroHash+`"}`+"\n"), []byte(nil))
	f.Add([]byte(strings.Repeat("a", 300)+"\n"), []byte(nil))

	f.Fuzz(func(t *testing.T, log, headBytes []byte) {
		// In memory: the disk is not under test, and fsyncs would make the
		// fuzzer crawl.
		var h *head
		if headBytes != nil {
			var err error
			if h, err = parseHead(headBytes); err != nil {
				h = nil
			}
		}
		n, verr := verify([]source{{"audit.jsonl", bytes.NewReader(log), int64(len(log))}}, h, "audit.jsonl.head")
		if verr != nil {
			var ve *VerifyError
			if !errors.As(verr, &ve) {
				t.Fatalf("verify error %T %v is not a *VerifyError", verr, verr)
			}
		}
		// Filters with wildcards run over whatever decodes.
		filtered := newScanner(Filter{Client: "*x*", Event: "a*", Decision: "accept", CallingAE: "?*"}, func(Event, []byte) error { return nil })
		filtered.read(bytes.NewReader(log), "audit.jsonl", 0)
		read := 0
		all := newScanner(Filter{}, func(e Event, line []byte) error {
			read++
			if !json.Valid(line) {
				t.Fatalf("reader returned an invalid JSON line %q", line)
			}
			return nil
		})
		_, _, rerr := all.read(bytes.NewReader(log), "audit.jsonl", 0)
		if verr == nil && (rerr != nil || read != n) {
			t.Fatalf("verify ok with %d records but the reader saw %d (%v)", n, read, rerr)
		}
		// The writer must be able to continue any log that verifies (rare
		// for random input, so the disk cost is acceptable here).
		if verr == nil && h != nil {
			file := filepath.Join(t.TempDir(), "audit.jsonl")
			os.WriteFile(file, log, 0o600)
			os.WriteFile(headPath(file), headBytes, 0o600)
			w, err := Open(Config{File: file, PatientIDs: "omit"})
			if err != nil {
				t.Fatalf("Open on a verified log: %v", err)
			}
			w.Log(Event{Event: EventCertRenewed})
			w.Close()
			if m, err := Verify(Files(file)); err != nil || m != n+1 {
				t.Fatalf("after appending to a verified log: %d, %v", m, err)
			}
		}
	})
}

// FuzzAppendString checks the hand-written JSON string encoder: always one
// valid JSON line that decodes to the input (with invalid UTF-8 replaced).
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "CLINA_CT1", "a\"b\\c\n\r\t\x00\x7f", "caf\xe9", "\u2028\u2029", "☃\xff\xfe", "<&>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendString(nil, s)
		if !json.Valid(b) || bytes.ContainsAny(b, "\n\r") {
			t.Fatalf("appendString(%q) = %s: not one valid JSON line", s, b)
		}
		var back string
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		want := s
		if !utf8.ValidString(s) {
			// encoding/json replaces each invalid byte (strings.ToValidUTF8 would merge runs).
			var sb strings.Builder
			for i := 0; i < len(s); {
				r, size := utf8.DecodeRuneInString(s[i:])
				sb.WriteRune(r)
				i += size
			}
			want = sb.String()
		}
		if back != want {
			t.Fatalf("round trip of %q = %q; want %q", s, back, want)
		}
	})
}

// FuzzParseWhen: --since/--until (and the console's since/until fields)
// never panic, and a duration is never in the future of now.
func FuzzParseWhen(f *testing.F) {
	for _, s := range []string{"", "24h", "7d", "1d12h", "2026-01-02", "2026-01-02T03:04:05Z", "65535d", "-1h", "d", "9999999999h"} {
		f.Add(s)
	}
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := ParseDuration(s); err == nil && d >= 0 {
			got, err := ParseWhen(s, now)
			if err != nil || got.After(now) {
				t.Fatalf("ParseWhen(%q) = %v, %v: a positive duration is before now", s, got, err)
			}
		}
	})
}
