package deid

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"golang.org/x/text/transform"
)

const ctImage = "1.2.840.10008.5.1.4.1.1.2"

func sample(explicit bool, pixels []byte) []byte {
	d := &ds{explicit: explicit}
	d.str(0x00080005, "ISO_IR 100")
	d.str(0x00080016, ctImage).str(0x00080018, "1.2.3.4.5.6").str(0x00080020, "20240105")
	d.str(0x00080050, "ACC123456").str(0x00080090, "Dr^Who").str(0x00081030, "CT HEAD for Smith 20240105")
	d.seq(0x00081140, explicit, (&ds{explicit: explicit}).str(0x00081150, "1.2.840.10008.5.1.4.1.1.2").str(0x00081155, "1.2.3.4.7").b)
	d.str(0x00100010, "Smith^John").str(0x00100020, "MRN0001").str(0x00100030, "19700101")
	d.el(0x00110010, vrLO, []byte("PRIVATE CREATOR")).el(0x00111001, vrLO, []byte("PRIVATE SECRET"))
	d.str(0x0020000D, "1.2.3.4.100").str(0x0020000E, "1.2.3.4.101")
	d.el(0x00280010, vrUS, []byte{4, 0}).el(0x00280011, vrUS, []byte{4, 0})
	if pixels != nil {
		d.el(0x7FE00010, vrOW, pixels)
	}
	return d.b
}

func TestFragmentationSameOutput(t *testing.T) {
	p := testProfile(t, Config{Name: "t", Options: []string{"retain-modified-dates", "clean-descriptors"}})
	for _, explicit := range []bool{false, true} {
		in := sample(explicit, bytes.Repeat([]byte{1, 2, 3, 4}, 8))
		whole, res, err := run(t, p, explicit, in)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range []int{1, 2, 3, 7, 64, 1000} {
			tr, _ := New(p, map[bool]string{false: ImplicitVRLittleEndian, true: ExplicitVRLittleEndian}[explicit])
			var out []byte
			for b := in; len(b) > 0; {
				n := min(size, len(b))
				if _, err := tr.Write(b[:n]); err != nil {
					t.Fatal(err)
				}
				out = tr.Next(out)
				b = b[n:]
			}
			if err := tr.Close(); err != nil {
				t.Fatal(err)
			}
			out = tr.Next(out)
			if !bytes.Equal(out, whole) {
				t.Fatalf("explicit=%v, %d-byte pieces: output differs", explicit, size)
			}
		}
		for _, leak := range []string{"Smith", "John", "MRN0001", "ACC123456", "Who", "PRIVATE", "1.2.3.4.5.6", "1.2.3.4.100", "1.2.3.4.7", "20240105", "19700101"} {
			if bytes.Contains(whole, []byte(leak)) {
				t.Errorf("explicit=%v: %q left in the output", explicit, leak)
			}
		}
		els := parse(t, whole, explicit)
		if got := string(bytes.TrimRight(find(els, 0x00081030).value, " ")); got != "CT HEAD for XXXXX XXXXXXXX" {
			t.Errorf("cleaned descriptor %q", got)
		}
		if got := string(bytes.TrimRight(find(els, 0x00080020).value, " ")); got == "20240105" || len(got) != 8 {
			t.Errorf("study date %q not shifted", got)
		}
		if got := string(find(els, 0x00100020).value); !strings.HasPrefix(got, res.Pseudonym) {
			t.Errorf("patient ID %q, pseudonym %q", got, res.Pseudonym)
		}
		if string(bytes.TrimRight(find(els, 0x00080018).value, "\x00")) != res.SOPInstanceUID || res.OriginalSOPInstanceUID != "1.2.3.4.5.6" {
			t.Errorf("result %+v", res)
		}
		for _, tag := range []uint32{tagPatientIdentityRemoved, tagDeidentificationMethod, tagDeidentificationMethodCodeSq, tagLongitudinalTemporalModified} {
			if find(els, tag) == nil {
				t.Errorf("%s not added", FormatTag(tag))
			}
		}
		if !bytes.Equal(find(els, 0x7FE00010).value, bytes.Repeat([]byte{1, 2, 3, 4}, 8)) {
			t.Error("pixel data changed")
		}
	}
}

func TestSameKeySameUIDs(t *testing.T) {
	p := testProfile(t, Config{})
	_, a, _ := run(t, p, true, sample(true, nil))
	_, b, _ := run(t, testProfile(t, Config{}), false, sample(false, nil))
	if a.StudyUID != b.StudyUID || a.Pseudonym != b.Pseudonym || a.StudyUID == "" {
		t.Fatalf("%+v\n%+v", a, b)
	}
	other := testProfile(t, Config{Key: bytes.Repeat([]byte{1}, 32)})
	_, c, _ := run(t, other, true, sample(true, nil))
	if c.StudyUID == a.StudyUID || c.Pseudonym == a.Pseudonym {
		t.Fatal("another key gives the same replacements")
	}
}

func TestRefusals(t *testing.T) {
	p := testProfile(t, Config{})
	sc := (&ds{explicit: true}).str(0x00080016, "1.2.840.10008.5.1.4.1.1.7").str(0x00080018, "1.2.3").b
	cases := map[string]struct {
		in     []byte
		reason string
	}{
		"burned in YES": {(&ds{explicit: true}).str(0x00080016, ctImage).str(0x00280301, "YES").b, "burned-in-annotation"},
		"SC without":    {sc, "burned-in-annotation"},
		"pdf":           {(&ds{explicit: true}).str(0x00080016, "1.2.840.10008.5.1.4.1.1.104.1").el(0x00420011, vrOB, []byte("%PDF")).b, "encapsulated-document"},
		"swapped":       {(&ds{explicit: true}).str(0x00100020, "A").str(0x00100010, "B").b, "malformed-data-set"},
		"repeated":      {(&ds{explicit: true}).str(0x00100020, "A").str(0x00100020, "B").b, "malformed-data-set"},
		"truncated":     {(&ds{explicit: true}).str(0x00100020, "ABCDEF").b[:12], "malformed-data-set"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			out, _, err := run(t, p, true, c.in)
			var r *RefusedError
			if !errors.As(err, &r) || r.Reason != c.reason {
				t.Fatalf("err %v, want %s", err, c.reason)
			}
			if len(out) != 0 {
				t.Fatal("output given for a refused instance")
			}
		})
	}
	pass := testProfile(t, Config{PassBurnedIn: true, Keep: []uint32{tagEncapsulatedDocument}})
	if _, _, err := run(t, pass, true, sc); err != nil {
		t.Fatalf("burned_in = pass: %v", err)
	}
	var m *MalformedError
	_, _, err := run(t, p, true, cases["swapped"].in)
	if !errors.As(err, &m) || !m.Order || m.Prev != 0x00100020 || m.Tag != 0x00100010 {
		t.Fatalf("order violation %+v", m)
	}
}

// TestLargePixelDataStreams: the output of a large Pixel Data comes as its
// input does, so nothing near its size is held.
func TestLargePixelDataStreams(t *testing.T) {
	p := testProfile(t, Config{})
	tr, _ := New(p, ExplicitVRLittleEndian)
	hdr := sample(true, nil)
	hdr = appendHeader(hdr, true, 0x7FE00010, vrOW, 64<<20)
	if _, err := tr.Write(hdr); err != nil {
		t.Fatal(err)
	}
	tr.Next(nil)
	chunk := make([]byte, 1<<20)
	for i := 0; i < 64; i++ {
		if _, err := tr.Write(chunk); err != nil {
			t.Fatal(err)
		}
		if n := tr.Pending(); n != len(chunk) {
			t.Fatalf("%d bytes pending after a %d-byte write", n, len(chunk))
		}
		tr.Next(nil)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestHeaderOverBound(t *testing.T) {
	p := testProfile(t, Config{MaxHeader: 4096})
	d := (&ds{explicit: true}).str(0x00080016, ctImage).el(0x00180015, vrCS, bytes.Repeat([]byte("A"), 8000))
	_, _, err := run(t, p, true, d.b)
	var r *RefusedError
	if !errors.As(err, &r) || r.Reason != "over-bound" {
		t.Fatalf("err %v", err)
	}
}

func TestTransformReader(t *testing.T) {
	p := testProfile(t, Config{})
	in := sample(true, bytes.Repeat([]byte{9}, 100000))
	want, _, _ := run(t, p, true, in)
	tr, _ := New(p, ExplicitVRLittleEndian)
	got, err := io.ReadAll(transform.NewReader(bytes.NewReader(in), tr))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("err %v, same %v", err, bytes.Equal(got, want))
	}
}

func TestParseTag(t *testing.T) {
	for s, want := range map[string]uint32{"(0008,0060)": 0x00080060, "0008,0060": 0x00080060, "00080060": 0x00080060, "Modality": 0x00080060, "PatientID": 0x00100020} {
		if got, err := ParseTag(s); err != nil || got != want {
			t.Errorf("%s: %08X %v", s, got, err)
		}
	}
	for _, s := range []string{"Modalty", "(0008,006)", "", "0008,00ZZ"} {
		if _, err := ParseTag(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}
