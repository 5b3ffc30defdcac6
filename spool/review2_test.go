package spool

import (
	"bytes"
	"errors"
	"os"
	"sync"
	"testing"
)

// failDirSync makes the queue directory fsyncs fail while fail returns
// true; before runs first, in the fsync's place.
func failDirSync(t *testing.T, before func(), fail func() bool) {
	t.Helper()
	orig := syncDirFile
	t.Cleanup(func() { syncDirFile = orig })
	syncDirFile = func(f *os.File) error {
		if before != nil {
			before()
		}
		if fail() {
			return errors.New("injected: input/output error")
		}
		return orig(f)
	}
}

// A spent file whose leaving queue/ was covered by a failed fsync is
// never reused, even once a later fsync succeeds: after a write error
// the kernel drops the dirty directory block rather than retry it, so a
// later fsync proves nothing about the earlier change, and a crash could
// keep the old name pointing at the next instance written into the inode.
func TestSpentFileIsNotReusedAfterAFailedQueueFsync(t *testing.T) {
	if !recycling {
		t.Skip("spent files are deleted on this system")
	}
	s, _ := openTest(t, Config{})
	var failing bool
	failDirSync(t, nil, func() bool { return failing })
	store(t, s, "pacs", 1, []byte("delivered"))
	list, _ := s.List("pacs", Queued)
	if err := s.remove(&list[0]); err != nil {
		t.Fatal(err)
	}
	d := s.dirs["pacs"]
	failing = true
	w, err := s.Create("pacs", meta(2))
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("refused"))
	if err := w.Commit(); err == nil {
		t.Fatal("the commit succeeded with a failing fsync")
	}
	failing = false
	store(t, s, "pacs", 3, []byte("a later commit whose fsync succeeds"))
	if f := d.takeFree(); f != nil {
		f.Close()
		t.Fatal("a spent file was reused though the queue fsync after it left failed")
	}
}

// A commit whose directory fsync fails frees the instance's bytes only
// when it removes the file itself: the forwarder may have delivered and
// removed it meanwhile (it is in queue/ from the rename on), freeing them
// already. Freed twice, Used() falls below what the queues hold and
// max_size no longer bounds them.
func TestFailedCommitDoesNotFreeBytesTwice(t *testing.T) {
	s, _ := openTest(t, Config{MaxSize: 1 << 20})
	var once sync.Once
	delivered := false
	failDirSync(t, func() {
		once.Do(func() {
			// The forwarder, between the rename and the fsync's end.
			list, _ := s.List("pacs", Queued)
			if len(list) == 1 && s.remove(&list[0]) == nil {
				delivered = true
			}
		})
	}, func() bool { return true })
	w, err := s.Create("pacs", meta(1))
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bytes.Repeat([]byte("x"), 1000))
	if err := w.Commit(); err == nil {
		t.Fatal("the commit succeeded with a failing fsync")
	}
	if !delivered {
		t.Fatal("the instance was not removed during the fsync")
	}
	if got := s.Used(); got != 0 {
		t.Errorf("Used() = %d after the only instance went, want 0", got)
	}
}
