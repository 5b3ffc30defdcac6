package audit

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkLog measures Log throughput end to end with fsync every second:
// the timer includes Close, so every event counted is on disk, not just
// queued. Figures only; no assertions on time.
func BenchmarkLog(b *testing.B) {
	for _, bc := range []struct {
		name     string
		parallel bool
	}{{"serial", false}, {"parallel", true}} {
		b.Run(bc.name, func(b *testing.B) {
			w, err := Open(Config{File: filepath.Join(b.TempDir(), "audit.jsonl"), Fsync: time.Second, RotateSize: -1})
			if err != nil {
				b.Fatal(err)
			}
			e := sampleEvent(1)
			e.PatientID = w.PatientID("PAT001")
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			if bc.parallel {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						w.Log(e)
					}
				})
			} else {
				for range b.N {
					w.Log(e)
				}
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}

// BenchmarkPatientIDHash is the per-C-STORE cost of hash mode.
func BenchmarkPatientIDHash(b *testing.B) {
	w, err := Open(Config{File: filepath.Join(b.TempDir(), "audit.jsonl")})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	b.ReportAllocs()
	for b.Loop() {
		w.PatientID("PAT-0012345")
	}
}

// BenchmarkVerify is the cost of `dicomedge audit verify` per record.
func BenchmarkVerify(b *testing.B) {
	file := filepath.Join(b.TempDir(), "audit.jsonl")
	w, err := Open(Config{File: file, Fsync: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	const n = 10000
	for i := range n {
		w.Log(sampleEvent(i))
	}
	w.Close()
	st, _ := os.Stat(file)
	b.SetBytes(st.Size())
	b.ReportAllocs()
	for b.Loop() {
		if got, err := Verify(Files(file)); err != nil || got != n {
			b.Fatal(got, err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
}
