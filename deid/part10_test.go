package deid

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

func metaBytes(elems ...[]byte) []byte {
	b := append(make([]byte, 128), "DICM"...)
	for _, e := range elems {
		b = append(b, e...)
	}
	return b
}

func metaEl(tag uint32, v vr, s string) []byte { return appendElement(nil, true, tag, v, s) }

func TestFileMetaRoundTrip(t *testing.T) {
	in := metaBytes(
		appendHeader(nil, true, tagMetaGroupLength, vrUL, 4), []byte{0, 0, 0, 0}, // a wrong group length is not trusted
		append(appendHeader(nil, true, tagMetaVersion, vrOB, 2), 0, 1),
		metaEl(tagMediaStorageSOPClass, vrUI, "1.2.840.10008.5.1.4.1.1.2"),
		metaEl(tagMediaStorageSOPInst, vrUI, "1.2.3.4"),
		metaEl(tagMetaTransferSyntax, vrUI, ImplicitVRLittleEndian),
		metaEl(0x00020016, vrAE, "HOSPITAL_PACS"),
		metaEl(0x00020100, vrUI, "1.2.3.99"),
	)
	dataset := appendElement(nil, false, 0x00080018, vrUI, "1.2.3.4")
	r := bufio.NewReader(bytes.NewReader(append(in, dataset...)))
	m, err := ReadFileMeta(r)
	if err != nil {
		t.Fatal(err)
	}
	if m.TransferSyntax() != ImplicitVRLittleEndian || m.MediaStorageSOPInstanceUID() != "1.2.3.4" || len(m.Elements) != 7 {
		t.Fatalf("read %+v", m)
	}
	rest, _ := io.ReadAll(r)
	if !bytes.Equal(rest, dataset) {
		t.Errorf("the reader is left at %x, want the data set %x", rest, dataset)
	}
	out, err := EncodeFileMeta(m, "2.25.123", "2.25.9", "TEST_1")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out, []byte("HOSPITAL_PACS")) || bytes.Contains(out, []byte("1.2.3.99")) || bytes.Contains(out, []byte("1.2.3.4")) {
		t.Errorf("the new File Meta keeps what named the original's handlers or UID: %q", out)
	}
	m2, err := ReadFileMeta(bufio.NewReader(bytes.NewReader(out)))
	if err != nil {
		t.Fatal(err)
	}
	if m2.MediaStorageSOPInstanceUID() != "2.25.123" || m2.TransferSyntax() != ImplicitVRLittleEndian ||
		m2.MediaStorageSOPClassUID() != "1.2.840.10008.5.1.4.1.1.2" || m2.Value(tagImplementationClassUID) != "2.25.9" {
		t.Errorf("re-read %+v", m2)
	}
	if gl := binary.LittleEndian.Uint32(m2.Elements[0].Value); int(gl) != len(out)-132-12 {
		t.Errorf("group length %d, want %d", gl, len(out)-132-12)
	}
	if _, err := EncodeFileMeta(m, "", "2.25.9", ""); !errors.Is(err, ErrNoSOPInstance) {
		t.Errorf("no SOP Instance UID: %v", err)
	}
}

func TestFileMetaRefusals(t *testing.T) {
	long := appendHeader(nil, true, 0x00020002, vrUN, MaxFileMeta+1)
	cases := map[string]struct {
		in   []byte
		want string
	}{
		"short":         {make([]byte, 100), "preamble"},
		"no magic":      {make([]byte, 200), "DICM"},
		"no ts":         {metaBytes(metaEl(tagMediaStorageSOPInst, vrUI, "1.2")), "Transfer Syntax"},
		"implicit meta": {metaBytes([]byte{2, 0, 0x10, 0, 4, 0, 0, 0, '1', '.', '2', 0}), "Explicit VR"},
		"out of order":  {metaBytes(metaEl(tagMetaTransferSyntax, vrUI, "1.2"), metaEl(tagMediaStorageSOPInst, vrUI, "1.2")), "ascend"},
		"over bound":    {metaBytes(long), "longer than"},
		"truncated":     {metaBytes(metaEl(tagMetaTransferSyntax, vrUI, "1.2.840.10008.1.2")[:10]), "truncated"},
		"sequence":      {metaBytes(appendHeader(nil, true, 0x00020002, vrSQ, undefinedLength)), "sequences"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ReadFileMeta(bufio.NewReader(bytes.NewReader(tc.in)))
			var fe *FileMetaError
			if !errors.As(err, &fe) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want a FileMetaError saying %q", err, tc.want)
			}
		})
	}
}

// FuzzReadFileMeta: any bytes give a FileMeta or a FileMetaError, never a
// panic or an allocation over the bound; what is read re-encodes and
// reads back the same.
func FuzzReadFileMeta(f *testing.F) {
	f.Add(metaBytes(metaEl(tagMediaStorageSOPInst, vrUI, "1.2.3"), metaEl(tagMetaTransferSyntax, vrUI, ExplicitVRLittleEndian)))
	f.Add(metaBytes(appendHeader(nil, true, 0x00020002, vrOB, 0xfffffff0)))
	f.Add(metaBytes([]byte{2, 0, 1, 0, 'O', 'B', 0, 0, 2, 0, 0, 0, 0, 1}))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := ReadFileMeta(bufio.NewReader(bytes.NewReader(in)))
		if err != nil {
			var fe *FileMetaError
			if !errors.As(err, &fe) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		total := 0
		for _, e := range m.Elements {
			total += len(e.Value)
		}
		if total > MaxFileMeta {
			t.Fatalf("read %d value bytes, over %d", total, MaxFileMeta)
		}
		out, err := EncodeFileMeta(m, "2.25.1", "2.25.2", "X")
		if err != nil {
			t.Fatal(err)
		}
		m2, err := ReadFileMeta(bufio.NewReader(bytes.NewReader(out)))
		if err != nil {
			t.Fatalf("re-read: %v", err)
		}
		if m2.TransferSyntax() != m.TransferSyntax() || m2.MediaStorageSOPInstanceUID() != "2.25.1" {
			t.Fatalf("re-read %+v from %+v", m2, m)
		}
	})
}
