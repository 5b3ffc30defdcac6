package proxy

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/deid"
	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// leakFile is a CT instance with a distinct marker in every attribute of
// PS3.15 Table E.1-1 the basic profile does not keep (string values carry
// "LK" and the tag; sequences a UID of their own), in private elements,
// and all of it again two sequences deep.
type leakFile struct {
	study, series, sop string
	markers            []string
	pixels             []byte
	pathCache          string // the Part 10 file
	transferSyntax     string
}

// jpegBaseline is JPEG Baseline (Process 1), an encapsulated transfer
// syntax (PS3.5 A.4.1): its Pixel Data is a sequence of fragments.
const jpegBaseline = "1.2.840.10008.1.2.4.50"

func leakElement(b []byte, tag uint32, vr string, v []byte) []byte {
	if len(v)%2 == 1 {
		pad := byte(' ')
		if vr == "UI" || vr == "OB" || vr == "UN" {
			pad = 0
		}
		v = append(append([]byte{}, v...), pad)
	}
	b = binary.LittleEndian.AppendUint16(b, uint16(tag>>16))
	b = binary.LittleEndian.AppendUint16(b, uint16(tag))
	b = append(b, vr...)
	switch vr {
	case "OB", "OW", "UN", "SQ", "UT", "UC", "UR", "OF", "OD", "OL", "OV", "SV", "UV":
		b = append(b, 0, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
	default:
		b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
	}
	return append(b, v...)
}

func leakSequence(b []byte, tag uint32, item []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(tag>>16))
	b = binary.LittleEndian.AppendUint16(b, uint16(tag))
	b = append(b, 'S', 'Q', 0, 0, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff, 0, 0xe0, 0xff, 0xff, 0xff, 0xff)
	b = append(b, item...)
	return append(b, 0xfe, 0xff, 0x0d, 0xe0, 0, 0, 0, 0, 0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0)
}

// skipPlant: attributes that must carry real values for the instance to be
// one (or that the profile writes itself).
var skipPlant = map[uint32]bool{
	0x00080018: true, 0x0020000D: true, 0x0020000E: true, // set below, checked as UIDs
	0x00120062: true, 0x00120063: true, 0x00120064: true, 0x00280303: true, 0x00420011: true,
}

func makeLeakFile(t *testing.T, seed string) *leakFile {
	return makeLeakFileTS(t, seed, "1.2.840.10008.1.2.1")
}

// makeLeakFileTS is makeLeakFile in transferSyntax: Explicit VR Little
// Endian with native Pixel Data, or JPEG Baseline with the pixels as
// encapsulated fragments (their content is not decoded on the way).
func makeLeakFileTS(t *testing.T, seed, transferSyntax string) *leakFile {
	t.Helper()
	f := &leakFile{transferSyntax: transferSyntax, study: "1.2.826.0.1.3680043.10.543." + seed + ".1", series: "1.2.826.0.1.3680043.10.543." + seed + ".2",
		sop: "1.2.826.0.1.3680043.10.543." + seed + ".3", pixels: make([]byte, 64*64*2)}
	if _, err := rand.Read(f.pixels); err != nil {
		t.Fatal(err)
	}
	type el struct {
		tag uint32
		b   []byte
	}
	var planted []el
	n := 0
	for _, r := range deid.Table() {
		if r.Mask != 0xffffffff || r.Tag>>16 == 0 || skipPlant[r.Tag] {
			continue
		}
		vr := deid.VROf(r.Tag)
		var b []byte
		switch vr {
		case "SQ":
			n++
			uid := fmt.Sprintf("1.2.826.0.1.3680043.10.544.%s.%d", seed, n)
			f.markers = append(f.markers, uid)
			b = leakSequence(nil, r.Tag, leakElement(nil, 0x00081155, "UI", []byte(uid)))
		case "UI":
			n++
			uid := fmt.Sprintf("1.2.826.0.1.3680043.10.545.%s.%d", seed, n)
			f.markers = append(f.markers, uid)
			b = leakElement(nil, r.Tag, vr, []byte(uid))
		case "OB", "OW", "UN", "AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT":
			m := fmt.Sprintf("LK%s%08X", seed, r.Tag)
			f.markers = append(f.markers, m)
			b = leakElement(nil, r.Tag, vr, []byte(m))
		default:
			continue // binary numbers: too short for a distinct marker
		}
		planted = append(planted, el{r.Tag, b})
	}
	priv := fmt.Sprintf("LKPRIV%sVALUE", seed)
	f.markers = append(f.markers, priv, "LKPRIVCREATOR")
	planted = append(planted, el{0x00090010, leakElement(nil, 0x00090010, "LO", []byte("LKPRIVCREATOR"))},
		el{0x00091001, leakElement(nil, 0x00091001, "LO", []byte(priv))})
	sort.Slice(planted, func(i, j int) bool { return planted[i].tag < planted[j].tag })
	var inner []byte
	for _, e := range planted {
		inner = append(inner, e.b...)
	}
	// Two sequences deep: Language Code Sequence > Equivalent Code Sequence,
	// neither of which the table lists, so both are entered.
	nested := leakSequence(nil, 0x00080006, leakSequence(nil, 0x00080121, inner))
	top := append([]el{}, planted...)
	top = append(top, el{0x00080006, nested},
		el{0x00080016, leakElement(nil, 0x00080016, "UI", []byte("1.2.840.10008.5.1.4.1.1.2"))},
		el{0x00080018, leakElement(nil, 0x00080018, "UI", []byte(f.sop))},
		el{0x0020000D, leakElement(nil, 0x0020000D, "UI", []byte(f.study))},
		el{0x0020000E, leakElement(nil, 0x0020000E, "UI", []byte(f.series))},
		el{0x00280002, leakElement(nil, 0x00280002, "US", []byte{1, 0})},
		el{0x00280004, leakElement(nil, 0x00280004, "CS", []byte("MONOCHROME2"))},
		el{0x00280010, leakElement(nil, 0x00280010, "US", []byte{64, 0})},
		el{0x00280011, leakElement(nil, 0x00280011, "US", []byte{64, 0})},
		el{0x00280100, leakElement(nil, 0x00280100, "US", []byte{16, 0})},
		el{0x00280101, leakElement(nil, 0x00280101, "US", []byte{16, 0})},
		el{0x00280102, leakElement(nil, 0x00280102, "US", []byte{15, 0})},
		el{0x00280103, leakElement(nil, 0x00280103, "US", []byte{0, 0})},
		el{0x7FE00010, pixelData(f)})
	sort.SliceStable(top, func(i, j int) bool { return top[i].tag < top[j].tag })
	var dataset []byte
	for i, e := range top {
		if i > 0 && top[i-1].tag == e.tag {
			continue // a table attribute set below (e.g. photometric data): the real value wins
		}
		dataset = append(dataset, e.b...)
	}
	f.markers = append(f.markers, f.study, f.series, f.sop)
	return f.write(t, dataset)
}

// pixelData is native OW, or for JPEG Baseline an empty basic offset table
// and the pixels in two fragments.
func pixelData(f *leakFile) []byte {
	if f.transferSyntax != jpegBaseline {
		return leakElement(nil, 0x7FE00010, "OW", f.pixels)
	}
	b := []byte{0xe0, 0x7f, 0x10, 0x00, 'O', 'B', 0, 0, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff, 0x00, 0xe0, 0, 0, 0, 0}
	half := len(f.pixels) / 2
	for _, frag := range [][]byte{f.pixels[:half], f.pixels[half:]} {
		b = append(b, 0xfe, 0xff, 0x00, 0xe0)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(frag)))
		b = append(b, frag...)
	}
	return append(b, 0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0)
}

func (f *leakFile) write(t *testing.T, dataset []byte) *leakFile {
	var meta []byte
	meta = leakElement(meta, 0x00020001, "OB", []byte{0, 1})
	meta = leakElement(meta, 0x00020002, "UI", []byte("1.2.840.10008.5.1.4.1.1.2"))
	meta = leakElement(meta, 0x00020003, "UI", []byte(f.sop))
	meta = leakElement(meta, 0x00020010, "UI", []byte(f.transferSyntax))
	meta = leakElement(meta, 0x00020012, "UI", []byte("1.2.826.0.1.3680043.10.543"))
	out := append(make([]byte, 128), "DICM"...)
	out = leakElement(out, 0x00020000, "UL", binary.LittleEndian.AppendUint32(nil, uint32(len(meta))))
	out = append(out, meta...)
	out = append(out, dataset...)
	path := filepath.Join(t.TempDir(), "leak.dcm")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	f.pathCache = path
	return f
}

// TestDeidentifyLeakRealPeers: a PACS (DCMTK storescu) sends to the inside
// listener; the edge de-identifies and relays over TLS to an outside
// storescp: no marker leaves, pixel data is byte-identical, the sender
// gets its own SOP Instance UID back, the same study maps to the same UIDs
// again and after a restart of the edge, and another study to others.
// deidSetup is the way out to an AI vendor: the PACS's storescu on the
// plain inside listener, a de-identifying rule, the vendor a storescp that
// requires TLS with the edge's client certificate.
type deidSetup struct {
	opts   edgeOptions
	inside string
	scp    *testpeer.StoreSCP
}

func newDeidSetup(t *testing.T) *deidSetup {
	t.Helper()
	testpeer.Require(t, "storescp", "storescu", "dciodvfy")
	p := sharedPKI(t)
	vendor := testpeer.NewPKI(t, "vendor")
	wsCert, wsKey := vendor.Issue(t, "ai", testpeer.CertOptions{CN: "ai.vendor.test", DNS: []string{"localhost"}, IPs: []string{"127.0.0.1"}, Server: true})
	edgeCert, edgeKey := p.issuer.Issue(t, "edge-out", testpeer.CertOptions{CN: "edge-out.hospital.test"})
	scp := testpeer.StartStoreSCP(t, "AIVENDOR", "+tls", wsKey, wsCert, "+cf", p.ca, "--require-peer-cert")
	keyFile := filepath.Join(t.TempDir(), "deid.key")
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	inside := testpeer.FreeAddr(t)
	opts := edgeOptions{
		Listeners: fmt.Sprintf(`
listener "inside" {
  listen     = %q
  tls        = false
  allow_cidr = ["127.0.0.1/32"]
}
`, inside),
		Backends: fmt.Sprintf(`
backend "ai-vendor" {
  address  = %q
  ae_title = "AIVENDOR"
  tls {
    ca          = [%q]
    cert_file   = %q
    key_file    = %q
    server_name = "localhost"
  }
}
deidentify "ai-vendor" {
  key_file = %q
}
`, scp.Addr, vendor.CACert, edgeCert, edgeKey, keyFile),
		Rules: `
rule "pacs-to-ai-vendor" {
  when {
    listener   = ["inside"]
    calling_ae = ["MAINPACS"]
    called_ae  = ["AIVENDOR"]
  }
  relay {
    backend    = "ai-vendor"
    services   = ["C-ECHO", "C-STORE"]
    deidentify = "ai-vendor"
  }
}
`,
	}
	return &deidSetup{opts: opts, inside: inside, scp: scp}
}

func TestDeidentifyLeakRealPeers(t *testing.T) {
	ds := newDeidSetup(t)
	opts, inside, scp := ds.opts, ds.inside, ds.scp
	e := startEdge(t, opts)
	send := func(t *testing.T, addr string, f *leakFile) string {
		t.Helper()
		ctx := testpeer.Context(t, time.Minute)
		args := []string{"-d", "-aet", "MAINPACS", "-aec", "AIVENDOR"}
		if f.transferSyntax == jpegBaseline {
			args = append(args, "--propose-jpeg8")
		}
		out, err := testpeer.Run(ctx, "storescu", append(args, testpeer.Host(addr), fmt.Sprint(testpeer.Port(addr)), f.pathCache)...)
		if err != nil {
			t.Fatalf("storescu: %v\n%s", err, out)
		}
		return out
	}
	received := func(t *testing.T) map[string][]byte {
		t.Helper()
		got := map[string][]byte{}
		entries, _ := os.ReadDir(scp.Dir)
		for _, en := range entries {
			b, err := os.ReadFile(filepath.Join(scp.Dir, en.Name()))
			if err != nil {
				t.Fatal(err)
			}
			got[en.Name()] = b
		}
		return got
	}

	a := makeLeakFile(t, "1")
	out := send(t, inside, a)
	// The response storescu printed names the sender's own instance.
	if i := strings.Index(out, "C-STORE RSP"); i < 0 || !strings.Contains(out[i:], a.sop) {
		t.Errorf("storescu's C-STORE response does not carry its own SOP Instance UID %s:\n%s", a.sop, out)
	}
	files := received(t)
	if len(files) != 1 {
		t.Fatalf("storescp holds %d files", len(files))
	}
	var file []byte
	var name string
	for n, b := range files {
		file, name = b, n
	}
	for _, m := range a.markers {
		if bytes.Contains(file, []byte(m)) {
			t.Errorf("marker %q left the edge", m)
		}
	}
	if !bytes.Contains(file, a.pixels) {
		t.Error("pixel data did not arrive byte-identical")
	}
	// dciodvfy: no error on the output that it did not report on the input.
	inErrs, outErrs := dciodvfyErrors(t, a.pathCache), dciodvfyErrors(t, filepath.Join(scp.Dir, name))
	for k := range outErrs {
		if !inErrs[k] {
			t.Errorf("dciodvfy reports on the output only: %s", k)
		}
	}
	rec := e.waitEvent(t, "dimse record of the de-identified store", func(ev audit.Event) bool {
		return ev.Event == audit.EventDIMSE && ev.Deidentified != nil
	})
	d := rec.Deidentified
	if rec.SOPInstance != a.sop || d.SOPInstance == "" || d.SOPInstance == a.sop || !strings.HasPrefix(d.StudyUID, "2.25.") || d.PatientPseudonym == "" {
		t.Fatalf("record %+v, deidentified %+v", rec, d)
	}
	if !bytes.Contains(file, []byte(d.SOPInstance)) || !bytes.Contains(file, []byte(d.StudyUID)) {
		t.Error("the record's replaced UIDs are not those of the file that arrived")
	}
	// The way back: `dicomedge audit --uid` with what the vendor reports
	// (a replaced UID) or with the hospital's own finds the same record.
	for _, uid := range []string{d.SOPInstance, d.StudyUID, d.SeriesUID, a.sop, a.study} {
		var found []audit.Event
		err := audit.ReadFiles(audit.Files(e.AuditFile), audit.Filter{UID: uid}, func(ev audit.Event, _ []byte) error {
			found = append(found, ev)
			return nil
		})
		if err != nil || len(found) != 1 || found[0].Seq != rec.Seq {
			t.Errorf("audit --uid %s: %d records (%v), want the one dimse record", uid, len(found), err)
		}
	}

	// The same with JPEG-encapsulated pixel data: the fragments pass as they came.
	j := makeLeakFileTS(t, "4", jpegBaseline)
	before := received(t)
	send(t, inside, j)
	var jfile []byte
	for n, b := range received(t) {
		if _, old := before[n]; !old {
			jfile = b
		}
	}
	if jfile == nil {
		t.Fatal("the JPEG instance did not arrive")
	}
	for _, m := range j.markers {
		if bytes.Contains(jfile, []byte(m)) {
			t.Errorf("JPEG instance: marker %q left the edge", m)
		}
	}
	if half := len(j.pixels) / 2; !bytes.Contains(jfile, j.pixels[:half]) || !bytes.Contains(jfile, j.pixels[half:]) ||
		!bytes.Contains(jfile, []byte(jpegBaseline)) {
		t.Error("JPEG instance: the fragments did not arrive byte-identical in their transfer syntax")
	}

	// The same study again, then through a restarted edge (same key): the
	// same UIDs; another study: others.
	send(t, inside, a)
	// A second edge built afresh from the same policy and key stands for
	// the restarted one (and for another edge of a cluster): the key is
	// all the state the mapping has.
	inside2 := testpeer.FreeAddr(t)
	opts.Listeners = strings.Replace(opts.Listeners, inside, inside2, 1)
	e2 := startEdge(t, opts)
	send(t, inside2, a)
	b := makeLeakFile(t, "2")
	send(t, inside2, b)
	var again []*audit.Deidentified
	for deadline := time.Now().Add(10 * time.Second); len(again) < 2 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		again = again[:0]
		for _, ev := range e2.events(t) {
			if ev.Event == audit.EventDIMSE && ev.Deidentified != nil {
				x := *ev.Deidentified
				again = append(again, &x)
			}
		}
	}
	if len(again) != 2 {
		// (the records of the restarted edge: the first file again, then another study)
		t.Fatalf("%d de-identified records after the restart", len(again))
	}
	if again[0].StudyUID != d.StudyUID || again[0].SOPInstance != d.SOPInstance || again[0].PatientPseudonym != d.PatientPseudonym {
		t.Errorf("after a restart the same study maps to %+v, before %+v", again[0], d)
	}
	if again[1].StudyUID == d.StudyUID || again[1].SOPInstance == d.SOPInstance {
		t.Errorf("another study maps to the same UIDs: %+v", again[1])
	}
	for _, f := range received(t) {
		for _, m := range append(a.markers, b.markers...) {
			if bytes.Contains(f, []byte(m)) {
				t.Errorf("marker %q left the edge", m)
			}
		}
	}
}

// dciodvfyErrors runs dciodvfy on path and returns its error lines, each
// without the values it quotes, as a set.
func dciodvfyErrors(t *testing.T, path string) map[string]bool {
	t.Helper()
	ctx := testpeer.Context(t, time.Minute)
	out, _ := testpeer.Run(ctx, "dciodvfy", path) // exits non-zero when it reports errors
	errs := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "Error") {
			continue
		}
		if i := strings.Index(line, "<"); i > 0 {
			line = line[:i]
		}
		errs[strings.TrimSpace(line)] = true
	}
	return errs
}

// TestDeidentifyRefusesBurnedIn: a Secondary Capture image without Burned
// In Annotation cannot be cleaned here: storescu hears a failure status,
// the vendor receives nothing, and the record says why; a CT sent on the
// same association afterwards still goes.
func TestDeidentifyRefusesBurnedIn(t *testing.T) {
	ds := newDeidSetup(t)
	e := startEdge(t, ds.opts)
	scPaths, _ := testpeer.WriteDICOMFiles(t, t.TempDir(), "PATSC", 1, 16, 16) // Secondary Capture
	ct := makeLeakFile(t, "3")
	ctx := testpeer.Context(t, time.Minute)
	out, _ := testpeer.Run(ctx, "storescu", "-d", "--no-halt", "-aet", "MAINPACS", "-aec", "AIVENDOR",
		testpeer.Host(ds.inside), fmt.Sprint(testpeer.Port(ds.inside)), scPaths[0], ct.pathCache)
	if !strings.Contains(out, "0x0124") {
		t.Errorf("storescu did not hear status 0x0124 for the burned-in instance:\n%s", out)
	}
	rec := e.waitEvent(t, "refused dimse record", func(ev audit.Event) bool {
		return ev.Event == audit.EventDIMSE && ev.Allowed != nil && !*ev.Allowed
	})
	if rec.Status != "0x0124" || !strings.Contains(rec.Detail, "burned-in-annotation") {
		t.Errorf("record %+v", rec)
	}
	e.waitEvent(t, "the CT's record", func(ev audit.Event) bool {
		return ev.Event == audit.EventDIMSE && ev.Deidentified != nil && ev.Status == "0x0000"
	})
	files, _ := os.ReadDir(ds.scp.Dir)
	if len(files) != 1 {
		t.Fatalf("the vendor holds %d files, want only the CT", len(files))
	}
	b, _ := os.ReadFile(filepath.Join(ds.scp.Dir, files[0].Name()))
	if bytes.Contains(b, []byte("PATSC")) || !bytes.Contains(b, []byte("1.2.840.10008.5.1.4.1.1.2\x00")) {
		t.Error("the file the vendor holds is not the de-identified CT")
	}
}
