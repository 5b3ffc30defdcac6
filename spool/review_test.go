package spool

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// A pooled name whose inode another name also holds is refused before it
// is truncated: the check comes too late if the open itself truncates.
func TestTakeFreeLeavesAFileWithAnotherNameWhole(t *testing.T) {
	if !recycling {
		t.Skip("spent files are deleted on this system")
	}
	s, _ := openTest(t, Config{})
	store(t, s, "pacs", 1, []byte("the queued instance"))
	list, _ := s.List("pacs", Queued)
	before, _ := os.ReadFile(list[0].Path)
	d, _ := s.dir("pacs")
	second := filepath.Join(d.root, dirFree, "second-name")
	if err := os.Link(list[0].Path, second); err != nil {
		t.Fatal(err)
	}
	d.freeMu.Lock()
	d.free = append(d.free, second)
	d.freeMu.Unlock()
	store(t, s, "pacs", 2, []byte("the next instance"))
	after, err := os.ReadFile(list[0].Path)
	if err != nil || !bytes.Equal(before, after) {
		t.Errorf("the queued instance changed (%d bytes, was %d): %v", len(after), len(before), err)
	}
}

// A spent file's inode is reused only once its old name is gone for good:
// the directory it left is fsync'd before the pool hands it out, else a
// crash (on a file system that does not journal its directories) can
// leave the old, delivered name pointing at a new instance never
// acknowledged, or half written, which the forwarder would send.
func TestRecycleSyncsTheDirectoryLeftBeforePooling(t *testing.T) {
	if !recycling {
		t.Skip("spent files are deleted on this system")
	}
	s, _ := openTest(t, Config{})
	store(t, s, "pacs", 1, []byte("delivered"))
	list, _ := s.List("pacs", Queued)
	_, before := s.SyncCounts()
	if err := s.remove(&list[0]); err != nil {
		t.Fatal(err)
	}
	if _, after := s.SyncCounts(); after == before {
		t.Errorf("queue/ not fsync'd after a spent file left it for the pool")
	}
	if n := len(s.dirs["pacs"].free); n != 1 {
		t.Errorf("pool holds %d, want 1", n)
	}
}

// An instance removed twice (the forwarder's delivery and a purge, or an
// expiry, at the same time) is subtracted from the queued bytes once.
func TestRemovingAGoneEntryFreesNoBytes(t *testing.T) {
	s, _ := openTest(t, Config{})
	store(t, s, "pacs", 1, bytes.Repeat([]byte("x"), 1000))
	store(t, s, "pacs", 2, bytes.Repeat([]byte("y"), 1000))
	list, _ := s.List("pacs", Queued)
	used := s.Used()
	for range 2 {
		e := list[0]
		if err := s.remove(&e); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := s.Used(), used-list[0].Meta.Size; got != want {
		t.Errorf("Used() = %d after removing one entry twice, want %d", got, want)
	}
}

// Two names in free/ for one inode (a crash in the middle of renames, on
// a file system that does not journal its directories and then counts one
// link for both) are pooled once: pooled twice, the second take would
// truncate the instance written into the first.
func TestLoadFreePoolsEachInodeOnce(t *testing.T) {
	if !recycling {
		t.Skip("spent files are deleted on this system")
	}
	dir := filepath.Join(t.TempDir(), "spool")
	s, _ := openTest(t, Config{Dir: dir})
	store(t, s, "pacs", 1, []byte("spent"))
	if _, err := s.Purge("pacs", 0); err != nil {
		t.Fatal(err)
	}
	free, _ := os.ReadDir(filepath.Join(dir, "pacs", dirFree))
	if len(free) != 1 {
		t.Fatalf("free/ holds %d", len(free))
	}
	if err := os.Link(filepath.Join(dir, "pacs", dirFree, free[0].Name()), filepath.Join(dir, "pacs", dirFree, "zz-second-name")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, _ := openTest(t, Config{Dir: dir})
	if n := len(s2.dirs["pacs"].free); n > 1 {
		t.Errorf("the pool took %d names of one inode", n)
	}
}
