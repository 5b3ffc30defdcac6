package testpeer

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"testing"
)

// Test objects use UIDs under the 2.25 (UUID-derived) arc, which needs no
// registered root (PS3.5 B.2).
const (
	SecondaryCaptureImageStorage = "1.2.840.10008.5.1.4.1.1.7"
	ExplicitVRLittleEndian       = "1.2.840.10008.1.2.1"
	testImplementationClassUID   = "2.25.329800735698586629295641978511506172918"
)

// DICOMFile describes a test instance to generate.
type DICOMFile struct {
	PatientID, PatientName string
	StudyUID, SeriesUID    string
	SOPInstanceUID         string
	Rows, Columns          int // 16-bit monochrome pixel data of Rows*Columns*2 bytes
	Seed                   byte
	SOPClassUID            string // default Secondary Capture Image Storage
}

func (f DICOMFile) sopClass() string {
	if f.SOPClassUID == "" {
		return SecondaryCaptureImageStorage
	}
	return f.SOPClassUID
}

// element appends one Explicit VR Little Endian element.
func element(b *bytes.Buffer, group, elem uint16, vr string, value []byte) {
	if len(value)%2 == 1 {
		pad := byte(' ')
		if vr == "UI" || vr == "OB" {
			pad = 0
		}
		value = append(append([]byte(nil), value...), pad)
	}
	var h [12]byte
	binary.LittleEndian.PutUint16(h[0:], group)
	binary.LittleEndian.PutUint16(h[2:], elem)
	copy(h[4:6], vr)
	switch vr {
	case "OB", "OW", "OF", "SQ", "UT", "UN":
		// PS3.5 7.1.2: these VRs have two reserved bytes and a 32-bit length.
		binary.LittleEndian.PutUint32(h[8:], uint32(len(value)))
		b.Write(h[:12])
	default:
		binary.LittleEndian.PutUint16(h[6:], uint16(len(value)))
		b.Write(h[:8])
	}
	b.Write(value)
}

func us(v int) []byte { return binary.LittleEndian.AppendUint16(nil, uint16(v)) }

// DataSet returns the Explicit VR Little Endian data set of f (no meta
// header): identifying attributes, then pixel data with a pattern derived
// from Seed so that a corrupted or reordered transfer shows.
func (f DICOMFile) DataSet() []byte {
	var b bytes.Buffer
	b.Grow(f.Rows*f.Columns*2 + 1024)
	element(&b, 0x0008, 0x0016, "UI", []byte(f.sopClass()))
	element(&b, 0x0008, 0x0018, "UI", []byte(f.SOPInstanceUID))
	element(&b, 0x0008, 0x0020, "DA", []byte("20260101"))
	element(&b, 0x0008, 0x0030, "TM", []byte("120000"))
	element(&b, 0x0008, 0x0050, "SH", []byte("ACC"+f.PatientID))
	element(&b, 0x0008, 0x0052, "CS", []byte("IMAGE"))
	element(&b, 0x0008, 0x0060, "CS", []byte("OT"))
	element(&b, 0x0008, 0x0064, "CS", []byte("WSD"))
	element(&b, 0x0010, 0x0010, "PN", []byte(f.PatientName))
	element(&b, 0x0010, 0x0020, "LO", []byte(f.PatientID))
	element(&b, 0x0020, 0x000D, "UI", []byte(f.StudyUID))
	element(&b, 0x0020, 0x000E, "UI", []byte(f.SeriesUID))
	element(&b, 0x0020, 0x0010, "SH", []byte("1"))
	element(&b, 0x0020, 0x0011, "IS", []byte("1"))
	element(&b, 0x0020, 0x0013, "IS", []byte("1"))
	element(&b, 0x0028, 0x0002, "US", us(1))
	element(&b, 0x0028, 0x0004, "CS", []byte("MONOCHROME2"))
	element(&b, 0x0028, 0x0010, "US", us(f.Rows))
	element(&b, 0x0028, 0x0011, "US", us(f.Columns))
	element(&b, 0x0028, 0x0100, "US", us(16))
	element(&b, 0x0028, 0x0101, "US", us(16))
	element(&b, 0x0028, 0x0102, "US", us(15))
	element(&b, 0x0028, 0x0103, "US", us(0))
	pixels := make([]byte, f.Rows*f.Columns*2)
	x := uint64(f.Seed)*0x9E3779B97F4A7C15 + 1
	for i := 0; i+8 <= len(pixels); i += 8 {
		// xorshift64: cheap, deterministic, not compressible by accident
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(pixels[i:], x)
	}
	element(&b, 0x7FE0, 0x0010, "OW", pixels)
	return b.Bytes()
}

// Bytes returns the whole Part 10 file: preamble, "DICM", the file meta
// information group (PS3.10 7.1) and the data set.
func (f DICOMFile) Bytes() []byte { return f.part10(f.DataSet()) }

func (f DICOMFile) part10(dataset []byte) []byte {
	var meta bytes.Buffer
	element(&meta, 0x0002, 0x0001, "OB", []byte{0, 1})
	element(&meta, 0x0002, 0x0002, "UI", []byte(f.sopClass()))
	element(&meta, 0x0002, 0x0003, "UI", []byte(f.SOPInstanceUID))
	element(&meta, 0x0002, 0x0010, "UI", []byte(ExplicitVRLittleEndian))
	element(&meta, 0x0002, 0x0012, "UI", []byte(testImplementationClassUID))
	element(&meta, 0x0002, 0x0013, "SH", []byte("DICOMEDGE_TEST"))
	var out bytes.Buffer
	out.Grow(len(dataset) + 512)
	out.Write(make([]byte, 128))
	out.WriteString("DICM")
	element(&out, 0x0002, 0x0000, "UL", binary.LittleEndian.AppendUint32(nil, uint32(meta.Len())))
	out.Write(meta.Bytes())
	out.Write(dataset)
	return out.Bytes()
}

// WriteDICOMFiles writes n instances of one study into dir, each with
// rows*cols*2 bytes of pixel data, and returns their paths and data sets.
func WriteDICOMFiles(t testing.TB, dir, patientID string, n, rows, cols int) (paths []string, datasets map[string][]byte) {
	t.Helper()
	return WriteDICOMFilesOf(t, SecondaryCaptureImageStorage, dir, patientID, n, rows, cols)
}

// WriteDICOMFilesOf is WriteDICOMFiles for instances of SOP class sopClass.
func WriteDICOMFilesOf(t testing.TB, sopClass, dir, patientID string, n, rows, cols int) (paths []string, datasets map[string][]byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	datasets = make(map[string][]byte, n)
	h := fnv.New64a()
	h.Write([]byte(patientID))
	base := fmt.Sprintf("2.25.%d", h.Sum64())
	for i := 0; i < n; i++ {
		f := DICOMFile{
			PatientID:      patientID,
			PatientName:    "TEST^" + patientID,
			StudyUID:       base + ".1",
			SeriesUID:      base + ".2",
			SOPInstanceUID: fmt.Sprintf("%s.3.%d", base, i+1),
			Rows:           rows,
			Columns:        cols,
			Seed:           byte(i),
			SOPClassUID:    sopClass,
		}
		p := filepath.Join(dir, fmt.Sprintf("img%04d.dcm", i+1))
		ds := f.DataSet()
		if err := os.WriteFile(p, f.part10(ds), 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
		datasets[f.SOPInstanceUID] = ds
	}
	return paths, datasets
}

// SplitPart10 returns the data set of a Part 10 file (everything after the
// file meta information group) and its SOP instance UID from the meta
// header, so received files can be compared with what was sent.
func SplitPart10(b []byte) (dataset []byte, sopInstance string, err error) {
	if len(b) < 132+12 || string(b[128:132]) != "DICM" {
		return nil, "", fmt.Errorf("not a Part 10 file")
	}
	p := 132
	for p+8 <= len(b) {
		group := binary.LittleEndian.Uint16(b[p:])
		if group != 0x0002 {
			return b[p:], sopInstance, nil
		}
		elem := binary.LittleEndian.Uint16(b[p+2:])
		vr := string(b[p+4 : p+6])
		var n, hdr int
		switch vr {
		case "OB", "OW", "OF", "SQ", "UT", "UN":
			if p+12 > len(b) {
				return nil, "", fmt.Errorf("truncated meta element")
			}
			n, hdr = int(binary.LittleEndian.Uint32(b[p+8:])), 12
		default:
			n, hdr = int(binary.LittleEndian.Uint16(b[p+6:])), 8
		}
		if n < 0 || p+hdr+n > len(b) {
			return nil, "", fmt.Errorf("meta element (0002,%04X) overruns the file", elem)
		}
		if elem == 0x0003 {
			sopInstance = string(bytes.TrimRight(b[p+hdr:p+hdr+n], "\x00 "))
		}
		p += hdr + n
	}
	return nil, "", fmt.Errorf("no data set after the meta header")
}
