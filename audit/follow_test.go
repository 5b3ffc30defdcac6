package audit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A rotation while Follow is still reading the rotated files it started
// with must not lose the file that was current when it listed them: the
// callback itself rotates the log on the first record, which is exactly
// "audit follow" started on a busy edge. Every record must arrive once, in
// order.
func TestFollowStartedDuringRotation(t *testing.T) {
	file := filepath.Join(t.TempDir(), "audit", "audit.jsonl")
	w := openT(t, Config{File: file, RotateSize: 2048, Fsync: time.Millisecond})
	var logged atomic.Int64 // written by the callback's rotation, read by the test
	logUntilRotated := func() {
		t.Helper()
		n := len(Files(file))
		deadline := time.Now().Add(10 * time.Second)
		for len(Files(file)) == n {
			if time.Now().After(deadline) {
				t.Errorf("no rotation after %d records", logged.Load())
				return
			}
			if !w.Log(sampleEvent(int(logged.Load()))) {
				t.Errorf("Log(%d) refused", logged.Load())
				return
			}
			logged.Add(1)
			time.Sleep(time.Millisecond)
		}
	}
	logUntilRotated()
	logUntilRotated() // two rotated files, and records in the current one
	if !w.Log(sampleEvent(int(logged.Load()))) {
		t.Fatal("Log refused")
	}
	logged.Add(1)

	followExpectingAll(t, file, logged.Load, logUntilRotated)
}

// followExpectingAll runs Follow on file, calling onFirst from inside the
// callback for the first record, until want() records have arrived (or
// 15 s), and checks they came once each, in seq order from 1.
func followExpectingAll(t *testing.T, file string, want func() int64, onFirst func()) {
	t.Helper()
	var mu sync.Mutex
	var seqs []uint64
	first := true
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Follow(ctx, file, Filter{}, 5*time.Millisecond, func(e Event, _ []byte) error {
			if first {
				first = false
				onFirst()
			}
			mu.Lock()
			seqs = append(seqs, e.Seq)
			mu.Unlock()
			return nil
		})
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		mu.Lock()
		n := len(seqs)
		mu.Unlock()
		if int64(n) >= want() || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("record %d has seq %d, want %d: records lost or repeated (got %v)", i, s, i+1, seqs)
		}
	}
	if int64(len(seqs)) != want() {
		t.Errorf("followed %d records, want %d", len(seqs), want())
	}
}

// The deterministic form of the race above: Follow starts while the current
// file is missing (between the writer's rename and create), and while it
// reads the rotated files the next current file appears and is itself
// rotated. The file rotated in that window must be read, not skipped.
func TestFollowStartedBetweenRenameAndCreate(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src.jsonl")
	w := openT(t, Config{File: src, RotateSize: 2048})
	const total = 30
	for i := range total {
		if !w.Log(sampleEvent(i)) {
			t.Fatal("Log refused")
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	parts := Files(src)
	if len(parts) < 5 {
		t.Fatalf("want at least 5 files to stage from, got %v", parts)
	}
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	mv := func(from, to string) {
		t.Helper()
		if err := os.Rename(from, to); err != nil {
			t.Fatal(err)
		}
	}
	mv(parts[0], file+".1")
	mv(parts[1], file+".2") // and no current file: the writer is mid-rotation

	followExpectingAll(t, file, func() int64 { return total }, func() {
		mv(parts[2], file)            // create
		mv(file, file+".3")           // and rotate at once
		for i, p := range parts[3:] { // then the rest, each rotated in turn
			if i > 0 {
				mv(file, fmt.Sprintf("%s.%d", file, 3+i))
			}
			mv(p, file)
		}
	})
}
