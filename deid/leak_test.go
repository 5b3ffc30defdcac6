package deid

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// leaks runs in through p whole and in one-byte pieces and fails t if any
// output byte carries one of the markers. A refusal gives no output, so it
// leaks nothing.
func leaks(t *testing.T, p *Profile, explicit bool, in []byte, markers ...string) {
	t.Helper()
	whole, _, err := run(t, p, explicit, in)
	ts := ImplicitVRLittleEndian
	if explicit {
		ts = ExplicitVRLittleEndian
	}
	tr, _ := New(p, ts)
	var bytewise []byte
	for i := range in {
		if _, err := tr.Write(in[i : i+1]); err != nil {
			break
		}
		bytewise = tr.Next(bytewise)
	}
	if tr.Close() == nil {
		bytewise = tr.Next(bytewise)
	}
	for _, m := range markers {
		if bytes.Contains(whole, []byte(m)) {
			t.Errorf("%q left in the output (err %v)", m, err)
		}
		if bytes.Contains(bytewise, []byte(m)) {
			t.Errorf("%q left in the output given byte by byte", m)
		}
	}
}

// unEl is an explicit VR element with VR UN whatever its tag (PS3.5
// 6.2.2): what a device writes for an attribute whose VR it does not know.
func unEl(tag uint32, val []byte) []byte {
	b := appendHeader(nil, true, tag, vrUN, uint32(len(val)))
	return append(b, val...)
}

func header(explicit bool) *ds {
	return (&ds{explicit: explicit}).str(0x00080016, ctImage).str(0x00080018, "1.2.3.4.5.6")
}

// Only Pixel Data may be encapsulated (PS3.5 A.4): an OB or OW element of
// undefined length under any other tag is not a way around its action.
func TestLeakBinaryUndefinedLengthOnNonPixelData(t *testing.T) {
	p := testProfile(t, Config{})
	frags := func(tag uint32, v vr, s string) []byte {
		b := appendHeader(nil, true, tag, v, undefinedLength)
		b = append(b, 0xFE, 0xFF, 0x00, 0xE0)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
		return append(b, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0)
	}
	d := header(true)
	d.b = append(d.b, frags(0x00080080, vrOB, "INSTMARKER")...) // Institution Name: D
	d.b = append(d.b, frags(0x00100010, vrOB, "NAMEMARKER")...) // Patient's Name: pseudonym
	d.b = append(d.b, frags(0x00100020, vrOW, "PIDMARKER0")...) // Patient ID: pseudonym
	leaks(t, p, true, d.b, "INSTMARKER", "NAMEMARKER", "PIDMARKER0")
}

// A value sent with VR UN (PS3.5 6.2.2) is still the attribute's value:
// it is cleaned as its attribute's VR says.
func TestLeakUNValueCleanedAsItsAttribute(t *testing.T) {
	p := testProfile(t, Config{Options: []string{"retain-modified-dates", "clean-descriptors"}})
	d := header(true)
	d.b = append(d.b, unEl(0x00080020, []byte("20240105"))...)                 // Study Date: C, shifted
	d.b = append(d.b, unEl(0x00081030, []byte("CT for Zebedee MRN98765 "))...) // Study Description: C
	d.b = append(d.b, unEl(0x0008103E, []byte("20240106"))...)                 // Series Description: C
	d.str(0x00100010, "Zebedee^Quux")                                          // the words to clean
	leaks(t, p, true, d.b, "20240105", "Zebedee", "98765", "20240106")
}

// A value whose explicit VR is not its attribute's is still replaced as
// its attribute is: a Study Instance UID written as LO is still a UID, a
// Study Date written as TM still a date.
func TestLeakWrongVRValue(t *testing.T) {
	p := testProfile(t, Config{Options: []string{"retain-modified-dates"}})
	d := header(true)
	d.el(0x00080020, vrTM, []byte("20240105"))       // Study Date: C, shifted
	d.el(0x00080021, vrOB, []byte("20240107"))       // Series Date: C, shifted
	d.el(0x0020000D, vrLO, []byte("1.2.999.424242")) // Study Instance UID: U
	d.el(0x0020000E, vrOB, []byte("1.2.999.535353")) // Series Instance UID: U
	leaks(t, p, true, d.b, "20240105", "20240107", "424242", "535353")
}

// A sequence sent with VR UN (PS3.5 6.2.2: its items in Implicit VR Little
// Endian), of defined length, is entered and cleaned like any sequence.
func TestLeakSequenceEncodedAsUN(t *testing.T) {
	p := testProfile(t, Config{})
	item := (&ds{explicit: false}).str(0x00100010, "Seqname^Marker").str(0x00100030, "19451231").str(0x00081155, "1.2.999.777777").b
	body := append([]byte{0xFE, 0xFF, 0x00, 0xE0}, binary.LittleEndian.AppendUint32(nil, uint32(len(item)))...)
	body = append(body, item...)
	undef := append([]byte{0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF}, item...)
	undef = append(undef, 0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0)
	t.Run("defined length", func(t *testing.T) {
		d := header(true)
		d.b = append(d.b, unEl(0x00081115, body)...) // Referenced Series Sequence: not in Table E.1-1, entered
		leaks(t, p, true, d.b, "Seqname", "Marker", "19451231", "777777")
	})
	t.Run("undefined length", func(t *testing.T) {
		d := header(true)
		d.b = appendHeader(d.b, true, 0x00081115, vrUN, undefinedLength)
		d.b = append(d.b, undef...)
		d.b = append(d.b, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0)
		leaks(t, p, true, d.b, "Seqname", "Marker", "19451231", "777777")
	})
}

// File Meta Information (group 0002) has no place in a data set (PS3.10
// 7.1); sent inside one, none of it goes on.
func TestLeakFileMetaInDataSet(t *testing.T) {
	p := testProfile(t, Config{})
	d := (&ds{explicit: true}).el(0x00020016, vrAE, []byte("AEMARKER")).
		el(0x00020100, vrUI, []byte("1.2.999.616161")).el(0x00020102, vrOB, []byte("PRIVMETAMARKER"))
	d.str(0x00080016, ctImage).str(0x00080018, "1.2.3.4.5.6")
	leaks(t, p, true, d.b, "AEMARKER", "616161", "PRIVMETAMARKER")
}

// An attribute that is not a sequence, sent as one (undefined length in
// Implicit VR, or VR SQ), does not keep what it holds because its action
// is a replacement.
func TestLeakValueAttributeSentAsSequence(t *testing.T) {
	p := testProfile(t, Config{})
	for _, explicit := range []bool{false, true} {
		item := (&ds{explicit: explicit}).str(0x00080070, "SEQNAMEMARKER").b // Manufacturer: not in the table
		d := header(explicit)
		d.b = appendHeader(d.b, explicit, 0x00100010, vrSQ, undefinedLength)
		d.b = append(d.b, 0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF)
		d.b = append(d.b, item...)
		d.b = append(d.b, 0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0)
		leaks(t, p, explicit, d.b, "SEQNAMEMARKER")
	}
}

func beEl(b []byte, tag uint32, v vr, s string) []byte {
	if len(s)%2 == 1 {
		s += " "
	}
	b = binary.BigEndian.AppendUint16(b, uint16(tag>>16))
	b = binary.BigEndian.AppendUint16(b, uint16(tag))
	b = append(b, byte(v>>8), byte(v))
	return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...)
}

// A big endian data set announced as little endian reads as elements of
// tags no table lists: none of it may go out before the transform fails
// on it.
func TestLeakBigEndianSentAsLittle(t *testing.T) {
	p := testProfile(t, Config{})
	var b []byte
	b = beEl(b, 0x00080005, vrCS, "ISO_IR 100")
	b = beEl(b, 0x00080016, vrUI, ctImage)
	b = beEl(b, 0x00080018, vrUI, "1.2.3.4")
	b = beEl(b, 0x00100010, vrPN, "BENAMEMARKER")
	b = beEl(b, 0x00100020, vrLO, "BEPIDMARKER")
	leaks(t, p, true, b, "BENAMEMARKER", "BEPIDMARKER")
}

// A transfer syntax that deflates the data set, or a private one, cannot
// be read as Explicit VR Little Endian: what the transform would pass of
// it as kept attributes is the compressed original.
func TestLeakDeflatedOrPrivateSyntaxNotSupported(t *testing.T) {
	for _, ts := range []string{"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.95",
		"1.2.840.10008.1.2.4.205", "1.3.6.1.4.1.99999.1.2", "1.2.840.10008.1.20"} {
		if Supported(ts) {
			t.Errorf("%s reported readable", ts)
		}
	}
	for _, ts := range []string{"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.5\x00"} {
		if !Supported(ts) {
			t.Errorf("%s reported unreadable", ts)
		}
	}
}
