package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/policy"
)

// openT opens a writer in a temp dir (unless cfg.File is set) and closes it
// at cleanup if the test did not.
func openT(t *testing.T, cfg Config) *Writer {
	t.Helper()
	if cfg.File == "" {
		cfg.File = filepath.Join(t.TempDir(), "audit", "audit.jsonl")
	}
	if cfg.Syslog != nil {
		cfg.Syslog = edgeTimings(cfg.Syslog)
	}
	w, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// edgeTimings fills the forwarder timings a test leaves unset with the
// edge's own (policy's, as proxy.OpenAudit gives them).
func edgeTimings(c *SyslogConfig) *SyslogConfig {
	c2 := *c
	for _, f := range []struct {
		d   *time.Duration
		def time.Duration
	}{{&c2.Poll, policy.SyslogPoll}, {&c2.ConfirmAfter, policy.SyslogConfirmAfter}, {&c2.DialTimeout, policy.SyslogDialTimeout},
		{&c2.WriteTimeout, policy.SyslogWriteTimeout}, {&c2.MaxBackoff, policy.SyslogMaxBackoff}, {&c2.CloseTimeout, policy.SyslogCloseTimeout}} {
		if *f.d <= 0 {
			*f.d = f.def
		}
	}
	return &c2
}

func sampleEvent(i int) Event {
	return Event{
		Event: EventDIMSE, Conn: fmt.Sprintf("c%d", i/10), Assoc: fmt.Sprintf("a%d", i/10),
		Remote: "127.0.0.1:40000", CallingAE: "MODALITY1", CalledAE: "MAINPACS",
		Client:  &Client{CN: "mod1.clinic-a.example.org", DNS: []string{"mod1.clinic-a.example.org"}, Fingerprint: "sha256:ab"},
		Service: "C-STORE", SOPClass: "1.2.840.10008.5.1.4.1.1.7", SOPInstance: fmt.Sprintf("1.2.3.%d", i),
		MessageID: i + 1, Status: "0x0000", Bytes: 524288, MS: 3, Allowed: Bool(true),
	}
}

func readLinesT(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(b, []byte("\n"))
}

func writeN(t *testing.T, w *Writer, n int) {
	t.Helper()
	for i := range n {
		if !w.Log(sampleEvent(i)) {
			t.Fatalf("Log(%d) refused", i)
		}
	}
}

func TestChainVerifiesAndRecordsAreWellFormed(t *testing.T) {
	w := openT(t, Config{Fsync: time.Second})
	writeN(t, w, 50)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	n, err := Verify(Files(w.cfg.File))
	if err != nil || n != 50 {
		t.Fatalf("Verify = %d, %v; want 50, nil", n, err)
	}
	prev := ZeroHash
	var last time.Time
	for i, l := range readLinesT(t, w.cfg.File) {
		if len(l) == 0 {
			continue
		}
		line := bytes.TrimSuffix(l, []byte("\n"))
		var e Event
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		if e.Seq != uint64(i+1) || e.Prev != prev {
			t.Fatalf("line %d: seq %d prev %s; want seq %d prev %s", i+1, e.Seq, e.Prev, i+1, prev)
		}
		if e.Time.Location() != time.UTC || e.Time.Before(last) {
			t.Fatalf("line %d: time %v not UTC or before %v", i+1, e.Time, last)
		}
		// The exact bytes: RFC 3339 with nine fraction digits and a Z.
		if !bytes.Contains(line, []byte(e.Time.Format(TimeFormat))) || !strings.HasSuffix(e.Time.Format(TimeFormat), "Z") {
			t.Fatalf("line %d: time not in %s: %s", i+1, TimeFormat, line)
		}
		last = e.Time
		want := sampleEvent(i)
		want.Time, want.Seq, want.Prev = e.Time, e.Seq, e.Prev
		if !reflect.DeepEqual(e, want) {
			t.Fatalf("line %d round trip:\n got %+v\nwant %+v", i+1, e, want)
		}
		sum := sha256.Sum256(line)
		prev = hex.EncodeToString(sum[:])
	}
}

// tamper functions edit a log of 10 records (lines "1".."10") in place.
func TestVerifyDetectsAndLocatesTampering(t *testing.T) {
	cases := []struct {
		name     string
		edit     func(lines []string) []string
		wantLine int    // 0: the file as a whole
		wantSeq  uint64 //
		wantIn   string
	}{
		{"edit a field", func(l []string) []string {
			l[4] = strings.Replace(l[4], `"calling_ae":"MODALITY1"`, `"calling_ae":"MODALITY2"`, 1)
			return l
		}, 6, 6, "previous record (" /* names line 5 */},
		{"edit the status of the last record", func(l []string) []string {
			l[9] = strings.Replace(l[9], `"status":"0x0000"`, `"status":"0xA700"`, 1)
			return l
		}, 10, 10, "altered"},
		{"delete a line", func(l []string) []string { return append(l[:4], l[5:]...) }, 5, 5, "has seq 6, expected 5"},
		{"insert a copied line", func(l []string) []string {
			return append(l[:5], append([]string{l[2]}, l[5:]...)...)
		}, 6, 6, "has seq 3, expected 6"},
		{"insert a forged line with the right seq", func(l []string) []string {
			forged := strings.Replace(l[5], `"seq":6`, `"seq":6`, 1)
			out := append([]string{}, l[:5]...)
			out = append(out, forged)
			for _, s := range l[5:] {
				out = append(out, strings.Replace(s, fmt.Sprintf(`"seq":%d`, seqOf(s)), fmt.Sprintf(`"seq":%d`, seqOf(s)+1), 1))
			}
			return out
		}, 7, 7, "prev does not match"},
		{"swap two lines", func(l []string) []string { l[3], l[4] = l[4], l[3]; return l }, 4, 4, "has seq 5, expected 4"},
		{"truncate mid-record", func(l []string) []string {
			l[9] = l[9][:len(l[9])/2]
			return l
		}, 10, 10, "incomplete last record"},
		{"truncate at a line boundary", func(l []string) []string { return l[:7] }, 0, 8, "truncated: the chain ends at seq 7"},
		{"delete the first line", func(l []string) []string { return l[1:] }, 1, 1, "does not start at seq 1"},
		{"garbage line", func(l []string) []string { l[2] = "hello"; return l }, 3, 3, "not a JSON record"},
		{"empty the file", func(l []string) []string { return nil }, 0, 1, "truncated"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := openT(t, Config{})
			writeN(t, w, 10)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			raw, _ := os.ReadFile(w.cfg.File)
			lines := strings.SplitAfter(strings.TrimSuffix(string(raw), "\n"), "\n")
			for i := range lines {
				lines[i] = strings.TrimSuffix(lines[i], "\n")
			}
			lines = tc.edit(lines)
			out := strings.Join(lines, "\n")
			if len(lines) > 0 && !strings.Contains(tc.name, "mid-record") {
				out += "\n"
			}
			if err := os.WriteFile(w.cfg.File, []byte(out), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Verify(Files(w.cfg.File))
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("Verify = %v; want a *VerifyError", err)
			}
			if ve.Line != tc.wantLine || ve.Seq != tc.wantSeq || !strings.Contains(ve.Error(), tc.wantIn) {
				t.Fatalf("Verify error %q (line %d seq %d); want line %d seq %d containing %q",
					ve, ve.Line, ve.Seq, tc.wantLine, tc.wantSeq, tc.wantIn)
			}
			if tc.wantLine > 0 && !strings.HasPrefix(ve.Error(), fmt.Sprintf("%s:%d: seq %d: ", w.cfg.File, tc.wantLine, tc.wantSeq)) {
				t.Fatalf("error %q does not start with file:line: seq N:", ve)
			}
		})
	}
}

func seqOf(line string) uint64 {
	var r struct{ Seq uint64 }
	json.Unmarshal([]byte(line), &r)
	return r.Seq
}

func TestVerifyNamesThePreviousRecordOnAnEdit(t *testing.T) {
	w := openT(t, Config{})
	writeN(t, w, 3)
	w.Close()
	raw, _ := os.ReadFile(w.cfg.File)
	os.WriteFile(w.cfg.File, bytes.Replace(raw, []byte(`"1.2.3.1"`), []byte(`"1.2.3.9"`), 1), 0o600)
	_, err := Verify(Files(w.cfg.File))
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("(%s:2 seq 2) was altered", w.cfg.File)) {
		t.Fatalf("Verify = %v; want it to name line 2 seq 2 as altered", err)
	}
}

// A copy without its head anchor: an intact chain is ErrNoHeadAnchor (and a
// *VerifyError naming the head file), a broken one is the break, not that.
func TestVerifyWithoutHeadAnchor(t *testing.T) {
	w := openT(t, Config{})
	writeN(t, w, 4)
	w.Close()
	if err := os.Remove(headPath(w.cfg.File)); err != nil {
		t.Fatal(err)
	}
	n, err := Verify(Files(w.cfg.File))
	var ve *VerifyError
	if n != 4 || !errors.Is(err, ErrNoHeadAnchor) || !errors.As(err, &ve) || ve.File != headPath(w.cfg.File) {
		t.Fatalf("Verify = %d, %v; want 4 records and ErrNoHeadAnchor naming %s", n, err, headPath(w.cfg.File))
	}
	raw, _ := os.ReadFile(w.cfg.File)
	os.WriteFile(w.cfg.File, bytes.Replace(raw, []byte(`"1.2.3.1"`), []byte(`"1.2.3.9"`), 1), 0o600)
	if _, err := Verify(Files(w.cfg.File)); err == nil || errors.Is(err, ErrNoHeadAnchor) || !strings.Contains(err.Error(), "was altered") {
		t.Fatalf("Verify of an edited copy without head = %v; want the edit, not the missing anchor", err)
	}
}

func TestRestartContinuesChain(t *testing.T) {
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	for run := range 3 {
		w := openT(t, Config{File: file})
		writeN(t, w, 4)
		if err := w.Close(); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
	}
	n, err := Verify(Files(file))
	if err != nil || n != 12 {
		t.Fatalf("Verify = %d, %v; want 12, nil", n, err)
	}
}

func TestRestartAfterTornWrite(t *testing.T) {
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	w := openT(t, Config{File: file})
	writeN(t, w, 3)
	w.Close()
	f, _ := os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"time":"2026-01-01T00:00:00.000000000Z","event":"dim`) // power cut mid-write
	f.Close()

	w = openT(t, Config{File: file})
	writeN(t, w, 2)
	w.Close()
	lines := readLinesT(t, file)
	if len(lines) != 7 || seqOf(string(lines[4])) != 4 || seqOf(string(lines[5])) != 5 {
		t.Fatalf("after a torn write the chain should continue at seq 4 on a new line; got %q", lines)
	}
	_, err := Verify(Files(file))
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Line != 4 || !strings.Contains(ve.Reason, "not a JSON record") {
		t.Fatalf("Verify = %v; want the torn line 4 reported", err)
	}
}

// A log cut since the last run (its anchor kept, or removed too, or an
// altered last record) is continued, but the first record written is
// audit.anchor_mismatch saying what was found and expected, and Verify
// fails on it (ErrAnchorMismatch) naming that record.
func TestOpenRecordsAnchorMismatch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(file string, lines [][]byte)
		want   string
	}{
		{"cut, anchor kept", func(file string, lines [][]byte) {
			os.WriteFile(file, bytes.Join(lines[:3], nil), 0o600)
		}, "found the log ending at seq 3"},
		{"cut, anchor removed", func(file string, lines [][]byte) {
			os.WriteFile(file, bytes.Join(lines[:3], nil), 0o600)
			os.Remove(headPath(file))
		}, "found no head anchor"},
		{"last record replaced", func(file string, lines [][]byte) {
			os.WriteFile(file, append(bytes.Join(lines[:4], nil), bytes.Replace(lines[4], []byte(`"seq":5`), []byte(`"seq":5,"x":1`), 1)...), 0o600)
		}, "the last record was altered"},
		{"whole log removed", func(file string, lines [][]byte) {
			os.WriteFile(file, nil, 0o600)
		}, "5 record(s) were cut"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "audit.jsonl")
			w := openT(t, Config{File: file})
			writeN(t, w, 5)
			w.Close()
			tc.tamper(file, readLinesT(t, file))
			w = openT(t, Config{File: file})
			writeN(t, w, 2)
			w.Close()
			lines := readLinesT(t, file)
			lines = lines[:len(lines)-1] // after the last newline
			var first struct{ Event, Detail string }
			kept := len(lines) - 3
			if err := json.Unmarshal(lines[kept], &first); err != nil || first.Event != EventAnchorMismatch ||
				!strings.Contains(first.Detail, tc.want) || !strings.Contains(first.Detail, "expected") {
				t.Fatalf("first record after reopening = %s; want audit.anchor_mismatch with %q", lines[kept], tc.want)
			}
			_, err := Verify(Files(file))
			var ve *VerifyError
			if !errors.Is(err, ErrAnchorMismatch) || !errors.As(err, &ve) || ve.Line != kept+1 {
				t.Fatalf("Verify = %v; want ErrAnchorMismatch naming line %d", err, kept+1)
			}
			// The anchor now matches the log again: the mismatch record, not
			// the anchor, is what keeps verify failing.
			if h, _ := readHead(file); h == nil || h.Seq != seqOf(string(lines[len(lines)-1])) {
				t.Errorf("anchor after reopening = %+v; want the log's last seq", h)
			}
		})
	}
}

func TestRotationKeepsChainVerifiable(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "audit.jsonl")
	probe := sampleEvent(99)
	probe.Seq, probe.Prev = 99, ZeroHash
	line := len(probe.appendJSON(nil)) + 1 // about one record
	w := openT(t, Config{File: file, RotateSize: int64(line * 5)})
	writeN(t, w, 23)
	w.Close()
	// Restart: the chain continues in the current file.
	w = openT(t, Config{File: file, RotateSize: int64(line * 5)})
	writeN(t, w, 7)
	w.Close()

	files := Files(file)
	if len(files) < 5 {
		t.Fatalf("Files = %v; want at least 5 files for 30 records of about 5 per file", files)
	}
	for i, f := range files[:len(files)-1] {
		if want := fmt.Sprintf("%s.%d", file, i+1); f != want {
			t.Fatalf("Files[%d] = %s; want %s (oldest first)", i, f, want)
		}
		if st, _ := os.Stat(f); st.Size() > int64(line*5) {
			t.Fatalf("%s is %d bytes, over RotateSize %d", f, st.Size(), line*5)
		}
	}
	if files[len(files)-1] != file {
		t.Fatalf("last of Files = %s; want the current file", files[len(files)-1])
	}
	n, err := Verify(files)
	if err != nil || n != 30 {
		t.Fatalf("Verify = %d, %v; want 30, nil", n, err)
	}
	var seqs []uint64
	if err := ReadFiles(files, Filter{}, func(e Event, _ []byte) error { seqs = append(seqs, e.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("ReadFiles seq order %v", seqs)
		}
	}

	// Removing a middle file breaks the chain at the next file's first line.
	os.Remove(files[2])
	_, err = Verify(Files(file))
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.File != files[3] || ve.Line != 1 || !strings.Contains(ve.Reason, "missing") {
		t.Fatalf("Verify after removing %s = %v; want %s:1 missing records", files[2], err, files[3])
	}
}

func TestRestartAfterRotationWithEmptyCurrentFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	w := openT(t, Config{File: file})
	writeN(t, w, 3)
	w.Close()
	// An operator (or logrotate-like tool) moved the file aside.
	if err := os.Rename(file, file+".1"); err != nil {
		t.Fatal(err)
	}
	w = openT(t, Config{File: file})
	writeN(t, w, 2)
	w.Close()
	if n, err := Verify(Files(file)); err != nil || n != 5 {
		t.Fatalf("Verify = %d, %v; want 5, nil", n, err)
	}
}

// gate is a slow disk: every Write waits until the gate opens (or a delay).
// entered is closed when the first Write is waiting.
type gate struct {
	w       io.Writer
	open    chan struct{}
	delay   time.Duration
	entered chan struct{}
	once    sync.Once
}

func (g *gate) Write(b []byte) (int, error) {
	g.once.Do(func() { close(g.entered) })
	<-g.open
	time.Sleep(g.delay)
	return g.w.Write(b)
}

// TestQueueModesNeverLoseOrReorderAcceptedRecords drives several producers
// against a writer whose disk is stalled, so the queue fills: "block" must
// accept everything, "drop" must refuse some, and in both modes the file must
// hold exactly the accepted events, each producer's in its own order, with
// an intact chain.
func TestQueueModesNeverLoseOrReorderAcceptedRecords(t *testing.T) {
	for _, mode := range []string{"block", "drop"} {
		t.Run(mode, func(t *testing.T) {
			const producers, each = 4, 200
			g := &gate{open: make(chan struct{}), entered: make(chan struct{}), delay: 200 * time.Microsecond}
			cfg := Config{OnFull: mode, QueueSize: 8, Fsync: 10 * time.Millisecond}
			cfg.wrap = func(w io.Writer) io.Writer { g.w = w; return g }
			w := openT(t, cfg)
			var openGate sync.Once
			t.Cleanup(func() { openGate.Do(func() { close(g.open) }) }) // before openT's Close, on any failure

			// Stall the writer in its first write, so nothing the producers
			// queue can be taken until the gate opens: the queue must fill.
			if !w.Log(Event{Event: EventDIMSE, Detail: "primer"}) {
				t.Fatal("primer refused")
			}
			select {
			case <-g.entered:
			case <-time.After(10 * time.Second):
				t.Fatal("the writer never reached the disk")
			}
			accepted := make([][]string, producers)
			var wg sync.WaitGroup
			for p := range producers {
				wg.Go(func() {
					for i := range each {
						e := sampleEvent(i)
						e.Detail = fmt.Sprintf("p%d-%04d", p, i)
						if w.Log(e) {
							accepted[p] = append(accepted[p], e.Detail)
						}
					}
				})
			}
			deadline := time.Now().Add(10 * time.Second)
			for w.QueueDepth() < cfg.QueueSize && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if w.QueueDepth() != cfg.QueueSize {
				t.Fatalf("queue depth %d; the stalled writer should have filled it to %d", w.QueueDepth(), cfg.QueueSize)
			}
			openGate.Do(func() { close(g.open) }) // let it drain slowly
			wg.Wait()
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}

			total := 0
			for _, a := range accepted {
				total += len(a)
			}
			switch mode {
			case "block":
				if total != producers*each || w.Dropped() != 0 {
					t.Fatalf("block accepted %d of %d, dropped %d", total, producers*each, w.Dropped())
				}
			case "drop":
				if w.Dropped() == 0 || total+int(w.Dropped()) != producers*each {
					t.Fatalf("drop: accepted %d + dropped %d != %d (and some must drop)", total, w.Dropped(), producers*each)
				}
			}

			got := make([][]string, producers)
			n := 0
			err := ReadFiles(Files(w.cfg.File), Filter{}, func(e Event, _ []byte) error {
				if n++; n == 1 {
					if e.Detail != "primer" {
						t.Errorf("first record %q, want the primer", e.Detail)
					}
					return nil
				}
				var p, i int
				fmt.Sscanf(e.Detail, "p%d-%d", &p, &i)
				got[p] = append(got[p], e.Detail)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if n != total+1 {
				t.Fatalf("file holds %d records; %d were accepted after the primer", n, total)
			}
			for p := range producers {
				if !reflect.DeepEqual(got[p], accepted[p]) {
					t.Fatalf("producer %d: file order %v\nwant accepted order %v", p, got[p], accepted[p])
				}
			}
			if vn, err := Verify(Files(w.cfg.File)); err != nil || vn != total+1 {
				t.Fatalf("Verify = %d, %v", vn, err)
			}
		})
	}
}

func TestLogAfterCloseIsRefused(t *testing.T) {
	w := openT(t, Config{})
	w.Close()
	if w.Log(sampleEvent(0)) {
		t.Fatal("Log after Close returned true")
	}
	if w.Dropped() != 1 {
		t.Fatalf("Dropped = %d; want 1", w.Dropped())
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestFsyncIntervalAdvancesHeadWithoutClose(t *testing.T) {
	w := openT(t, Config{Fsync: 20 * time.Millisecond})
	writeN(t, w, 3)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if h, _ := readHead(w.cfg.File); h != nil && h.Seq == 3 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	h, err := readHead(w.cfg.File)
	t.Fatalf("head after fsync interval = %+v, %v; want seq 3", h, err)
}

func TestPatientID(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "audit.jsonl")
	hash := openT(t, Config{File: file, PatientIDs: "hash"})
	h1 := hash.PatientID("PAT-001 ")
	h2 := hash.PatientID("PAT-002")
	hash.Close()
	cases := []struct {
		name, mode, raw, want string
	}{
		{"omit", "omit", "PAT-001", ""},
		{"plain trims DICOM padding", "plain", "PAT-001 \x00", "PAT-001"},
		{"plain empty", "plain", "", ""},
		{"hash empty", "hash", "  ", ""},
		{"hash is stable across opens (key persisted)", "hash", "PAT-001", h1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := openT(t, Config{File: file, PatientIDs: tc.mode})
			defer w.Close()
			if got := w.PatientID(tc.raw); got != tc.want {
				t.Fatalf("PatientID(%q) = %q; want %q", tc.raw, got, tc.want)
			}
		})
	}
	if !strings.HasPrefix(h1, "hmac-sha256:") || len(h1) != len("hmac-sha256:")+64 || strings.Contains(h1, "PAT") {
		t.Fatalf("hash form %q", h1)
	}
	if h2 == h1 {
		t.Fatal("different IDs hash equal")
	}
	st, err := os.Stat(file + ".key")
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, st.Mode())
	}
	// Another log (another key) does not correlate with this one.
	other := openT(t, Config{PatientIDs: "hash"})
	if other.PatientID("PAT-001") == h1 {
		t.Fatal("two keys gave the same hash")
	}
}

func TestSecondWriterOnTheSameFileIsRefused(t *testing.T) {
	w := openT(t, Config{})
	if w2, err := Open(Config{File: w.cfg.File}); err == nil || !strings.Contains(err.Error(), "another process") {
		if w2 != nil {
			w2.Close()
		}
		t.Fatalf("second Open = %v; want a lock error", err)
	}
	w.Close()
	w3, err := Open(Config{File: w.cfg.File})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	w3.Close()
}

func TestHeadFollowsPerBatchFsync(t *testing.T) {
	// Fsync 0 syncs every batch but refreshes the anchor at most every
	// 250 ms; the ticker must still bring it up to date without Close.
	w := openT(t, Config{Fsync: 0})
	writeN(t, w, 20)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if h, _ := readHead(w.cfg.File); h != nil && h.Seq == 20 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("head never reached seq 20 with per-batch fsync")
}

func TestOpenRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{{OnFull: "wait"}, {PatientIDs: "encrypt"}} {
		cfg.File = filepath.Join(t.TempDir(), "a.jsonl")
		if _, err := Open(cfg); err == nil {
			t.Errorf("Open(%+v) succeeded", cfg)
		}
	}
	// Defaults live in policy: the file and the forwarder's timings are
	// given by the caller, never guessed here.
	if _, err := Open(Config{}); err == nil {
		t.Error("Open with no file succeeded")
	}
	sl := edgeTimings(&SyslogConfig{Address: "127.0.0.1:1"})
	sl.DialTimeout = 0
	if _, err := Open(Config{File: filepath.Join(t.TempDir(), "a.jsonl"), Syslog: sl}); err == nil || !strings.Contains(err.Error(), "DialTimeout") {
		t.Errorf("Open with no syslog DialTimeout: %v", err)
	}
}

func TestOpenRefusesUnreadableLastRecord(t *testing.T) {
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	os.WriteFile(file, []byte("not json\n"), 0o600)
	if _, err := Open(Config{File: file}); err == nil || !strings.Contains(err.Error(), "not a valid audit record") {
		t.Fatalf("Open = %v", err)
	}
}

func TestEncodingMatchesEncodingJSON(t *testing.T) {
	cases := map[string]Event{
		"empty":          {},
		"full":           sampleEvent(7),
		"rejected":       {Event: EventRejected, Result: 1, Source: 1, ReasonCode: 3, Reason: "calling-ae-not-recognized", ResultName: "rejected-permanent", SourceName: "service-user"},
		"accepted":       {Event: EventAccepted, Listener: "inside", Rule: "r", Action: "relay", Backend: "pacs", Contexts: []string{"1.2", "1.3"}, UserIdentity: &UserIdentity{Type: "username", User: "bob"}},
		"empty client":   {Client: &Client{}, UserIdentity: &UserIdentity{}},
		"hostile text":   {CallingAE: "A\"B\\C\n\r\t\x00\x1f\x7f", Detail: "caf\xe9 \u2028 \u2029 <&> ☃"},
		"refused":        {Allowed: Bool(false), BytesIn: -1, AbortSource: "service-user"},
		"client members": {Client: &Client{Subject: "CN=x,O=y", Email: []string{"a@b"}, URI: []string{"spiffe://x/y"}, Issuer: "CN=ca"}},
	}
	for name, e := range cases {
		t.Run(name, func(t *testing.T) {
			e.Time = time.Date(2026, 11, 25, 1, 2, 3, 4, time.UTC)
			b := e.appendJSON(nil)
			if !json.Valid(b) || bytes.ContainsAny(b, "\n\r") {
				t.Fatalf("invalid or multi-line JSON: %s", b)
			}
			var back Event
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			want := e
			want.CallingAE = strings.ToValidUTF8(want.CallingAE, "\ufffd")
			want.Detail = strings.ToValidUTF8(want.Detail, "\ufffd")
			if !reflect.DeepEqual(back, want) {
				t.Fatalf("round trip:\n got %+v\nwant %+v\nline %s", back, want, b)
			}
			if !bytes.Contains(b, []byte(`"time":"2026-11-25T01:02:03.000000004Z"`)) {
				t.Fatalf("time not nanosecond RFC 3339 UTC: %s", b)
			}
		})
	}
}

func TestReaderSkipsNonRecordsIncludingHugeLines(t *testing.T) {
	w := openT(t, Config{})
	writeN(t, w, 3)
	w.Close()
	lines := readLinesT(t, w.cfg.File)
	huge := bytes.Repeat([]byte("x"), maxLine+maxLine/2)
	var b bytes.Buffer
	b.Write(lines[0])
	b.Write(huge)
	b.WriteByte('\n')
	b.WriteString("not json\n")
	b.Write(lines[1])
	b.Write(lines[2])
	os.WriteFile(w.cfg.File, b.Bytes(), 0o600)

	var seqs []uint64
	err := ReadFiles(Files(w.cfg.File), Filter{}, func(e Event, _ []byte) error { seqs = append(seqs, e.Seq); return nil })
	var bad *BadLinesError
	if !errors.As(err, &bad) || bad.Count != 2 || !strings.HasPrefix(bad.First, w.cfg.File+":2: longer than") {
		t.Fatalf("ReadFiles error = %v; want 2 bad lines, first at line 2", err)
	}
	if !reflect.DeepEqual(seqs, []uint64{1, 2, 3}) {
		t.Fatalf("records around the bad lines: %v", seqs)
	}
	_, err = Verify(Files(w.cfg.File))
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Line != 2 || !strings.Contains(ve.Reason, "longer than") {
		t.Fatalf("Verify = %v; want line 2 too long", err)
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	for range 3 {
		w, err := Open(Config{File: filepath.Join(t.TempDir(), "a.jsonl"), Fsync: 10 * time.Millisecond,
			Syslog: edgeTimings(&SyslogConfig{Address: "127.0.0.1:1", Format: "json", CloseTimeout: 50 * time.Millisecond, DialTimeout: 50 * time.Millisecond})})
		if err != nil {
			t.Fatal(err)
		}
		writeN(t, w, 10)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// docs/audit.md lists fields per event; measured zeros and the empty rule of
// an unmatched reject are written, not left out.
func TestPerEventFieldsPresentWhenZero(t *testing.T) {
	cases := []struct {
		name string
		e    Event
		want []string
		not  []string
	}{
		{"fast C-ECHO", Event{Event: EventDIMSE, Service: "C-ECHO", MessageID: 1, Status: "0x0000", Allowed: Bool(true)},
			[]string{`"ms":0`, `"bytes":0`, `"allowed":true`}, []string{`"bytes_in"`, `"rule"`}},
		{"no rule matched", Event{Event: EventRejected, Result: 1, Source: 1, ReasonCode: 3, Reason: "calling-ae-not-recognized"},
			[]string{`"rule":""`, `"result":1`, `"source":1`}, []string{`"ms"`}},
		{"instant release", Event{Event: EventReleased, Rule: "echo"},
			[]string{`"ms":0`, `"bytes_in":0`, `"bytes_out":0`}, []string{`"bytes":`}},
		{"abort", Event{Event: EventAborted, AbortSource: "service-user", AbortReason: "reason-not-specified", BytesIn: 5},
			[]string{`"ms":0`, `"bytes_in":5`, `"bytes_out":0`, `"abort_source":"service-user"`}, nil},
		{"accepted keeps omitting", Event{Event: EventAccepted, Rule: "echo", Action: "answer"},
			[]string{`"rule":"echo"`}, []string{`"ms"`, `"bytes"`}},
		{"tls.failed", Event{Event: EventTLSFailed, Reason: "unknown-ca"}, []string{`"reason":"unknown-ca"`}, []string{`"rule"`, `"ms"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.e.appendJSON(nil)
			if !json.Valid(b) {
				t.Fatalf("invalid JSON %s", b)
			}
			for _, w := range tc.want {
				if !bytes.Contains(b, []byte(w)) {
					t.Errorf("%s lacks %s", b, w)
				}
			}
			for _, n := range tc.not {
				if bytes.Contains(b, []byte(n)) {
					t.Errorf("%s has %s", b, n)
				}
			}
		})
	}
}

func TestLogWrittenReturnsOnceTheRecordIsInTheFile(t *testing.T) {
	dir := t.TempDir()
	w, err := Open(Config{File: filepath.Join(dir, "audit.jsonl"), Fsync: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := range 50 {
		if !w.LogWritten(context.Background(), Event{Event: EventSpoolForwarded, SOPInstance: fmt.Sprintf("2.25.%d", i)}) {
			t.Fatal("LogWritten = false")
		}
		b, err := os.ReadFile(filepath.Join(dir, "audit.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), fmt.Sprintf(`"sop_instance":"2.25.%d"`, i)) {
			t.Fatalf("record %d not in the file when LogWritten returned", i)
		}
	}
}

// The anchor belongs to the log, FILE.head, whichever files remain. With
// the current file removed (every record since the last rotation cut),
// Files lists only the rotated ones; verify must still judge them against
// FILE.head, which says how far the chain went, rather than look for an
// anchor beside the newest rotated file, report that missing, and pass
// under --allow-missing-anchor (meant for a copy taken without its anchor).
// A log moved aside by hand while the edge was stopped still verifies.
func TestVerifyUsesTheLogsAnchorWhenTheCurrentFileIsGone(t *testing.T) {
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	probe := sampleEvent(99)
	probe.Seq, probe.Prev = 99, ZeroHash
	line := len(probe.appendJSON(nil)) + 1
	w := openT(t, Config{File: file, RotateSize: int64(line * 5)})
	writeN(t, w, 12)
	w.Close()
	files := Files(file)
	if len(files) < 2 || files[len(files)-1] != file {
		t.Fatalf("Files = %v; want rotated files and the current one", files)
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	n, err := Verify(Files(file))
	var ve *VerifyError
	if errors.Is(err, ErrNoHeadAnchor) || !errors.As(err, &ve) || ve.File != files[len(files)-2] || !strings.Contains(ve.Reason, "truncated") ||
		!strings.Contains(ve.Reason, headPath(file)+" records seq 12") {
		t.Fatalf("Verify without the current file = %d, %v; want truncated against %s (seq 12), not a missing anchor", n, err, headPath(file))
	}

	moved := filepath.Join(t.TempDir(), "audit.jsonl")
	w = openT(t, Config{File: moved})
	writeN(t, w, 3)
	w.Close()
	if err := os.Rename(moved, moved+".1"); err != nil {
		t.Fatal(err)
	}
	if n, err := Verify(Files(moved)); err != nil || n != 3 {
		t.Fatalf("Verify of a log moved aside = %d, %v; want 3, nil", n, err)
	}
}

// Rotation renames the current file and creates a new one: both are
// entries of the directory, which a crash may lose until the directory
// itself is synced, and with them records fsync'd into the new file that
// the anchor already claims. Each rotation syncs the directory before any
// record goes into the new file.
func TestRotationSyncsTheDirectory(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "audit.jsonl")
	probe := sampleEvent(99)
	probe.Seq, probe.Prev = 99, ZeroHash
	line := len(probe.appendJSON(nil)) + 1
	var mu sync.Mutex
	synced := map[string]int{} // directory -> records in the current file when it was synced
	cfg := Config{File: file, RotateSize: int64(line * 5), syncDir: func(d string) error {
		mu.Lock()
		defer mu.Unlock()
		st, err := os.Stat(file)
		if err != nil || st.Size() != 0 {
			t.Errorf("directory synced with the new file %v (size %v), want it created and still empty", err, st)
		}
		synced[d]++
		return nil
	}}
	w := openT(t, cfg)
	writeN(t, w, 23)
	w.Close()
	rotations := len(Files(file)) - 1
	mu.Lock()
	defer mu.Unlock()
	if rotations < 4 || synced[dir] != rotations {
		t.Fatalf("%d rotations, the directory synced %d times (%v); want once per rotation", rotations, synced[dir], synced)
	}
}

// verify quotes the detail of an audit.anchor_mismatch record in its
// message, which `dicomedge audit verify` prints to the reviewer's
// terminal. The record is in the log, which whoever tampered with it can
// write: decoded, its \u001b is a raw escape that could erase the failure
// on screen and print "ok" in its place. The detail is shown escaped, as
// the table shows every field.
func TestVerifyEscapesTheAnchorMismatchDetail(t *testing.T) {
	w := openT(t, Config{})
	w.Log(Event{Event: EventAnchorMismatch, Detail: "found\x1b[2K\r\u009bok: 1 records, hash chain intact\u202e"})
	w.Close()
	_, err := Verify(Files(w.cfg.File))
	if !errors.Is(err, ErrAnchorMismatch) {
		t.Fatalf("Verify = %v; want ErrAnchorMismatch", err)
	}
	if msg := err.Error(); strings.ContainsFunc(msg, unsafeRune) || !strings.Contains(msg, `found\u001b[2K\u000d\u009bok`) {
		t.Fatalf("Verify's message %q holds the detail raw; want it escaped", msg)
	}
}
