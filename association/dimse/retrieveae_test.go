package dimse

import (
	"bytes"
	"encoding/binary"
	"errors"
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

// pdataPDU encodes one P-DATA-TF with the given PDVs.
func pdataPDU(pdvs ...association.PDV) []byte {
	return appendPDVs(nil, pdvs, 1<<20)
}

// findRSP is a C-FIND-RSP command announcing an identifier.
func findRSP(status uint16, withData bool) []byte {
	c := &Command{CommandField: CFindRSP, MessageIDBeingRespondedTo: 1, AffectedSOPClassUID: "1.2.840.10008.5.1.4.1.2.2.1", HasStatus: true, Status: status, CommandDataSetType: NoDataSet}
	if withData {
		c.CommandDataSetType = 0x0000
	}
	return c.Encode()
}

// readPDVs decodes a run of P-DATA-TF PDUs, checking each against maxPDU.
func readPDVs(t *testing.T, b []byte, maxPDU int) []association.PDV {
	t.Helper()
	var out []association.PDV
	for len(b) > 0 {
		if len(b) < 6 || b[0] != byte(association.TypePDataTF) {
			t.Fatalf("not a P-DATA-TF: % x", b)
		}
		n := int(binary.BigEndian.Uint32(b[2:]))
		if n > maxPDU {
			t.Errorf("PDU of %d bytes, over the maximum %d", n, maxPDU)
		}
		if err := association.EachPDV(b[6:6+n], func(p association.PDV) error {
			p.Data = append([]byte(nil), p.Data...)
			out = append(out, p)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		b = b[6+n:]
	}
	return out
}

func TestRetrieveAERewriter(t *testing.T) {
	ident := join(ex(0x0008, 0x0052, "CS", []byte("STUDY ")), ex(0x0008, 0x0054, "AE", []byte("PACS")), ex(0x0020, 0x000D, "UI", []byte("1.2.3.4\x00")))
	want := join(ex(0x0008, 0x0052, "CS", []byte("STUDY ")), ex(0x0008, 0x0054, "AE", []byte("CALLED_BY_CLIENT")), ex(0x0020, 0x000D, "UI", []byte("1.2.3.4\x00")))
	newW := func(maxPDU uint32, maxHeld int) *RetrieveAERewriter {
		return &RetrieveAERewriter{From: "PACS", To: "CALLED_BY_CLIENT", MaxPDU: maxPDU, MaxHeld: maxHeld,
			TransferSyntax: func(id uint8) string {
				if id == 1 {
					return evr
				}
				return ""
			}}
	}
	// feed runs pdus through w and returns the data PDVs sent, joined per
	// message, and how many PDUs passed unchanged.
	feed := func(t *testing.T, w *RetrieveAERewriter, maxPDU int, pdus ...[]byte) (datasets [][]byte, unchanged int) {
		t.Helper()
		var cur []byte
		for _, pdu := range pdus {
			out, replaced, err := w.PData(nil, pdu)
			if err != nil {
				t.Fatal(err)
			}
			limit := maxPDU
			if !replaced {
				unchanged++
				out, limit = pdu, 1<<20
			}
			for _, p := range readPDVs(t, out, limit) {
				if p.Command {
					continue
				}
				cur = append(cur, p.Data...)
				if p.Last {
					datasets = append(datasets, cur)
					cur = nil
				}
			}
		}
		return datasets, unchanged
	}

	t.Run("command and identifier in one PDU", func(t *testing.T) {
		ds, unchanged := feed(t, newW(1<<20, 0), 1<<20, pdataPDU(
			association.PDV{ContextID: 1, Command: true, Last: true, Data: findRSP(StatusPending, true)},
			association.PDV{ContextID: 1, Last: true, Data: ident}))
		if unchanged != 0 || len(ds) != 1 || !bytes.Equal(ds[0], want) {
			t.Errorf("unchanged %d, identifiers % x, want % x", unchanged, ds, want)
		}
	})
	t.Run("identifier over three PDUs; final response untouched", func(t *testing.T) {
		w := newW(1<<20, 0)
		ds, unchanged := feed(t, w, 1<<20,
			pdataPDU(association.PDV{ContextID: 1, Command: true, Last: true, Data: findRSP(StatusPending, true)}),
			pdataPDU(association.PDV{ContextID: 1, Data: ident[:5]}),
			pdataPDU(association.PDV{ContextID: 1, Data: ident[5:20]}),
			pdataPDU(association.PDV{ContextID: 1, Last: true, Data: ident[20:]}),
			pdataPDU(association.PDV{ContextID: 1, Command: true, Last: true, Data: findRSP(StatusSuccess, false)}))
		// The command PDU and the final response pass unchanged.
		if unchanged != 2 || len(ds) != 1 || !bytes.Equal(ds[0], want) {
			t.Errorf("unchanged %d, identifiers % x, want % x", unchanged, ds, want)
		}
	})
	t.Run("a grown identifier is split to the receiver's maximum", func(t *testing.T) {
		ds, _ := feed(t, newW(24, 0), 24,
			pdataPDU(association.PDV{ContextID: 1, Command: true, Last: true, Data: findRSP(StatusPending, true)}),
			pdataPDU(association.PDV{ContextID: 1, Last: true, Data: ident}))
		if len(ds) != 1 || !bytes.Equal(ds[0], want) {
			t.Errorf("identifiers % x, want % x", ds, want)
		}
	})
	t.Run("an identifier over MaxHeld passes unchanged", func(t *testing.T) {
		ds, _ := feed(t, newW(1<<20, 16), 1<<20,
			pdataPDU(association.PDV{ContextID: 1, Command: true, Last: true, Data: findRSP(StatusPending, true)}),
			pdataPDU(association.PDV{ContextID: 1, Data: ident[:10]}),
			pdataPDU(association.PDV{ContextID: 1, Data: ident[10:20]}),
			pdataPDU(association.PDV{ContextID: 1, Last: true, Data: ident[20:]}))
		if len(ds) != 1 || !bytes.Equal(ds[0], ident) {
			t.Errorf("identifiers % x, want the original % x", ds, ident)
		}
	})
	t.Run("other messages pass unchanged", func(t *testing.T) {
		store := (&Command{CommandField: CStoreRQ, MessageID: 3, AffectedSOPClassUID: "1.2", AffectedSOPInstanceUID: "1.3", CommandDataSetType: 0}).Encode()
		_, unchanged := feed(t, newW(1<<20, 0), 1<<20,
			pdataPDU(association.PDV{ContextID: 1, Command: true, Last: true, Data: store}),
			pdataPDU(association.PDV{ContextID: 1, Last: true, Data: ident}))
		if unchanged != 2 {
			t.Errorf("%d of 2 PDUs passed unchanged", unchanged)
		}
	})
	t.Run("unknown transfer syntax: identifier unchanged", func(t *testing.T) {
		ds, _ := feed(t, newW(1<<20, 0), 1<<20,
			pdataPDU(association.PDV{ContextID: 3, Command: true, Last: true, Data: findRSP(StatusPending, true)}),
			pdataPDU(association.PDV{ContextID: 3, Last: true, Data: ident}))
		if len(ds) != 1 || !bytes.Equal(ds[0], ident) {
			t.Errorf("identifiers % x", ds)
		}
	})
	t.Run("malformed PDU is an error", func(t *testing.T) {
		w := newW(1<<20, 0)
		if _, _, err := w.PData(nil, []byte{4, 0, 0, 0, 0, 3, 0, 0, 0}); err == nil {
			t.Error("no error")
		}
		var pe *association.ProtocolError
		if _, _, err := w.PData(nil, pdataPDU(association.PDV{ContextID: 1, Command: true, Data: []byte{1, 2}}, association.PDV{ContextID: 1, Last: true, Data: ident})); !errors.As(err, &pe) {
			t.Errorf("data before the command's last fragment: %v", err)
		}
	})
}

// FuzzRewriteRetrieveAETitle: no panic; an unchanged result is the input
// itself; a changed one parses to the same elements but (0008,0054), and
// rewriting it again changes nothing (the title is no longer the backend's).
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
		back, changed3 := RewriteRetrieveAETitle(nil, out, ts, "EDGE_CALLED", "PACS")
		if !changed3 || len(back) > len(ds)+1 {
			t.Fatalf("the rewritten data set does not parse back: % x", out)
		}
	})
}

// FuzzRetrieveAERewriter: any P-DATA-TF stream; no panic, output PDUs
// within the maximum, and held bytes bounded.
func FuzzRetrieveAERewriter(f *testing.F) {
	ident := join(ex(0x0008, 0x0054, "AE", []byte("PACS")))
	f.Add(pdataPDU(association.PDV{ContextID: 1, Command: true, Last: true, Data: findRSP(StatusPending, true)}), pdataPDU(association.PDV{ContextID: 1, Last: true, Data: ident}), uint16(40))
	f.Add(pdataPDU(association.PDV{ContextID: 1, Command: true, Last: true, Data: findRSP(StatusPending, true)}, association.PDV{ContextID: 1, Data: ident[:3]}), pdataPDU(association.PDV{ContextID: 1, Last: true, Data: ident[3:]}), uint16(13))
	f.Fuzz(func(t *testing.T, a, b []byte, maxPDU uint16) {
		w := &RetrieveAERewriter{From: "PACS", To: "EDGE_CALLED", MaxPDU: uint32(maxPDU), MaxHeld: 256, TransferSyntax: func(uint8) string { return evr }}
		limit := int(max(uint32(maxPDU), 2*pdvOverhead))
		if maxPDU == 0 {
			limit = DefaultFragment
		}
		for _, pdu := range [][]byte{a, b} {
			out, replaced, err := w.PData(nil, pdu)
			if err != nil || !replaced {
				continue
			}
			for len(out) > 0 {
				n := int(binary.BigEndian.Uint32(out[2:]))
				if n > limit {
					t.Fatalf("PDU of %d bytes over %d", n, limit)
				}
				out = out[6+n:]
			}
			if len(w.held) > 256 {
				t.Fatalf("holds %d bytes", len(w.held))
			}
		}
	})
}
