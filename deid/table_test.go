package deid

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
)

type jsonRow struct {
	Name  string `json:"name"`
	Tag   string `json:"tag"`
	Basic string `json:"basicProfile"`
}

func loadTable(t *testing.T) []jsonRow {
	t.Helper()
	data, err := os.ReadFile("testdata/confidentiality_profile_attributes.json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []jsonRow
	if err := json.Unmarshal(data, &rows); err != nil {
		t.Fatal(err)
	}
	return rows
}

// markerValue is a value of v that carries a findable marker for tag.
func markerValue(tag uint32, v vr) []byte {
	switch v {
	case vrDA:
		return []byte("20011231")
	case vrTM:
		return []byte("235959")
	case vrDT:
		return []byte("20011231235959")
	case vrAS:
		return []byte("042Y")
	case vrDS:
		return []byte("12.5")
	case vrIS:
		return []byte("42")
	case vrUI:
		return []byte(fmt.Sprintf("1.2.3.4.%d", tag))
	case vrUS, vrSS:
		return []byte("MK")
	case vrUL, vrSL, vrFL, vrAT:
		return []byte("MARK")
	case vrFD, vrSV, vrUV:
		return []byte("MARKMARK")
	}
	if v.text() {
		return []byte(fmt.Sprintf("MK%08X", tag))
	}
	return []byte("MKbinary")
}

// plainSequences are two sequences Table E.1-1 does not list, so they are
// kept and entered: the nesting the tests put attributes two deep in.
func plainSequences(t *testing.T) (a, b uint32) {
	var found []uint32
	for _, e := range dictionary {
		if e.vr == vrSQ && e.mask == 0xffffffff && row(e.tag) == nil && e.tag > 0x00080018 && e.tag>>16 == 0x0008 {
			found = append(found, e.tag)
		}
	}
	if len(found) < 2 {
		t.Fatal("no plain sequences in the dictionary")
	}
	return found[0], found[1]
}

// TestTableE11 runs every attribute of PS3.15 Table E.1-1 through the
// basic profile, in both little endian encodings, at the top level and two
// sequences deep, and checks the action the table gives.
func TestTableE11(t *testing.T) {
	rows := loadTable(t)
	p := testProfile(t, Config{Name: "t"})
	seqA, seqB := plainSequences(t)
	checked := 0
	for _, r := range rows {
		tag, mask, ok := parseTagPattern(r.Tag)
		if !ok {
			continue // private attributes: TestPrivateRemoved
		}
		if mask != 0xffffffff {
			tag |= 0x00020000 // 50xx, 60xx: group 5002 / 6002 (the X digits set to 2)
			tag &^= 0x0000ffff &^ mask
		}
		if tag>>16 == 0 || tag == tagEncapsulatedDocument || tag == tagPatientIdentityRemoved ||
			tag == tagDeidentificationMethod || tag == tagDeidentificationMethodCodeSq || tag == tagLongitudinalTemporalModified {
			continue // command elements (TestCommandUID), refused or written by the profile (TestInserted)
		}
		v := lookupVR(tag)
		want := expectedBasic(r.Basic)
		if tag == tagPatientID || tag == tagPatientName {
			want = Pseudonym // the pseudonym, over the table's Z and Z/D
		}
		for _, explicit := range []bool{false, true} {
			for _, nested := range []bool{false, true} {
				name := fmt.Sprintf("%s/%s/explicit=%v/nested=%v", r.Tag, r.Basic, explicit, nested)
				t.Run(name, func(t *testing.T) {
					els := map[uint32][]byte{}
					put := func(tag uint32, b []byte) { els[tag] = b }
					put(tagSOPClassUID, (&ds{explicit: explicit}).str(tagSOPClassUID, "1.2.840.10008.5.1.4.1.1.2").b)
					put(tagSOPInstanceUID, (&ds{explicit: explicit}).str(tagSOPInstanceUID, "1.2.3.999").b)
					var attr []byte
					if v == vrSQ {
						inner := (&ds{explicit: explicit}).str(tagCodeValue, "MKINNER").b
						attr = (&ds{explicit: explicit}).seq(tag, explicit, inner).b
					} else {
						attr = (&ds{explicit: explicit}).el(tag, v, markerValue(tag, v)).b
					}
					path := []uint32{tag}
					if nested {
						inB := (&ds{explicit: explicit}).seq(seqB, !explicit, attr).b
						put(seqA, (&ds{explicit: explicit}).seq(seqA, explicit, inB).b)
						path = []uint32{seqA, seqB, tag}
					} else {
						put(tag, attr)
					}
					var keys []uint32
					for k := range els {
						keys = append(keys, k)
					}
					sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
					var in []byte
					for _, k := range keys {
						in = append(in, els[k]...)
					}
					out, _, err := run(t, p, explicit, in)
					if err != nil {
						t.Fatal(err)
					}
					got := find(parse(t, out, explicit), path...)
					checkAction(t, want, v, tag, got)
				})
				checked++
			}
		}
	}
	if checked < 4*600 {
		t.Fatalf("only %d cases checked", checked)
	}
}

// expectedBasic is the resolution of Table E.1-1's codes for an
// edge that does not know each IOD's attribute types, written out here
// independently of the profile's own.
func expectedBasic(code string) Action {
	return map[string]Action{"X": Remove, "Z": Zero, "X/Z": Zero, "D": Dummy, "X/D": Dummy, "Z/D": Dummy,
		"X/Z/D": Dummy, "U": UID, "X/Z/U*": UID, "K": Keep}[code]
}

func checkAction(t *testing.T, want Action, v vr, tag uint32, got *parsed) {
	t.Helper()
	orig := markerValue(tag, v)
	switch want {
	case Remove:
		if got != nil {
			t.Fatalf("%s: want removed, found %q", FormatTag(tag), got.value)
		}
		return
	}
	if got == nil {
		t.Fatalf("%s: want %s, the attribute is gone", FormatTag(tag), want)
	}
	if v == vrSQ {
		if want == Zero && !got.undef && len(got.value) != 0 {
			t.Fatalf("%s: want an empty sequence", FormatTag(tag))
		}
		return
	}
	val := bytes.TrimRight(got.value, "\x00 ")
	switch want {
	case Keep:
		if !bytes.Equal(val, bytes.TrimRight(orig, "\x00 ")) {
			t.Fatalf("%s: want kept %q, got %q", FormatTag(tag), orig, val)
		}
	case Zero:
		if len(got.value) != 0 {
			t.Fatalf("%s: want zero length, got %q", FormatTag(tag), got.value)
		}
	case Dummy:
		switch {
		case len(got.value) == 0:
			t.Fatalf("%s: want a dummy value, got none", FormatTag(tag))
		case v == vrUI && !bytes.HasPrefix(val, []byte("2.25.")):
			t.Fatalf("%s: want a new UID, got %q", FormatTag(tag), val)
		case v.text() && v != vrUI && bytes.Equal(val, orig):
			t.Fatalf("%s: the dummy is the original %q", FormatTag(tag), val)
		case !v.text() && !bytes.Equal(got.value, make([]byte, len(orig))):
			t.Fatalf("%s: want %d zero bytes, got %q", FormatTag(tag), len(orig), got.value)
		}
	case UID:
		if v == vrUI && (!bytes.HasPrefix(val, []byte("2.25.")) || bytes.Equal(val, orig)) {
			t.Fatalf("%s: want a 2.25 UID, got %q", FormatTag(tag), val)
		}
	case Pseudonym:
		if !bytes.HasPrefix(val, []byte("ANON-")) {
			t.Fatalf("%s: want the pseudonym, got %q", FormatTag(tag), val)
		}
	default:
		t.Fatalf("%s: unexpected action %s for the basic profile", FormatTag(tag), want)
	}
	if bytes.Contains(got.value, []byte("MK")) && want != Keep {
		t.Fatalf("%s: the marker is still there: %q", FormatTag(tag), got.value)
	}
}

// parseTagPattern reads a table row's tag as the generator does.
func parseTagPattern(s string) (tag, mask uint32, ok bool) {
	s = strings.ToUpper(s)
	if len(s) != 11 || s[0] != '(' || s[5] != ',' || s[10] != ')' {
		return 0, 0, false
	}
	for _, c := range s[1:5] + s[6:10] {
		tag, mask = tag<<4, mask<<4
		if c == 'X' {
			continue
		}
		var v uint32
		switch {
		case c >= '0' && c <= '9':
			v = uint32(c - '0')
		case c >= 'A' && c <= 'F':
			v = uint32(c-'A') + 10
		default:
			return 0, 0, false
		}
		tag, mask = tag|v, mask|0xf
	}
	return tag, mask, true
}

// TestTableGenerated: every row of the JSON is in the generated table with
// the same code, so the table the transform uses is the standard's.
func TestTableGenerated(t *testing.T) {
	n := 0
	for _, r := range loadTable(t) {
		tag, mask, ok := parseTagPattern(r.Tag)
		if !ok {
			continue
		}
		found := false
		for _, g := range profileTable {
			if g.tag == tag && g.mask == mask {
				found = g.basic == r.Basic
			}
		}
		if !found {
			t.Errorf("%s (%s) %s: not in the generated table with that code", r.Tag, r.Name, r.Basic)
		}
		n++
	}
	if n != len(profileTable) {
		t.Errorf("%d rows in the JSON, %d generated", n, len(profileTable))
	}
}

// optValue is markerValue, but free text carries a record number that
// cleaning must take out.
func optValue(tag uint32, v vr) []byte {
	switch v {
	case vrAE, vrCS, vrLO, vrLT, vrPN, vrSH, vrST, vrUC, vrUT:
		return []byte("NOTE12345678")
	}
	return markerValue(tag, v)
}

// optionColumns maps the JSON's option columns to the policy's names.
var optionColumns = map[string]string{
	"rtnLongFullDatesOpt": "retain-full-dates", "rtnLongModifDatesOpt": "retain-modified-dates",
	"rtnPatCharsOpt": "retain-patient-characteristics", "rtnDevIdOpt": "retain-device-identity",
	"rtnInstIdOpt": "retain-institution-identity", "rtnUIDsOpt": "retain-uids", "rtnSafePrivOpt": "retain-safe-private",
	"cleanDescOpt": "clean-descriptors", "cleanStructContOpt": "clean-structured-content", "cleanGraphOpt": "clean-graphics",
}

// TestTableE11Options: with each option alone, every attribute whose
// option column says K leaves as it came, and every one that says C leaves
// cleaned (a date moved, text without its marker's digit run, a sequence
// entered), in both encodings, at the top level and two sequences deep.
func TestTableE11Options(t *testing.T) {
	data, err := os.ReadFile("testdata/confidentiality_profile_attributes.json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []map[string]string
	if err := json.Unmarshal(data, &rows); err != nil {
		t.Fatal(err)
	}
	seqA, seqB := plainSequences(t)
	checked := 0
	for col, opt := range optionColumns {
		p := testProfile(t, Config{Options: []string{opt}})
		for _, r := range rows {
			code := r[col]
			tag, mask, ok := parseTagPattern(r["tag"])
			if code == "" || !ok || mask != 0xffffffff || tag>>16 == 0 || tag == tagEncapsulatedDocument || tag == tagPatientID || tag == tagPatientName {
				continue
			}
			v := lookupVR(tag)
			for _, explicit := range []bool{false, true} {
				for _, nested := range []bool{false, true} {
					var attr []byte
					if v == vrSQ {
						attr = (&ds{explicit: explicit}).seq(tag, explicit, (&ds{explicit: explicit}).str(tagCodeValue, "MKINNER").b).b
					} else {
						attr = (&ds{explicit: explicit}).el(tag, v, optValue(tag, v)).b
					}
					in := (&ds{explicit: explicit}).str(tagSOPClassUID, ctImage).b
					path := []uint32{tag}
					if nested {
						in = append(in, (&ds{explicit: explicit}).seq(seqA, explicit, (&ds{explicit: explicit}).seq(seqB, !explicit, attr).b).b...)
						path = []uint32{seqA, seqB, tag}
					} else if tag > tagSOPClassUID {
						in = append(in, attr...)
					} else {
						in = append(attr, in...)
					}
					out, _, err := run(t, p, explicit, in)
					if err != nil {
						t.Fatalf("%s %s: %v", opt, r["tag"], err)
					}
					got := find(parse(t, out, explicit), path...)
					if got == nil {
						t.Fatalf("%s %s (%s): gone, want %s", opt, r["tag"], v, code)
					}
					orig := optValue(tag, v)
					val := bytes.TrimRight(got.value, "\x00 ")
					switch {
					case v == vrSQ:
					case code == "K" && !bytes.Equal(val, bytes.TrimRight(orig, "\x00 ")):
						t.Errorf("%s %s: want kept %q, got %q", opt, r["tag"], orig, val)
					case code == "C" && (v == vrDA || v == vrDT) && (bytes.Equal(val, orig) || len(val) < 8):
						t.Errorf("%s %s: want a shifted date, got %q", opt, r["tag"], val)
					case code == "C" && v.text() && v != vrTM && v != vrDA && v != vrDT && v != vrUI && bytes.Contains(val, []byte("12345678")):
						t.Errorf("%s %s: want cleaned, got %q", opt, r["tag"], val)
					}
					checked++
				}
			}
		}
	}
	if checked < 1500 {
		t.Fatalf("only %d cases", checked)
	}
}
