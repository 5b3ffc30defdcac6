package dimse

import (
	"bytes"
	"testing"

	"github.com/dicomedge/dicomedge/association"
)

const (
	ivr = association.ImplicitVRLittleEndian
	evr = association.ExplicitVRLittleEndian
)

func TestRewriteRetrieveAETitle(t *testing.T) {
	b := func(s string) []byte { return []byte(s) }
	// An undefined-length sequence (Issuer of Accession Number Sequence,
	// (0008,0051)) before the Retrieve AE Title, with a nested (0008,0054)
	// that is not the identifier's own and must stay.
	nestedEx := join(ex(0x0008, 0x0051, "SQ", nil, u), delim(0xE000, u), ex(0x0008, 0x0054, "AE", b("PACS")), delim(0xE00D, 0), delim(0xE0DD, 0))
	nestedIm := join(im(0x0008, 0x0051, nil, u), delim(0xE000, u), im(0x0008, 0x0054, b("PACS")), delim(0xE00D, 0), delim(0xE0DD, 0))
	cases := []struct {
		name    string
		ts      string
		in      []byte
		want    []byte // nil: unchanged
		changed bool
	}{
		{"explicit, grows to odd length and is padded", evr,
			join(ex(0x0008, 0x0052, "CS", b("STUDY ")), ex(0x0008, 0x0054, "AE", b("PACS")), ex(0x0010, 0x0020, "LO", b("P1"))),
			join(ex(0x0008, 0x0052, "CS", b("STUDY ")), ex(0x0008, 0x0054, "AE", b("DICOMEDGE ")), ex(0x0010, 0x0020, "LO", b("P1"))), true},
		{"implicit, padded value compared trimmed", ivr,
			join(im(0x0008, 0x0054, b("PACS  ")), im(0x0020, 0x000D, b("1.2.3\x00"))),
			join(im(0x0008, 0x0054, b("DICOMEDGE ")), im(0x0020, 0x000D, b("1.2.3\x00"))), true},
		{"multi-valued: only the backend's value", evr,
			ex(0x0008, 0x0054, "AE", b(`ARCHIVE\PACS`)),
			ex(0x0008, 0x0054, "AE", b(`ARCHIVE\DICOMEDGE `)), true},
		{"last element", ivr, im(0x0008, 0x0054, b("PACS")), im(0x0008, 0x0054, b("DICOMEDGE ")), true},
		{"another AE title is left alone", evr, ex(0x0008, 0x0054, "AE", b("OTHERPACS ")), nil, false},
		{"case matters (AE titles are case-sensitive)", evr, ex(0x0008, 0x0054, "AE", b("pacs")), nil, false},
		{"no Retrieve AE Title", evr, ex(0x0010, 0x0020, "LO", b("P1")), nil, false},
		{"empty value", ivr, im(0x0008, 0x0054, nil), nil, false},
		{"explicit, after an undefined-length sequence; the nested one stays", evr,
			join(nestedEx, ex(0x0008, 0x0054, "AE", b("PACS"))),
			join(nestedEx, ex(0x0008, 0x0054, "AE", b("DICOMEDGE "))), true},
		{"implicit, after an undefined-length sequence; the nested one stays", ivr,
			join(nestedIm, im(0x0008, 0x0054, b("PACS"))),
			join(nestedIm, im(0x0008, 0x0054, b("DICOMEDGE "))), true},
		{"nested only: nothing at the top level", ivr, nestedIm, nil, false},
		{"wrong VR is not an AE", evr, ex(0x0008, 0x0054, "LO", b("PACS")), nil, false},
		{"truncated value: unchanged", evr, ex(0x0008, 0x0054, "AE", b("PACS"))[:10], nil, false},
		{"length past the end: unchanged", ivr, im(0x0008, 0x0054, b("PACS"), 400), nil, false},
		{"unterminated sequence: unchanged", evr, join(ex(0x0008, 0x0051, "SQ", nil, u), delim(0xE000, u), ex(0x0008, 0x0054, "AE", b("PACS"))), nil, false},
		{"big endian is left alone", "1.2.840.10008.1.2.2", im(0x0008, 0x0054, b("PACS")), nil, false},
		{"deflated is left alone", association.DeflatedExplicitVRLittleEndian, ex(0x0008, 0x0054, "AE", b("PACS")), nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, changed := RewriteRetrieveAETitle(nil, tc.in, tc.ts, "PACS", "DICOMEDGE")
			want := tc.want
			if want == nil {
				want = tc.in
			}
			if changed != tc.changed || !bytes.Equal(out, want) {
				t.Errorf("changed %v (want %v)\n got % x\nwant % x", changed, tc.changed, out, want)
			}
		})
	}
	// Deeper than the nesting bound: left alone rather than followed.
	deep := []byte{}
	for range maxNesting + 2 {
		deep = append(deep, join(im(0x0008, 0x1115, nil, u), delim(0xE000, u))...)
	}
	if _, changed := RewriteRetrieveAETitle(nil, append(deep, im(0x0008, 0x0054, []byte("PACS"))...), ivr, "PACS", "X"); changed {
		t.Error("followed sequences deeper than the bound")
	}
	// An invalid replacement title is never written.
	if _, changed := RewriteRetrieveAETitle(nil, im(0x0008, 0x0054, []byte("PACS")), ivr, "PACS", `A\B`); changed {
		t.Error("wrote a title with a backslash")
	}
}

func TestRetrieveAEFilter(t *testing.T) {
	ident := join(ex(0x0008, 0x0052, "CS", []byte("STUDY ")), ex(0x0008, 0x0054, "AE", []byte("PACS")), ex(0x0020, 0x000D, "UI", []byte("1.2.3.4\x00")))
	want := join(ex(0x0008, 0x0052, "CS", []byte("STUDY ")), ex(0x0008, 0x0054, "AE", []byte("CALLED_BY_CLIENT")), ex(0x0020, 0x000D, "UI", []byte("1.2.3.4\x00")))
	// run feeds ident in fragments split at cuts and returns what came out
	// after each fragment.
	run := func(f *RetrieveAEFilter, cuts ...int) [][]byte {
		var outs [][]byte
		prev := 0
		for i, c := range append(cuts, len(ident)) {
			outs = append(outs, f.Filter(nil, ident[prev:c], i == len(cuts)))
			prev = c
		}
		return outs
	}
	newF := func(ts string, maxHeld int) *RetrieveAEFilter {
		return &RetrieveAEFilter{From: "PACS", To: "CALLED_BY_CLIENT", TransferSyntax: ts, MaxHeld: maxHeld}
	}
	t.Run("one fragment", func(t *testing.T) {
		if outs := run(newF(evr, 0)); !bytes.Equal(outs[0], want) {
			t.Errorf("got % x\nwant % x", outs[0], want)
		}
	})
	t.Run("three fragments: held, then the whole identifier rewritten", func(t *testing.T) {
		outs := run(newF(evr, 0), 5, 20)
		if len(outs[0]) != 0 || len(outs[1]) != 0 || !bytes.Equal(outs[2], want) {
			t.Errorf("got %q", outs)
		}
	})
	t.Run("over MaxHeld: passes unchanged", func(t *testing.T) {
		outs := run(newF(evr, 16), 10, 20)
		if got := bytes.Join(outs, nil); !bytes.Equal(got, ident) || len(outs[0]) != 0 {
			t.Errorf("got %q, want the original, nothing before the bound is passed", outs)
		}
	})
	t.Run("unknown transfer syntax: unchanged", func(t *testing.T) {
		if outs := run(newF("", 0), 7); !bytes.Equal(bytes.Join(outs, nil), ident) {
			t.Errorf("got %q", outs)
		}
	})
	t.Run("appends to dst", func(t *testing.T) {
		f := newF(evr, 0)
		if got := f.Filter([]byte("x"), ident, true); !bytes.Equal(got, append([]byte("x"), want...)) {
			t.Errorf("got % x", got)
		}
		if len(f.held) != 0 {
			t.Error("holds bytes after the last fragment")
		}
	})
}

// FuzzRewriteRetrieveAETitle: no panic; an unchanged result is the input
// itself; a changed one still parses (rewriting the other way finds the new
// title) and rewriting it again changes nothing (the title is no longer the
// backend's).
func FuzzRewriteRetrieveAETitle(f *testing.F) {
	f.Add(join(ex(0x0008, 0x0052, "CS", []byte("STUDY ")), ex(0x0008, 0x0054, "AE", []byte(`X\PACS`))), false)
	f.Add(join(im(0x0008, 0x0051, nil, u), delim(0xE000, u), im(0x0008, 0x0054, []byte("PACS")), delim(0xE00D, 0), delim(0xE0DD, 0), im(0x0008, 0x0054, []byte("PACS"))), true)
	f.Add(join(ex(0x0009, 0x0010, "UN", nil, u), delim(0xE000, u), im(0x0008, 0x0054, []byte("PACS")), delim(0xE00D, 0), delim(0xE0DD, 0), ex(0x0008, 0x0054, "AE", []byte("PACS"))), false)
	f.Fuzz(func(t *testing.T, ds []byte, implicit bool) {
		ts := evr
		if implicit {
			ts = ivr
		}
		out, changed := RewriteRetrieveAETitle(nil, ds, ts, "PACS", "EDGE_CALLED")
		if !changed {
			if !bytes.Equal(out, ds) {
				t.Fatal("unchanged, but different bytes")
			}
			return
		}
		if again, changed2 := RewriteRetrieveAETitle(nil, out, ts, "PACS", "EDGE_CALLED"); changed2 {
			t.Fatalf("rewriting twice changes again:\n% x\n% x", out, again)
		}
		// The way back may differ from ds only in each value's padding.
		back, changed3 := RewriteRetrieveAETitle(nil, out, ts, "EDGE_CALLED", "PACS")
		if !changed3 || len(back) > len(ds)+bytes.Count(ds, []byte{0x08, 0, 0x54, 0}) {
			t.Fatalf("the rewritten data set does not parse back to the original's size: % x", out)
		}
		if again, _ := RewriteRetrieveAETitle(nil, back, ts, "PACS", "EDGE_CALLED"); !bytes.Equal(again, out) {
			t.Fatalf("the rewritten data set does not parse back: % x", out)
		}
	})
}

// FuzzRetrieveAEFilter: however an identifier is cut into fragments, what
// passes is what RewriteRetrieveAETitle makes of the whole (or the whole
// unchanged, over MaxHeld), and what is held stays within MaxHeld.
func FuzzRetrieveAEFilter(f *testing.F) {
	f.Add(join(ex(0x0008, 0x0052, "CS", []byte("STUDY ")), ex(0x0008, 0x0054, "AE", []byte("PACS"))), uint8(3), uint8(9))
	f.Add(join(im(0x0008, 0x0051, nil, u), delim(0xE000, u), delim(0xE00D, 0), delim(0xE0DD, 0), im(0x0008, 0x0054, []byte("PACS"))), uint8(1), uint8(0))
	f.Fuzz(func(t *testing.T, ds []byte, a, b uint8) {
		const maxHeld = 64
		flt := &RetrieveAEFilter{From: "PACS", To: "EDGE_CALLED", TransferSyntax: evr, MaxHeld: maxHeld}
		cuts := []int{min(int(a), len(ds)), min(int(a)+int(b), len(ds)), len(ds)}
		var got []byte
		prev := 0
		for i, c := range cuts {
			got = flt.Filter(got, ds[prev:c], i == len(cuts)-1)
			prev = c
			if len(flt.held) > maxHeld {
				t.Fatalf("holds %d bytes", len(flt.held))
			}
		}
		want := ds
		if len(ds) <= maxHeld {
			want, _ = RewriteRetrieveAETitle(nil, ds, evr, "PACS", "EDGE_CALLED")
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("got % x\nwant % x", got, want)
		}
	})
}

// BenchmarkRetrieveAEFilter: the cost of rewriting one study-level C-FIND
// identifier (a typical Orthanc/dcmqrscp answer, about 300 bytes).
func BenchmarkRetrieveAEFilter(b *testing.B) {
	ident := join(
		ex(0x0008, 0x0020, "DA", []byte("20261130")),
		ex(0x0008, 0x0050, "SH", []byte("ACC12345")),
		ex(0x0008, 0x0051, "SQ", nil, u), delim(0xE000, u), ex(0x0010, 0x0020, "LO", []byte("ISSUER")), delim(0xE00D, 0), delim(0xE0DD, 0),
		ex(0x0008, 0x0052, "CS", []byte("STUDY ")),
		ex(0x0008, 0x0054, "AE", []byte("ORTHANC ")),
		ex(0x0008, 0x0061, "CS", []byte("CT")),
		ex(0x0010, 0x0010, "PN", []byte("DOE^JANE")),
		ex(0x0010, 0x0020, "LO", []byte("PAT00001")),
		ex(0x0020, 0x000D, "UI", []byte("1.2.826.0.1.3680043.2.1.1.1234567890.1234567890.1234567890.1\x00")),
		ex(0x0020, 0x1206, "IS", []byte("3 ")),
		ex(0x0020, 0x1208, "IS", []byte("12")),
	)
	b.SetBytes(int64(len(ident)))
	b.ReportAllocs()
	var dst []byte
	for b.Loop() {
		f := RetrieveAEFilter{From: "ORTHANC", To: "MAINPACS", TransferSyntax: evr}
		dst = f.Filter(dst[:0], ident, true)
	}
	if !bytes.Contains(dst, []byte("MAINPACS")) {
		b.Fatal("not rewritten")
	}
}
