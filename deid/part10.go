package deid

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// DICOM Part 10 files (PS3.10 7.1): a 128-byte preamble, the magic "DICM",
// then the File Meta Information, group 0002 in Explicit VR Little Endian
// whatever the data set's transfer syntax (PS3.10 7.1, PS3.5 7.1.2), then
// the data set. The transform works on the data set alone; this file
// reads and writes the wrapper around it for `dicomedge deidentify`.

const (
	part10Preamble = 128
	// MaxFileMeta bounds the File Meta Information read from a file: its
	// elements are a handful of UIDs and AE titles, far below this.
	MaxFileMeta = 64 << 10
)

// File Meta Information elements (PS3.10 Table 7.1-1).
const (
	tagMetaGroupLength        = 0x00020000
	tagMetaVersion            = 0x00020001
	tagMediaStorageSOPClass   = 0x00020002
	tagMediaStorageSOPInst    = 0x00020003
	tagMetaTransferSyntax     = 0x00020010
	tagImplementationClassUID = 0x00020012
	tagImplementationVersion  = 0x00020013
)

// MetaElement is one element of the File Meta Information, as read.
type MetaElement struct {
	Tag   uint32
	VR    string
	Value []byte
}

// FileMeta is a Part 10 file's File Meta Information.
type FileMeta struct {
	Elements []MetaElement // in file order
}

// Value is tag's value without its padding, or "".
func (m *FileMeta) Value(tag uint32) string {
	for _, e := range m.Elements {
		if e.Tag == tag {
			return strings.TrimRight(string(e.Value), "\x00 ")
		}
	}
	return ""
}

// TransferSyntax is the data set's transfer syntax (0002,0010).
func (m *FileMeta) TransferSyntax() string { return m.Value(tagMetaTransferSyntax) }

// MediaStorageSOPClassUID is (0002,0002).
func (m *FileMeta) MediaStorageSOPClassUID() string { return m.Value(tagMediaStorageSOPClass) }

// MediaStorageSOPInstanceUID is (0002,0003).
func (m *FileMeta) MediaStorageSOPInstanceUID() string { return m.Value(tagMediaStorageSOPInst) }

// FileMetaError is a file that is not a readable Part 10 file.
type FileMetaError struct {
	Offset int64
	Msg    string
}

func (e *FileMetaError) Error() string {
	return fmt.Sprintf("not a readable DICOM Part 10 file (byte %d): %s", e.Offset, e.Msg)
}

// ReadFileMeta reads the preamble, the magic and the File Meta
// Information from r, leaving r at the data set's first byte. It reads
// element by element while the group is 0002 (the group length is not
// trusted to say where the group ends), at most MaxFileMeta bytes, each
// length checked against what is left before anything is allocated.
func ReadFileMeta(r *bufio.Reader) (*FileMeta, error) {
	var pos int64
	fail := func(format string, args ...any) error {
		return &FileMetaError{Offset: pos, Msg: fmt.Sprintf(format, args...)}
	}
	head := make([]byte, part10Preamble+4)
	n, err := io.ReadFull(r, head)
	pos = int64(n)
	if err != nil {
		return nil, fail("shorter than the 128-byte preamble and \"DICM\"")
	}
	if string(head[part10Preamble:]) != "DICM" {
		return nil, fail("no \"DICM\" after the 128-byte preamble (a data set without File Meta Information is not read)")
	}
	m := &FileMeta{}
	var last uint32
	for {
		peek, err := r.Peek(2)
		if err == io.EOF && len(peek) == 0 {
			break
		}
		if err != nil && len(peek) < 2 {
			return nil, fail("truncated element")
		}
		if binary.LittleEndian.Uint16(peek) != 0x0002 {
			break
		}
		var h [12]byte
		if _, err := io.ReadFull(r, h[:8]); err != nil {
			return nil, fail("truncated File Meta element header")
		}
		tag := uint32(binary.LittleEndian.Uint16(h[0:]))<<16 | uint32(binary.LittleEndian.Uint16(h[2:]))
		v := vr(h[4])<<8 | vr(h[5])
		if !v.known() {
			return nil, fail("%s has VR %q: File Meta Information is Explicit VR Little Endian (PS3.10 7.1)", FormatTag(tag), printable(h[4:6]))
		}
		if len(m.Elements) > 0 && tag <= last {
			return nil, fail("%s follows %s: elements must ascend (PS3.5 7.1)", FormatTag(tag), FormatTag(last))
		}
		var length uint32
		hl := int64(8)
		if v.longHeader() {
			if _, err := io.ReadFull(r, h[8:12]); err != nil {
				return nil, fail("truncated File Meta element header")
			}
			length, hl = binary.LittleEndian.Uint32(h[8:]), 12
		} else {
			length = uint32(binary.LittleEndian.Uint16(h[6:]))
		}
		pos += hl
		if v == vrSQ || length == undefinedLength {
			return nil, fail("%s: File Meta Information holds no sequences or undefined lengths", FormatTag(tag))
		}
		if int64(length) > MaxFileMeta-(pos-part10Preamble-4) {
			return nil, fail("File Meta Information longer than %d bytes", MaxFileMeta)
		}
		val := make([]byte, length)
		if _, err := io.ReadFull(r, val); err != nil {
			return nil, fail("%s: value truncated", FormatTag(tag))
		}
		pos += int64(length)
		m.Elements = append(m.Elements, MetaElement{Tag: tag, VR: v.String(), Value: val})
		last = tag
	}
	if m.TransferSyntax() == "" {
		return nil, fail("File Meta Information has no Transfer Syntax UID (0002,0010)")
	}
	return m, nil
}

func printable(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		if c >= 0x20 && c < 0x7f {
			s.WriteByte(c)
		} else {
			fmt.Fprintf(&s, "\\x%02x", c)
		}
	}
	return s.String()
}

// ErrNoSOPInstance is a data set without a SOP Instance UID, whose file
// therefore cannot name one.
var ErrNoSOPInstance = errors.New("no SOP Instance UID")

// EncodeFileMeta writes the preamble, the magic and the File Meta
// Information of a de-identified file: the version, the Media Storage SOP
// Class UID and the transfer syntax as m has them, Media Storage SOP
// Instance UID (0002,0003) set to sopInstance (the data set's new one),
// and the Implementation Class UID and Version Name of the writer; the
// group length (0002,0000) is computed. The other elements of m (the
// sending and receiving AE titles, source and private information) name
// who handled the original and are left out.
func EncodeFileMeta(m *FileMeta, sopInstance, implClassUID, implVersion string) ([]byte, error) {
	if strings.TrimRight(sopInstance, "\x00 ") == "" {
		return nil, ErrNoSOPInstance
	}
	var body []byte
	body = appendHeader(body, true, tagMetaVersion, vrOB, 2)
	body = append(body, 0x00, 0x01) // PS3.10 7.1: version 1 of the header
	body = appendElement(body, true, tagMediaStorageSOPClass, vrUI, m.MediaStorageSOPClassUID())
	body = appendElement(body, true, tagMediaStorageSOPInst, vrUI, strings.TrimRight(sopInstance, "\x00 "))
	body = appendElement(body, true, tagMetaTransferSyntax, vrUI, m.TransferSyntax())
	body = appendElement(body, true, tagImplementationClassUID, vrUI, implClassUID)
	if implVersion != "" {
		body = appendElement(body, true, tagImplementationVersion, vrSH, implVersion)
	}
	out := bytes.Repeat([]byte{0}, part10Preamble)
	out = append(out, "DICM"...)
	out = appendHeader(out, true, tagMetaGroupLength, vrUL, 4)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(body)))
	return append(out, body...), nil
}
