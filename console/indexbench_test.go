package console

import (
	"testing"
	"time"
)

// BenchmarkIndexBuild is how long the start-up rebuild of the index takes
// per record (it runs in the background; the DICOM listener does not wait).
func BenchmarkIndexBuild(b *testing.B) {
	end := time.Now().UTC()
	const n = 200_000
	file := genLog(b, b.TempDir(), n, end, 0)
	for b.Loop() {
		indexOf(b, file, end)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/record")
}
