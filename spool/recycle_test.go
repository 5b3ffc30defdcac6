package spool

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// Every way a writer gets its file (a pooled spent file, an unnamed file,
// a named one in tmp/) queues the same bytes with the same modes, and an
// instance never committed is gone after a restart.
func TestWriteSourcesQueueTheSameAndLeaveNothingUncommitted(t *testing.T) {
	for _, source := range []string{"pool", "unnamed", "tmp"} {
		t.Run(source, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "spool")
			s, _ := openTest(t, Config{Dir: dir})
			switch source {
			case "pool":
				// Spent files longer than what comes next: nothing of
				// them may show through.
				for i := range 4 {
					store(t, s, "pacs", 100+i, bytes.Repeat([]byte("STALE-PHI-"), 500))
				}
				if n, err := s.Purge("pacs", 0); err != nil || n != 4 {
					t.Fatalf("purged %d, %v", n, err)
				}
				if got := len(s.dirs["pacs"].free); got != 4 {
					t.Fatalf("pool holds %d after purging 4", got)
				}
			case "unnamed":
				if !s.unnamed {
					t.Skip("this file system makes no unnamed files")
				}
			case "tmp":
				s.unnamed = false
			}
			d, err := s.dir("pacs")
			if err != nil {
				t.Fatal(err)
			}
			pooled := map[uint64]bool{}
			for _, p := range d.free {
				if fi, err := os.Stat(p.path); err == nil {
					ino, _, _ := fileID(fi)
					pooled[ino] = true
				}
			}
			for i := range 3 {
				store(t, s, "pacs", i, bytes.Repeat([]byte{byte('a' + i)}, 100+i))
			}
			list, _ := s.List("pacs", Queued)
			if len(list) != 3 {
				t.Fatalf("queued %d, want 3", len(list))
			}
			for i, e := range list {
				b, err := os.ReadFile(e.Path)
				if err != nil {
					t.Fatal(err)
				}
				f, _ := os.Open(e.Path)
				fm, err := ReadFileMeta(f)
				f.Close()
				if err != nil {
					t.Fatal(err)
				}
				if want := bytes.Repeat([]byte{byte('a' + i)}, 100+i); !bytes.Equal(b[fm.DataOffset:], want) {
					t.Errorf("entry %d: data set %q, want %q", i, b[fm.DataOffset:], want)
				}
				fi, _ := os.Stat(e.Path)
				if fi.Mode().Perm() != 0o600 {
					t.Errorf("entry %d: mode %v", i, fi.Mode().Perm())
				}
				if ino, _, ok := fileID(fi); ok && source == "pool" && !pooled[ino] {
					t.Errorf("entry %d: a new inode while the pool held spent files", i)
				}
			}
			// An instance written but never committed.
			w, err := s.Create("pacs", meta(9))
			if err != nil {
				t.Fatal(err)
			}
			w.Write([]byte("never acknowledged"))
			w.bw.Flush()
			s.Close()
			s2, _ := openTest(t, Config{Dir: dir})
			if list, _ := s2.List("pacs", Queued); len(list) != 3 {
				t.Errorf("after a restart %d queued, want the 3 committed", len(list))
			}
			for _, sub := range []string{dirTmp, dirFree} {
				ents, _ := os.ReadDir(filepath.Join(dir, "pacs", sub))
				for _, e := range ents {
					if fi, _ := e.Info(); sub == dirTmp || fi.Size() != 0 {
						t.Errorf("left with data after a restart: %s/%s (%d bytes)", sub, e.Name(), fi.Size())
					}
				}
			}
		})
	}
}

// A crash in the middle of a rename can leave one file under two names,
// one in free/ and one in the queue: the pool must not take it, and the
// queued instance stays whole.
func TestPoolNeverReusesAQueuedFile(t *testing.T) {
	if !recycling {
		t.Skip("spent files are deleted on this system")
	}
	dir := filepath.Join(t.TempDir(), "spool")
	s, _ := openTest(t, Config{Dir: dir})
	store(t, s, "pacs", 1, []byte("the queued instance"))
	list, _ := s.List("pacs", Queued)
	before, _ := os.ReadFile(list[0].Path)
	if err := os.Link(list[0].Path, filepath.Join(dir, "pacs", dirFree, "left-by-a-crash")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, _ := openTest(t, Config{Dir: dir})
	if n := len(s2.dirs["pacs"].free); n != 0 {
		t.Fatalf("the pool took %d files, one of them queued", n)
	}
	if _, err := os.Stat(filepath.Join(dir, "pacs", dirFree, "left-by-a-crash")); !os.IsNotExist(err) {
		t.Errorf("the second name of a queued file stays in free/: %v", err)
	}
	store(t, s2, "pacs", 2, []byte("the next instance"))
	after, err := os.ReadFile(list[0].Path)
	if err != nil || !bytes.Equal(before, after) {
		t.Errorf("the queued instance changed: %v", err)
	}
}

// An unnamed file linked as pending and never committed (a crash between
// its fsync and its rename) is never listed and is gone after a restart.
func TestPendingFilesAreNeverListedAndGoAtStart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s, _ := openTest(t, Config{Dir: dir})
	store(t, s, "pacs", 1, []byte("committed"))
	pending := filepath.Join(dir, "pacs", dirQueue, pendingPrefix+"00000000000000000002-x-000000000002")
	if err := os.WriteFile(pending, []byte("never acknowledged"), 0o600); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.List("pacs", Queued); len(list) != 1 {
		t.Errorf("listed %d, want the committed one only", len(list))
	}
	if n, _, _ := s.Counts("pacs"); n != 1 {
		t.Errorf("counted %d, want 1", n)
	}
	s.Close()
	openTest(t, Config{Dir: dir})
	if _, err := os.Stat(pending); !os.IsNotExist(err) {
		t.Errorf("a pending file survives a restart: %v", err)
	}
}

// A spent file keeps its blocks until queue/ has been fsync'd after it
// left: freed earlier, another file could take them while, after a crash
// on a file system that does not journal its directories, the old name
// still shows them. Then it is emptied.
func TestSpentFileIsEmptiedOnlyAfterTheQueueFsync(t *testing.T) {
	if !recycling {
		t.Skip("spent files are deleted on this system")
	}
	s, _ := openTest(t, Config{})
	store(t, s, "pacs", 1, bytes.Repeat([]byte("delivered "), 100))
	list, _ := s.List("pacs", Queued)
	syncs := s.dirs["pacs"].sync.started.Load()
	if err := s.remove(&list[0]); err != nil {
		t.Fatal(err)
	}
	spentPath := s.dirs["pacs"].free[0].path
	if fi, _ := os.Stat(spentPath); fi.Size() == 0 {
		t.Fatal("a spent file was emptied before queue/ was fsync'd after it left")
	}
	if err := s.settle("pacs"); err != nil {
		t.Fatal(err)
	}
	if s.dirs["pacs"].sync.started.Load() == syncs {
		t.Error("settle emptied files without an fsync of queue/")
	}
	if fi, _ := os.Stat(spentPath); fi.Size() != 0 {
		t.Errorf("a settled spent file keeps %d bytes", fi.Size())
	}
}
