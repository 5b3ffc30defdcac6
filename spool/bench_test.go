package spool

import (
	"path/filepath"
	"sync/atomic"
	"testing"
)

// BenchmarkCommit16KiB8Writers: 8 writers committing 16 KiB instances at
// once, each fsync'd, renamed and its directory fsync'd (group commit).
func BenchmarkCommit16KiB8Writers(b *testing.B) {
	s, err := Open(Config{Dir: filepath.Join(b.TempDir(), "spool")})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	data := make([]byte, 16<<10)
	var n atomic.Int64
	b.SetParallelism(4) // × GOMAXPROCS 2 = 8 writers
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w, err := s.Create("pacs", meta(int(n.Add(1))))
			if err != nil {
				b.Error(err)
				return
			}
			w.Write(data)
			if err := w.Commit(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	f, d := s.SyncCounts()
	b.ReportMetric(float64(f)/float64(max(d, 1)), "instances/dirsync")
}
