package spool

import (
	"bytes"
	"testing"
)

// FuzzReadFileMeta: a spooled file is the edge's own, but one damaged on
// disk (or planted) must give an error, never a panic or a huge allocation.
func FuzzReadFileMeta(f *testing.F) {
	m := meta(1)
	f.Add(fileMeta(&m))
	f.Add(append(fileMeta(&m), 1, 2, 3))
	f.Add(make([]byte, 200))
	f.Fuzz(func(t *testing.T, b []byte) {
		fm, err := ReadFileMeta(bytes.NewReader(b))
		if err == nil && (fm.DataOffset > int64(len(b)) || fm.SOPInstance == "") {
			t.Fatalf("accepted %+v from %d bytes", fm, len(b))
		}
	})
}
