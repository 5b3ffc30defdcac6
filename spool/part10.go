package spool

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// PS3.10 7.1: a Part 10 file is a 128-byte preamble, "DICM", then the File
// Meta Information group (0002), Explicit VR Little Endian, headed by its
// group length (0002,0000).
const (
	preambleLen = 128
	// ImplementationClassUID and ImplementationVersionName identify the
	// edge as the writer of the File Meta (0002,0012), (0002,0013).
	ImplementationClassUID    = "2.25.232425370930189296468219612370012386197"
	ImplementationVersionName = "DICOMEDGE_SPOOL"
	// maxMetaLen bounds the meta group a reader accepts: the edge writes
	// under 2 KiB.
	maxMetaLen = 16 << 10
	// PrivateInfoCreatorUID names the edge as the creator of the Private
	// Information (0002,0102) it writes in each spooled file's File Meta
	// (PS3.10 7.1): the instance's Meta as JSON, so the one fsync of the
	// file makes the instance and what the edge knows of it durable.
	PrivateInfoCreatorUID = "2.25.232425370930189296468219612370012386198"
)

// appendElement appends one Explicit VR Little Endian element, padding an
// odd value (UIDs with NUL, text with a space, PS3.5 6.2).
func appendElement(b []byte, group, elem uint16, vr string, value []byte) []byte {
	pad := len(value)%2 == 1
	n := len(value)
	if pad {
		n++
	}
	b = binary.LittleEndian.AppendUint16(b, group)
	b = binary.LittleEndian.AppendUint16(b, elem)
	b = append(b, vr...)
	switch vr {
	case "OB", "OW", "SQ", "UN", "UT":
		// PS3.5 7.1.2: two reserved bytes and a 32-bit length.
		b = append(b, 0, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(n))
	default:
		b = binary.LittleEndian.AppendUint16(b, uint16(n))
	}
	b = append(b, value...)
	if pad {
		if vr == "UI" || vr == "OB" {
			b = append(b, 0)
		} else {
			b = append(b, ' ')
		}
	}
	return b
}

// fileMeta returns the preamble, "DICM" and the File Meta Information of m
// (PS3.10 7.1): version 00 01, the SOP class and instance, the transfer
// syntax the data set was received in, the edge's implementation and the
// sender's AE title as Source Application Entity Title (0002,0016).
func fileMeta(m *Meta) []byte { return fileMetaWith(m, true) }

// PublicFileMeta is the File Meta of an instance as it leaves the edge
// (STOW-RS sends whole Part 10 files): without the edge's Private
// Information, which names the sender, its client and the rule.
func PublicFileMeta(fm FileMeta) []byte {
	return fileMetaWith(&Meta{SOPClass: fm.SOPClass, SOPInstance: fm.SOPInstance, TransferSyntax: fm.TransferSyntax}, false)
}

func fileMetaWith(m *Meta, private bool) []byte {
	var g []byte
	g = appendElement(g, 0x0002, 0x0001, "OB", []byte{0, 1})
	g = appendElement(g, 0x0002, 0x0002, "UI", []byte(m.SOPClass))
	g = appendElement(g, 0x0002, 0x0003, "UI", []byte(m.SOPInstance))
	g = appendElement(g, 0x0002, 0x0010, "UI", []byte(m.TransferSyntax))
	g = appendElement(g, 0x0002, 0x0012, "UI", []byte(ImplementationClassUID))
	g = appendElement(g, 0x0002, 0x0013, "SH", []byte(ImplementationVersionName))
	if m.CallingAE != "" {
		g = appendElement(g, 0x0002, 0x0016, "AE", []byte(m.CallingAE))
	}
	if private {
		js, _ := json.Marshal(m)
		g = appendElement(g, 0x0002, 0x0100, "UI", []byte(PrivateInfoCreatorUID))
		g = appendElement(g, 0x0002, 0x0102, "OB", js)
	}
	out := make([]byte, preambleLen, preambleLen+4+12+len(g))
	out = append(out, "DICM"...)
	out = appendElement(out, 0x0002, 0x0000, "UL", binary.LittleEndian.AppendUint32(nil, uint32(len(g))))
	return append(out, g...)
}

// errNotPart10 is returned for a file without a readable File Meta group.
var errNotPart10 = errors.New("spool: not a DICOM Part 10 file")

// FileMeta is what a reader learns from a Part 10 file's meta group.
type FileMeta struct {
	SOPClass, SOPInstance, TransferSyntax string
	DataOffset                            int64 // where the data set starts
	// Meta is the edge's Private Information, when the file is the edge's.
	Meta *Meta
}

// ReadFileMeta reads the File Meta group of a Part 10 file from r, bounded
// by maxMetaLen, and leaves r positioned nowhere in particular.
func ReadFileMeta(r io.ReaderAt) (FileMeta, error) {
	var head [preambleLen + 4 + 12]byte
	if _, err := r.ReadAt(head[:], 0); err != nil {
		return FileMeta{}, fmt.Errorf("%w: %v", errNotPart10, err)
	}
	if string(head[preambleLen:preambleLen+4]) != "DICM" {
		return FileMeta{}, errNotPart10
	}
	el := head[preambleLen+4:]
	if binary.LittleEndian.Uint16(el[0:]) != 0x0002 || binary.LittleEndian.Uint16(el[2:]) != 0x0000 || string(el[4:6]) != "UL" {
		return FileMeta{}, fmt.Errorf("%w: no group length (0002,0000)", errNotPart10)
	}
	n := binary.LittleEndian.Uint32(el[8:])
	if n > maxMetaLen {
		return FileMeta{}, fmt.Errorf("%w: meta group of %d bytes", errNotPart10, n)
	}
	g := make([]byte, n)
	start := int64(len(head))
	if _, err := r.ReadAt(g, start); err != nil {
		return FileMeta{}, fmt.Errorf("%w: %v", errNotPart10, err)
	}
	fm := FileMeta{DataOffset: start + int64(n)}
	var creator string
	var private []byte
	for len(g) > 0 {
		if len(g) < 8 {
			return FileMeta{}, fmt.Errorf("%w: truncated meta element", errNotPart10)
		}
		elem, vr := binary.LittleEndian.Uint16(g[2:]), string(g[4:6])
		var vlen, hdr int
		switch vr {
		case "OB", "OW", "SQ", "UN", "UT":
			if len(g) < 12 {
				return FileMeta{}, fmt.Errorf("%w: truncated meta element", errNotPart10)
			}
			vlen, hdr = int(binary.LittleEndian.Uint32(g[8:])), 12
		default:
			vlen, hdr = int(binary.LittleEndian.Uint16(g[6:])), 8
		}
		if vlen < 0 || vlen > len(g)-hdr {
			return FileMeta{}, fmt.Errorf("%w: meta element (0002,%04X) overruns the group", errNotPart10, elem)
		}
		raw := g[hdr : hdr+vlen]
		v := string(bytes.TrimRight(raw, "\x00 "))
		switch elem {
		case 0x0100:
			creator = v
		case 0x0102:
			private = raw
		case 0x0002:
			fm.SOPClass = v
		case 0x0003:
			fm.SOPInstance = v
		case 0x0010:
			fm.TransferSyntax = v
		}
		g = g[hdr+vlen:]
	}
	if creator == PrivateInfoCreatorUID && len(private) > 0 {
		var m Meta
		// OB is padded with a NUL to even length.
		if json.Unmarshal(bytes.TrimRight(private, "\x00"), &m) == nil {
			fm.Meta = &m
		}
	}
	if fm.SOPClass == "" || fm.SOPInstance == "" || fm.TransferSyntax == "" {
		return FileMeta{}, fmt.Errorf("%w: SOP class, instance or transfer syntax missing", errNotPart10)
	}
	return fm, nil
}
