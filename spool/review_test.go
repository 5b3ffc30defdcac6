package spool

import (
	"bytes"
	"io"
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
	d.free = append(d.free, spent{path: second})
	d.freeMu.Unlock()
	store(t, s, "pacs", 2, []byte("the next instance"))
	after, err := os.ReadFile(list[0].Path)
	if err != nil || !bytes.Equal(before, after) {
		t.Errorf("the queued instance changed (%d bytes, was %d): %v", len(after), len(before), err)
	}
}

// A spent file's inode is reused only once its old name is gone for good:
// after an fsync of queue/ that began after it left. Else a crash (on a
// file system that does not journal its directories) can leave the old,
// delivered name pointing at a new instance never acknowledged, or half
// written, which the forwarder would send.
func TestSpentFileWaitsForTheQueueFsyncBeforeReuse(t *testing.T) {
	if !recycling {
		t.Skip("spent files are deleted on this system")
	}
	s, _ := openTest(t, Config{})
	store(t, s, "pacs", 1, []byte("delivered"))
	list, _ := s.List("pacs", Queued)
	if err := s.remove(&list[0]); err != nil {
		t.Fatal(err)
	}
	d := s.dirs["pacs"]
	if n := len(d.free); n != 1 {
		t.Fatalf("pool holds %d, want 1", n)
	}
	if f := d.takeFree(); f != nil {
		f.Close()
		t.Fatal("a spent file was handed out before queue/ was fsync'd after it left")
	}
	if err := d.sync.sync(); err != nil {
		t.Fatal(err)
	}
	f := d.takeFree()
	if f == nil {
		t.Fatal("the spent file is not reused after queue/ was fsync'd")
	}
	f.Close()
}

// A file the forwarder is reading is deleted, not reused, when it is
// purged meanwhile: the forwarder's open descriptor keeps the bytes it
// sends, which a writer reusing the file would overwrite.
func TestPurgeDuringSendDoesNotReuseTheFile(t *testing.T) {
	if !recycling {
		t.Skip("spent files are deleted on this system")
	}
	s, _ := openTest(t, Config{})
	data := bytes.Repeat([]byte("instance being sent "), 100)
	store(t, s, "pacs", 1, data)
	list, _ := s.List("pacs", Queued)
	batch := []*Entry{&list[0]}
	s.markSending("pacs", batch, true)
	f, err := os.Open(list[0].Path) // as the Sender does
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n, err := s.Purge("pacs", 0); err != nil || n != 1 {
		t.Fatalf("purged %d, %v", n, err)
	}
	store(t, s, "pacs", 2, []byte("the next instance"))
	store(t, s, "pacs", 3, []byte("and one more"))
	s.markSending("pacs", batch, false)
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(got, data) {
		t.Errorf("the forwarder read %d bytes ending %q: not the instance it was sending", len(got), got[max(0, len(got)-40):])
	}
	if n := len(s.dirs["pacs"].free); n != 0 {
		t.Errorf("the pool took %d files, one of them being sent", n)
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
