package policytool

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/audit"
)

// writeBenchLog writes n records of realistic traffic under v1.hcl in two
// files (FILE.1, rotated, then FILE) with the audit package's own encoding:
// per association an accepted or rejected record, then for accepted ones
// C-STOREs, a C-FIND or a C-MOVE, and the release. Clients and source
// addresses vary so that every rule of v1.hcl decides some of them.
func writeBenchLog(tb testing.TB, dir string, n int) string {
	tb.Helper()
	file := filepath.Join(dir, "audit.jsonl")
	var f *os.File
	var w *bufio.Writer
	open := func(name string) {
		var err error
		if f, err = os.Create(name); err != nil {
			tb.Fatal(err)
		}
		w = bufio.NewWriterSize(f, 1<<20)
	}
	closeFile := func() {
		if err := w.Flush(); err != nil {
			tb.Fatal(err)
		}
		if err := f.Close(); err != nil {
			tb.Fatal(err)
		}
	}
	open(file + ".1")
	clients := []*audit.Client{
		{Subject: "CN=ct1.clinic-a.example.org,O=Clinic A", CN: "ct1.clinic-a.example.org", DNS: []string{"ct1.clinic-a.example.org"},
			Fingerprint: "sha256:9f2c1e4b8a7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3", Issuer: "CN=Clinic A CA,O=Clinic A"},
		{Subject: "CN=stats.research.example.org", CN: "stats.research.example.org",
			Fingerprint: "sha256:1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809", Issuer: "CN=Research CA"},
		{Subject: "CN=modality.elsewhere.net", CN: "modality.elsewhere.net",
			Fingerprint: "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", Issuer: "CN=Other CA"},
	}
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	prev := audit.ZeroHash
	var line []byte
	seq, assoc := 0, 0
	emit := func(e audit.Event) {
		seq++
		e.Seq, e.Prev, e.Time = uint64(seq), prev, t0.Add(time.Duration(seq)*time.Second)
		var err error
		if line, err = e.MarshalJSON(); err != nil {
			tb.Fatal(err)
		}
		w.Write(line)
		w.WriteByte('\n')
		if seq == n/2 {
			closeFile()
			open(file)
		}
	}
	for seq < n {
		assoc++
		id := fmt.Sprintf("c%d", assoc)
		c := clients[assoc%len(clients)]
		base := audit.Event{Conn: id, Assoc: id, Remote: fmt.Sprintf("203.0.113.%d:%d", assoc%250+1, 1024+assoc%60000), Client: c}
		ev := base
		switch assoc % len(clients) {
		case 0:
			ev.Event, ev.CallingAE, ev.CalledAE, ev.Rule, ev.Action, ev.Backend = audit.EventAccepted, "CLINA_CT1", "MAINPACS", "clinic-a", "relay", "pacs"
		case 1:
			ev.Event, ev.CallingAE, ev.CalledAE, ev.Rule, ev.Action, ev.Backend = audit.EventAccepted, "RESEARCH", "ARCHIVE", "research", "relay", "archive"
		default:
			ev.Event, ev.CallingAE, ev.CalledAE, ev.Rule = audit.EventRejected, "ANY", "MAINPACS", "deny"
			ev.Result, ev.Source, ev.ReasonCode, ev.Reason, ev.ResultName, ev.SourceName = 1, 1, 3, "calling-ae-not-recognized", "rejected-permanent", "service-user"
		}
		emit(ev)
		if ev.Event == audit.EventRejected {
			continue
		}
		for i := 1; i <= 3 && seq < n; i++ {
			d := base
			d.Event, d.CallingAE, d.CalledAE, d.MessageID, d.Status, d.Allowed = audit.EventDIMSE, ev.CallingAE, ev.CalledAE, i, "0x0000", audit.Bool(true)
			switch {
			case ev.Rule == "research":
				d.Service, d.SOPClass = "C-FIND", "1.2.840.10008.5.1.4.1.2.2.1"
			case i == 3:
				d.Service, d.SOPClass, d.MoveDestination = "C-MOVE", "1.2.840.10008.5.1.4.1.2.2.2", "CLINA_WS1"
			default:
				d.Service, d.SOPClass, d.SOPInstance, d.Bytes = "C-STORE", "1.2.840.10008.5.1.4.1.1.2", fmt.Sprintf("2.25.%d.%d", assoc, i), 524288
				d.PatientID = "hmac-sha256:148636b7e4c1f7df269d85b350a71d7c42de4a136fbb802e004ad8ccf5ff1306"
			}
			emit(d)
		}
		if seq < n {
			end := base
			end.Event, end.CallingAE, end.CalledAE, end.Rule, end.Backend, end.BytesIn, end.BytesOut, end.MS = audit.EventReleased, ev.CallingAE, ev.CalledAE, ev.Rule, ev.Backend, 1<<20, 4096, 120
			emit(end)
		}
	}
	closeFile()
	return file
}

// BenchmarkReplay replays a generated 1,000,000-record log (two files)
// under v2.hcl, which changes the decision or the requests of most of its
// associations, and reports records per second.
func BenchmarkReplay(b *testing.B) {
	const records = 1_000_000
	file := writeBenchLog(b, b.TempDir(), records)
	cfg := loadPolicy(b, "testdata/v2.hcl")
	var st ReplayStats
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := &Replayer{Config: cfg, Report: func(*Change) error { return nil }}
		var err error
		if st, err = r.ReplayFiles(audit.Files(file)); err != nil {
			b.Fatal(err)
		}
	}
	if st.Records != records {
		b.Fatalf("replayed %d records, want %d", st.Records, records)
	}
	b.ReportMetric(float64(records)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(st.Associations), "associations")
	b.ReportMetric(float64(st.AssociationsChanged), "changed")
}
