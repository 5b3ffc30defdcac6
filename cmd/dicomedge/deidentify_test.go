package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/deid"
	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// deidPolicy writes a policy with the deidentify block "vendor" (block is
// its body) and a fresh key, and returns its path.
func deidPolicy(t *testing.T, dir, block string) string {
	t.Helper()
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i*7 + 3)
	}
	if err := os.WriteFile(filepath.Join(dir, "deid.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "policy.hcl")
	src := `
edge {
  ae_title = "DICOMEDGE"
  listen   = "127.0.0.1:2762"
}
tls {
  client_ca = ["certs/ca.pem"]
  cert_file = "certs/edge.pem"
  key_file  = "certs/edge-key.pem"
}
deidentify "vendor" {
  key_file = "deid.key"
` + block + `
}
`
	if err := os.WriteFile(cfg, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Markers planted in attributes the basic profile does not keep: none may
// be found in a de-identified file.
var deidMarkers = []string{
	"MARKPATNAME", "MARKPATID77", "MARKACC", "MARKINST", "MARKREFPHYS", "MARKSTUDYDESC", "MARKSTUDYID",
	"MARKREQPROC", "MARKPRIVATE", "MARKOPERATOR",
	"19610203", "20240102", // birth date, study date
	"1.2.826.0.1.3680043.10.1234.1", "1.2.826.0.1.3680043.10.1234.2", "1.2.826.0.1.3680043.10.1234.3",
	"1.2.826.0.1.3680043.10.1234.4", "1.2.826.0.1.3680043.10.1234.5", "1.2.826.0.1.3680043.10.1234.6",
}

// ctDump is a CT image as dcmdump prints one (dump2dcm's input), with the
// markers at the top level, in a sequence and two sequences deep, and in
// a private block. study picks the study's UIDs.
func ctDump(study int, extra string) string {
	var px strings.Builder
	for i := range 16 * 16 {
		if i > 0 {
			px.WriteByte('\\')
		}
		fmt.Fprintf(&px, "%04x", (i*37+11)&0x0fff)
	}
	u := func(n int) string { return fmt.Sprintf("1.2.826.0.1.3680043.10.1234.%d", n+10*(study-1)) }
	return `(0008,0005) CS [ISO_IR 100]
(0008,0008) CS [ORIGINAL\PRIMARY\AXIAL]
(0008,0016) UI =CTImageStorage
(0008,0018) UI [` + u(1) + `]
(0008,0020) DA [20240102]
(0008,0030) TM [101010]
(0008,0050) SH [MARKACC]
(0008,0060) CS [CT]
(0008,0070) LO [ACME]
(0008,0080) LO [MARKINST]
(0008,0090) PN [MARKREFPHYS^Doctor]
(0008,1030) LO [MARKSTUDYDESC head]
(0008,1070) PN [MARKOPERATOR]
(0008,1115) SQ (Sequence with undefined length #=1)
  (fffe,e000) na (Item with undefined length #=2)
    (0008,1140) SQ (Sequence with undefined length #=1)
      (fffe,e000) na (Item with undefined length #=2)
        (0008,1150) UI =CTImageStorage
        (0008,1155) UI [` + u(5) + `]
      (fffe,e00d) na (ItemDelimitationItem)
    (fffe,e0dd) na (SequenceDelimitationItem)
    (0020,000e) UI [` + u(6) + `]
  (fffe,e00d) na (ItemDelimitationItem)
(fffe,e0dd) na (SequenceDelimitationItem)
(0010,0010) PN [MARKPATNAME^John]
(0010,0020) LO [MARKPATID77]
(0010,0030) DA [19610203]
(0010,0040) CS [M]
(0018,0050) DS [5]
(0018,0060) DS [120]
(0018,5100) CS [HFS]
(0020,000d) UI [` + u(2) + `]
(0020,000e) UI [` + u(3) + `]
(0020,0010) SH [MARKSTUDYID]
(0020,0011) IS [1]
(0020,0012) IS [1]
(0020,0013) IS [1]
(0020,0032) DS [0\0\0]
(0020,0037) DS [1\0\0\0\1\0]
(0020,0052) UI [` + u(4) + `]
(0020,0060) CS [R]
(0020,1040) LO []
(0028,0002) US 1
(0028,0004) CS [MONOCHROME2]
(0028,0010) US 16
(0028,0011) US 16
(0028,0030) DS [1\1]
(0028,0100) US 16
(0028,0101) US 12
(0028,0102) US 11
(0028,0103) US 0
(0028,1050) DS [40]
(0028,1051) DS [400]
(0028,1052) DS [0]
(0028,1053) DS [1]
(0029,0010) LO [ACME PRIVATE]
(0029,1001) LO [MARKPRIVATE]
(0040,0275) SQ (Sequence with undefined length #=1)
  (fffe,e000) na (Item with undefined length #=1)
    (0040,1001) SH [MARKREQPROC]
  (fffe,e00d) na (ItemDelimitationItem)
(fffe,e0dd) na (SequenceDelimitationItem)
` + extra + `(7fe0,0010) OW ` + px.String() + "\n"
}

// makeDICOM writes dump as a Part 10 file with dump2dcm's options.
func makeDICOM(t *testing.T, dir, name, dump string, opts ...string) string {
	t.Helper()
	dumpFile := filepath.Join(dir, name+".dump")
	if err := os.WriteFile(dumpFile, []byte(dump), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name+".dcm")
	ctx := testpeer.Context(t, 30*time.Second)
	if o, err := testpeer.Run(ctx, "dump2dcm", append(opts, dumpFile, out)...); err != nil {
		t.Fatalf("dump2dcm %s: %v\n%s", name, err, o)
	}
	return out
}

func dcmdump(t *testing.T, file string) string {
	t.Helper()
	out, err := exec.Command("dcmdump", "-q", "+L", "-Un", file).CombinedOutput()
	if err != nil {
		t.Fatalf("dcmdump %s: %v\n%s", file, err, out)
	}
	return string(out)
}

// dumpValue is the value dcmdump shows for tag (the first one, at any depth).
func dumpValue(dump, tag string) string {
	m := regexp.MustCompile(`(?m)^\s*\(` + regexp.QuoteMeta(tag) + `\) \w\w \[([^\]]*)\]`).FindStringSubmatch(dump)
	if m == nil {
		return ""
	}
	return m[1]
}

// dciodvfyErrors are the error lines dciodvfy reports on file.
func dciodvfyErrors(t *testing.T, file string) []string {
	t.Helper()
	out, _ := exec.Command("dciodvfy", file).CombinedOutput()
	var errs []string
	for l := range strings.SplitSeq(string(out), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "Error") {
			errs = append(errs, strings.TrimSpace(l))
		}
	}
	if !strings.Contains(string(out), "Image") && !strings.Contains(string(out), "Error") {
		t.Fatalf("dciodvfy %s did not run as expected:\n%s", file, out)
	}
	return errs
}

// pixelTail is the file's bytes from the last Pixel Data tag on: the
// element as it came, header and value.
func pixelTail(t *testing.T, b []byte) []byte {
	t.Helper()
	i := bytes.LastIndex(b, []byte{0xe0, 0x7f, 0x10, 0x00})
	if i < 0 {
		t.Fatal("no Pixel Data in the file")
	}
	return b[i:]
}

func deidRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return policyRun(t, append([]string{"deidentify"}, args...)...)
}

// A CT image in Explicit and Implicit VR Little Endian, built by DCMTK:
// the written file has no marker left, in dcmdump's view or in its bytes,
// its File Meta names the new SOP Instance UID and the same transfer
// syntax, Pixel Data is byte for byte the original's, and dciodvfy finds
// no error the original did not have. The same input gives the same file
// again; another study other UIDs.
func TestDeidentifyFiles(t *testing.T) {
	testpeer.Require(t, "dump2dcm", "dcmdump", "dciodvfy")
	dir := t.TempDir()
	cfg := deidPolicy(t, dir, "")
	for _, tc := range []struct {
		name, opt, ts string
	}{
		{"explicit", "+te", "1.2.840.10008.1.2.1"},
		{"implicit", "+ti", "1.2.840.10008.1.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := makeDICOM(t, dir, "ct-"+tc.name, ctDump(1, ""), tc.opt)
			other := makeDICOM(t, dir, "ct2-"+tc.name, ctDump(2, ""), tc.opt)
			out := filepath.Join(dir, "out-"+tc.name)
			if err := os.Mkdir(out, 0o700); err != nil {
				t.Fatal(err)
			}
			code, stdout, stderr := deidRun(t, "--config", cfg, "--profile", "vendor", "--out", out, in)
			if code != 0 {
				t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
			}
			files, _ := filepath.Glob(filepath.Join(out, "*.dcm"))
			if len(files) != 1 {
				t.Fatalf("wrote %q, want one file", files)
			}
			got := files[0]
			raw, err := os.ReadFile(got)
			if err != nil {
				t.Fatal(err)
			}
			dump := dcmdump(t, got)
			for _, m := range deidMarkers {
				if bytes.Contains(raw, []byte(m)) || strings.Contains(dump, m) {
					t.Errorf("marker %q left in the de-identified file:\n%s", m, dump)
				}
			}
			sop := dumpValue(dump, "0008,0018")
			if !strings.HasPrefix(sop, "2.25.") {
				t.Errorf("SOP Instance UID %q, want a 2.25 UID", sop)
			}
			if ms := dumpValue(dump, "0002,0003"); ms != sop {
				t.Errorf("Media Storage SOP Instance UID %q, want the new SOP Instance UID %q", ms, sop)
			}
			if filepath.Base(got) != sop+".dcm" {
				t.Errorf("file %s, want %s.dcm", filepath.Base(got), sop)
			}
			if !strings.Contains(stdout, "sop_instance "+sop) {
				t.Errorf("stdout does not name the new SOP Instance UID:\n%s", stdout)
			}
			if ts := dumpValue(dump, "0002,0010"); ts != tc.ts {
				t.Errorf("Transfer Syntax UID %q, want %q", ts, tc.ts)
			}
			if ic := dumpValue(dump, "0002,0012"); ic != "2.25.188286457671167759668113120255581780806" {
				t.Errorf("Implementation Class UID %q, want dicomedge's", ic)
			}
			if v := dumpValue(dump, "0012,0062"); v != "YES" {
				t.Errorf("Patient Identity Removed %q, want YES", v)
			}
			pid := dumpValue(dump, "0010,0020")
			if !regexp.MustCompile(`^ANON-[0-9A-F]{16}$`).MatchString(pid) || dumpValue(dump, "0010,0010") != pid {
				t.Errorf("Patient ID %q, Patient's Name %q: want the same ANON- pseudonym", pid, dumpValue(dump, "0010,0010"))
			}
			// The group length is what dcmtk counts.
			if o, err := exec.Command("dcmdump", "-q", "+E", got).CombinedOutput(); err != nil || strings.Contains(string(o), "W:") {
				t.Errorf("dcmdump +E (strict): %v\n%s", err, o)
			}
			orig, _ := os.ReadFile(in)
			if !bytes.Equal(pixelTail(t, raw), pixelTail(t, orig)) {
				t.Error("Pixel Data differs from the original's")
			}
			before, after := dciodvfyErrors(t, in), dciodvfyErrors(t, got)
			for _, e := range after {
				if !slices.Contains(before, e) {
					t.Errorf("dciodvfy reports on the output an error it did not report on the input: %s\ninput: %q", e, before)
				}
			}

			// Again: the same UIDs; another study: other UIDs.
			code, stdout2, stderr := deidRun(t, "--config", cfg, "--profile", "vendor", "--out", out, in, other)
			if code != 0 {
				t.Fatalf("second run: exit %d\n%s%s", code, stdout2, stderr)
			}
			files, _ = filepath.Glob(filepath.Join(out, "*.dcm"))
			if len(files) != 2 || !slices.Contains(files, got) {
				t.Errorf("second run wrote %q, want %s again and one more", files, got)
			}
			again, _ := os.ReadFile(got)
			if !bytes.Equal(again, raw) {
				t.Error("the same input gave a different file")
			}
			for _, f := range files {
				if f == got {
					continue
				}
				d2 := dcmdump(t, f)
				if dumpValue(d2, "0020,000d") == dumpValue(dump, "0020,000d") || dumpValue(d2, "0020,000d") == "" {
					t.Errorf("another study got Study Instance UID %q, the first %q", dumpValue(d2, "0020,000d"), dumpValue(dump, "0020,000d"))
				}
			}
		})
	}
}

// --explain prints every attribute with its action and reason; nothing is
// written without --out, and the options of the block are applied.
func TestDeidentifyExplain(t *testing.T) {
	testpeer.Require(t, "dump2dcm", "dcmdump", "dciodvfy")
	dir := t.TempDir()
	cfg := deidPolicy(t, dir, `options = ["retain-modified-dates", "clean-descriptors"]
  replace = { "(0008,0070)" = "VENDOR" }`)
	in := makeDICOM(t, dir, "ct", ctDump(1, ""), "+te")
	code, stdout, stderr := deidRun(t, "--config", cfg, "--profile", "vendor", "--explain", in)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`\(0010,0010\) PatientName +pseudonym +pseudonym of the Patient ID`),
		regexp.MustCompile(`\(0008,0020\) StudyDate +clean +C \(retain-modified-dates\)`),
		regexp.MustCompile(`\(0008,1030\) StudyDescription +clean +C \(clean-descriptors\)`),
		regexp.MustCompile(`\(0008,0070\) Manufacturer +replace +replace = "VENDOR" \(policy\)`),
		regexp.MustCompile(`\(0029,1001\) \(private\) +remove +private attribute`),
		regexp.MustCompile(`>\(0008,1140\) ReferencedImageSequence +uid`),
		regexp.MustCompile(`>>\(0008,1155\) ReferencedSOPInstanceUID +uid +U \(basic profile\)`),
		regexp.MustCompile(`\(0008,0060\) Modality +keep +not in Table E.1-1`),
		regexp.MustCompile(`not written \(no --out\)`),
	} {
		if !want.MatchString(stdout) {
			t.Errorf("--explain output lacks %s:\n%s", want, stdout)
		}
	}
	for _, m := range deidMarkers[:10] {
		if strings.Contains(stdout, m) {
			t.Errorf("--explain shows the value %q", m)
		}
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*", "*.dcm")); len(files) != 0 {
		t.Errorf("without --out, files were written: %q", files)
	}

	// Written with these options, the instance is still as valid as it was,
	// its dates moved back by the patient's shift.
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o700); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := deidRun(t, "--config", cfg, "--profile", "vendor", "--out", out, in); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	files, _ := filepath.Glob(filepath.Join(out, "*.dcm"))
	if len(files) != 1 {
		t.Fatalf("wrote %q", files)
	}
	before, after := dciodvfyErrors(t, in), dciodvfyErrors(t, files[0])
	for _, e := range after {
		if !slices.Contains(before, e) {
			t.Errorf("dciodvfy reports on the output an error it did not report on the input: %s", e)
		}
	}
	dump := dcmdump(t, files[0])
	shifted, err := time.Parse("20060102", dumpValue(dump, "0008,0020"))
	if err != nil {
		t.Fatalf("Study Date %q: %v", dumpValue(dump, "0008,0020"), err)
	}
	if days := time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC).Sub(shifted).Hours() / 24; days < 1 || days > 3650 {
		t.Errorf("Study Date moved %v days back, want 1 to 3650", days)
	}
	if v := dumpValue(dump, "0028,0303"); v != "MODIFIED" {
		t.Errorf("Longitudinal Temporal Information Modified %q, want MODIFIED", v)
	}
	if v := dumpValue(dump, "0008,0070"); v != "VENDOR" {
		t.Errorf("Manufacturer %q, want the policy's replacement", v)
	}
}

// A JPEG-compressed Secondary Capture made by img2dcm: the encapsulated
// transfer syntax is kept and its fragments pass byte for byte, once the
// image says it has no burned-in annotation; without that it is refused.
func TestDeidentifyEncapsulated(t *testing.T) {
	testpeer.Require(t, "img2dcm", "dcmdump", "dciodvfy")
	dir := t.TempDir()
	cfg := deidPolicy(t, dir, "")
	img := image.NewGray(image.Rect(0, 0, 64, 48))
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 13)
	}
	img.Set(3, 3, color.Gray{Y: 200})
	var jb bytes.Buffer
	if err := jpeg.Encode(&jb, img, nil); err != nil {
		t.Fatal(err)
	}
	jpg := filepath.Join(dir, "in.jpg")
	if err := os.WriteFile(jpg, jb.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	mk := func(name string, keys ...string) string {
		t.Helper()
		out := filepath.Join(dir, name)
		args := []string{"-i", "JPEG", "-k", "PatientName=MARKPATNAME^J", "-k", "PatientID=MARKPATID77", "-k", "InstitutionName=MARKINST"}
		for _, k := range keys {
			args = append(args, "-k", k)
		}
		ctx := testpeer.Context(t, 30*time.Second)
		if o, err := testpeer.Run(ctx, "img2dcm", append(args, jpg, out)...); err != nil {
			t.Fatalf("img2dcm: %v\n%s", err, o)
		}
		return out
	}
	clean := mk("sc-no-burned.dcm", "BurnedInAnnotation=NO")
	unknown := mk("sc.dcm")
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o700); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := deidRun(t, "--config", cfg, "--profile", "vendor", "--out", out, clean)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	files, _ := filepath.Glob(filepath.Join(out, "*.dcm"))
	if len(files) != 1 {
		t.Fatalf("wrote %q", files)
	}
	raw, _ := os.ReadFile(files[0])
	orig, _ := os.ReadFile(clean)
	if !bytes.Equal(pixelTail(t, raw), pixelTail(t, orig)) {
		t.Error("the JPEG fragments differ from the original's")
	}
	dump := dcmdump(t, files[0])
	if ts := dumpValue(dump, "0002,0010"); ts != "1.2.840.10008.1.2.4.50" {
		t.Errorf("transfer syntax %q, want JPEG Baseline as it came", ts)
	}
	for _, m := range []string{"MARKPATNAME", "MARKPATID77", "MARKINST"} {
		if bytes.Contains(raw, []byte(m)) {
			t.Errorf("marker %q left", m)
		}
	}
	before, after := dciodvfyErrors(t, clean), dciodvfyErrors(t, files[0])
	for _, e := range after {
		if !slices.Contains(before, e) {
			t.Errorf("dciodvfy reports on the output an error it did not report on the input: %s", e)
		}
	}
	code, _, stderr = deidRun(t, "--config", cfg, "--profile", "vendor", "--out", out, unknown)
	if code != 1 || !strings.Contains(stderr, "refused: burned-in-annotation") {
		t.Errorf("a Secondary Capture without Burned In Annotation: exit %d, want 1 (burned-in-annotation)\n%s", code, stderr)
	}
}

// Refused files exit 1 with the reason, write nothing and leave no
// temporary file; the others of the same run are written. A bad
// configuration or an unknown profile exits 2.
func TestDeidentifyRefusals(t *testing.T) {
	testpeer.Require(t, "dump2dcm")
	dir := t.TempDir()
	cfg := deidPolicy(t, dir, "")
	good := makeDICOM(t, dir, "good", ctDump(1, ""), "+te")
	garbage := filepath.Join(dir, "garbage.dcm")
	if err := os.WriteFile(garbage, bytes.Repeat([]byte("not dicom "), 40), 0o600); err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(dir, "truncated.dcm")
	g, _ := os.ReadFile(good)
	if err := os.WriteFile(truncated, g[:len(g)-100], 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, file, want string
	}{
		{"burned in", makeDICOM(t, dir, "burned", ctDump(1, "(0028,0301) CS [YES]\n"), "+te"), "burned-in-annotation"},
		{"encapsulated document", makeDICOM(t, dir, "pdf", ctDump(1, "(0042,0011) OB 25\\50\\44\\46\n"), "+te"), "encapsulated-document"},
		{"big endian", makeDICOM(t, dir, "big", ctDump(1, ""), "+tb"), "transfer-syntax"},
		{"deflated", makeDICOM(t, dir, "deflated", ctDump(1, ""), "+td"), "transfer-syntax"},
		{"not part 10", garbage, "unparseable"},
		{"truncated", truncated, "malformed-data-set"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			code, stdout, stderr := deidRun(t, "--config", cfg, "--profile", "vendor", "--out", out, tc.file, good)
			if code != 1 || !strings.Contains(stderr, tc.file+": refused: "+tc.want) {
				t.Errorf("exit %d, want 1 and %q\nstdout:\n%s\nstderr:\n%s", code, tc.want, stdout, stderr)
			}
			entries, _ := os.ReadDir(out)
			if len(entries) != 1 || !strings.HasSuffix(entries[0].Name(), ".dcm") || strings.HasPrefix(entries[0].Name(), ".") {
				t.Errorf("out holds %v, want only the good file", entries)
			}
		})
	}
	t.Run("unknown profile", func(t *testing.T) {
		code, _, stderr := deidRun(t, "--config", cfg, "--profile", "nope", good)
		if code != 2 || !strings.Contains(stderr, `--profile "nope"`) || !strings.Contains(stderr, "defined: vendor") {
			t.Errorf("exit %d, want 2 naming the known profiles\n%s", code, stderr)
		}
	})
	t.Run("bad config", func(t *testing.T) {
		bad := filepath.Join(dir, "bad.hcl")
		if err := os.WriteFile(bad, []byte("deidentify \"vendor\" {\n  key_file = \"missing.key\"\n}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := deidRun(t, "--config", bad, "--profile", "vendor", good)
		if code != 2 || !strings.Contains(stderr, "bad.hcl:2:") {
			t.Errorf("exit %d, want 2 with file:line:col\n%s", code, stderr)
		}
	})
}

// policy explain names the de-identification profile of the rule that
// matched, with its options and lists.
func TestPolicyExplainDeidentify(t *testing.T) {
	dir := t.TempDir()
	cfg := deidPolicy(t, dir, `options = ["retain-modified-dates", "clean-descriptors"]
  keep    = ["(0008,0060)"]
  replace = { "(0010,0010)" = "ANONYMOUS" }
}
listener "inside" {
  listen     = "127.0.0.1:11113"
  tls        = false
  allow_cidr = ["127.0.0.1/32"]
}
backend "vendor" {
  address  = "vendor.example.org:2762"
  ae_title = "AIVENDOR"
}
rule "pacs-to-vendor" {
  when {
    listener   = ["inside"]
    calling_ae = ["MAINPACS"]
    called_ae  = ["AIVENDOR"]
  }
  relay {
    backend    = "vendor"
    services   = ["C-ECHO", "C-STORE"]
    deidentify = "vendor"
  }`)
	code, out, errOut := policyRun(t, "policy", "explain", "--config", cfg, "--listener", "inside", "--source-ip", "127.0.0.1",
		"--calling-ae", "MAINPACS", "--called-ae", "AIVENDOR")
	want := "  deidentify: vendor (basic; options retain-modified-dates, clean-descriptors; keep (0008,0060); replace (0010,0010); burned_in refuse)\n"
	if code != 0 || !strings.HasPrefix(out, "relay vendor\n") || !strings.Contains(out, want) {
		t.Errorf("exit %d, want the relay and %q\nstdout:\n%s\nstderr:\n%s", code, want, out, errOut)
	}
	// A rule without deidentify says nothing of it.
	code, out, _ = policyRun(t, "policy", "explain", "--config", cfg, "--calling-ae", "X", "--called-ae", "Y")
	if code != 0 || strings.Contains(out, "deidentify") {
		t.Errorf("no de-identifying rule matched, yet:\n%s", out)
	}
}

// serve --dev creates a deidentify block's missing key (32 random bytes,
// mode 0600) before it loads the policy, and never replaces it; the edge
// then starts on the policy that names it.
func TestServeDevCreatesDeidentifyKey(t *testing.T) {
	testpeer.Require(t, "openssl")
	bin := buildBinary(t)
	dir := t.TempDir()
	listen, admin := testpeer.FreeAddr(t), testpeer.FreeAddr(t)
	cfgFile := filepath.Join(dir, "policy.hcl")
	block := "deidentify \"ai-vendor\" {\n  key_file = \"var/deid.key\"\n}\n"
	if err := os.WriteFile(cfgFile, []byte(servePolicy(listen, admin, block)), 0o600); err != nil {
		t.Fatal(err)
	}
	// Without --dev the missing key is an invalid configuration, with a hint.
	out, err := exec.Command(bin, "serve", "--config", cfgFile).CombinedOutput()
	if code := testpeer.ExitCode(err); code != 2 || !strings.Contains(string(out), "serve --dev") {
		t.Fatalf("serve without the key: exit %d, want 2 and a hint\n%s", code, out)
	}
	keyFile := filepath.Join(dir, "var", "deid.key")
	var key []byte
	for round := range 2 {
		p := testpeer.Start(t, bin, "serve", "--dev", "--config", cfgFile)
		testpeer.WaitListening(t, listen, testpeer.StartupTimeout, p)
		st, err := os.Stat(keyFile)
		if err != nil {
			t.Fatalf("serve --dev did not create var/deid.key: %v\n%s", err, p.Output())
		}
		if st.Mode().Perm() != 0o600 || st.Size() != 32 {
			t.Errorf("key file mode %v, %d bytes; want 0600, 32", st.Mode().Perm(), st.Size())
		}
		got, _ := os.ReadFile(keyFile)
		if round == 0 {
			key = got
			if !strings.Contains(p.Output(), "de-identification key created") {
				t.Errorf("serve --dev did not say it created the key:\n%s", p.Output())
			}
		} else if !bytes.Equal(got, key) {
			t.Error("a second serve --dev replaced the key")
		}
		_ = p.Cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.Done():
		case <-time.After(20 * time.Second):
			t.Fatal("serve did not stop")
		}
	}
}

// A file with 64 MiB of Pixel Data goes through in bounded memory: the
// command allocates a few MiB in all, not the instance, and the pixels
// arrive byte for byte.
func TestDeidentifyLargeFileBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 128 MiB")
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "big.dcm")
	const pixels = 64 << 20
	head, err := deid.EncodeFileMeta(&deid.FileMeta{Elements: []deid.MetaElement{
		{Tag: 0x00020002, VR: "UI", Value: []byte("1.2.840.10008.5.1.4.1.1.2\x00")},
		{Tag: 0x00020010, VR: "UI", Value: []byte("1.2.840.10008.1.2.1\x00")},
	}}, "1.2.826.0.1.3680043.10.99.1", "2.25.1", "")
	if err != nil {
		t.Fatal(err)
	}
	el := func(b []byte, group, elem uint16, vr, v string) []byte {
		if len(v)%2 == 1 {
			v += "\x00"
		}
		b = binary.LittleEndian.AppendUint16(b, group)
		b = binary.LittleEndian.AppendUint16(b, elem)
		b = append(b, vr...)
		return append(binary.LittleEndian.AppendUint16(b, uint16(len(v))), v...)
	}
	ds := el(nil, 0x0008, 0x0016, "UI", "1.2.840.10008.5.1.4.1.1.2")
	ds = el(ds, 0x0008, 0x0018, "UI", "1.2.826.0.1.3680043.10.99.1")
	ds = el(ds, 0x0010, 0x0010, "PN", "MARKPATNAME")
	ds = el(ds, 0x0010, 0x0020, "LO", "MARKPATID77")
	ds = el(ds, 0x0020, 0x000D, "UI", "1.2.826.0.1.3680043.10.99.2")
	ds = el(ds, 0x0028, 0x0301, "CS", "NO")
	ds = append(ds, 0xe0, 0x7f, 0x10, 0x00, 'O', 'W', 0, 0)
	ds = binary.LittleEndian.AppendUint32(ds, pixels)
	f, err := os.Create(in)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(head)
	f.Write(ds)
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i*31 + i>>8)
	}
	for range pixels / len(chunk) {
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	p, err := deid.NewProfile(deid.Config{Name: "big", Key: bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o700); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r, err := deidentifyFile(p, in, out, io.Discard, false)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("allocated %d KiB", (after.TotalAlloc-before.TotalAlloc)>>10)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Errorf("de-identifying a file with %d MiB of Pixel Data allocated %d KiB: it is held, not streamed", pixels>>20, alloc>>10)
	}
	tail := func(name string) [32]byte {
		t.Helper()
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Seek(-(pixels + 12), io.SeekEnd); err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		io.Copy(h, f)
		return [32]byte(h.Sum(nil))
	}
	if tail(in) != tail(r.path) {
		t.Error("Pixel Data differs")
	}
	if st, _ := os.Stat(r.path); st.Size() > int64(pixels+4096) {
		t.Errorf("output of %d bytes", st.Size())
	}
}
