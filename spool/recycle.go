package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Spent instance files (delivered, or purged from the queue) are not
// deleted: each is renamed from queue/ into its backend's free/, emptied
// (settle), and a later instance is written into it. A steady flow then
// allocates and frees no inodes, which on ext4 without a journal is most
// of an instance's cost: every new inode is searched for past each inode
// freed in the last 5 to 35 seconds (the kernel will not reuse those
// yet), and a busy queue frees one per instance delivered.
//
// Two rules keep a reused file from ever showing through an old name:
//   - A spent file is emptied and handed out only after a successful fsync
//     of queue/ that began after it left (the group commit's, which every
//     new instance, the forwarder after each batch and a purge run): on a
//     file system that does not journal its directories, a crash before
//     that could keep the old name on disk, pointing at blocks or an inode
//     another instance now holds.
//   - A file the forwarder is reading is deleted, not reused, when it is
//     purged meanwhile: its open descriptor keeps the bytes it sends.

// spent is a pooled file and the number of the queue/ fsync that must
// have completed before it is reused (0: none).
type spent struct {
	path string
	need uint64
	// full: not truncated yet. Its blocks are freed only once its old
	// name is gone for good (settle): freed earlier, another file could
	// take them while the old name, after a crash, still shows them.
	full bool
}

const (
	dirFree = "free"
	// maxFree bounds a backend's pool; past it spent files are deleted.
	// A settled pooled file holds no data, only its inode.
	maxFree = 8192
)

// loadFree fills d's pool from ents, free/ as a previous run left it. A
// name there whose inode is held (also names a queued, failed or expired
// instance: a crash in the middle of a rename, on a file system that does
// not journal its directories) is never reused: writing into it would
// overwrite that instance. Every pooled file is truncated, so no data a
// previous run left stays at rest in free/.
func (d *backendDir) loadFree(ents []fs.DirEntry, held map[uint64]bool) {
	dir := filepath.Join(d.root, dirFree)
	// pooled: an inode is pooled under one name only. Two names in free/
	// for one inode (a crash in the middle of renames, on a file system
	// that does not journal its directories and counts one link for both)
	// pooled twice would have the second take truncate the instance
	// written into the first.
	pooled := map[uint64]bool{}
	for _, e := range ents {
		path := filepath.Join(dir, e.Name())
		ino, ok := inode(e)
		switch {
		case !ok || !e.Type().IsRegular():
			continue
		case held[ino] || pooled[ino]:
			if linkCount(path) > 1 {
				// The file system counts both names: dropping this one
				// leaves the other whole. Else removing it would free an
				// inode still named, so it stays, never reused.
				_ = os.Remove(path)
			}
			continue
		case len(d.free) >= maxFree:
			_ = os.Remove(path)
			continue
		}
		if err := os.Truncate(path, 0); err != nil {
			continue
		}
		pooled[ino] = true
		d.free = append(d.free, spent{path: path})
	}
}

func inode(e fs.DirEntry) (uint64, bool) {
	fi, err := e.Info()
	if err != nil {
		return 0, false
	}
	ino, _, ok := fileID(fi)
	return ino, ok
}

// singleLink reports whether fi has exactly one name.
func singleLink(fi os.FileInfo) bool {
	_, n, ok := fileID(fi)
	return ok && n == 1
}

func linkCount(path string) uint64 {
	fi, err := os.Lstat(path)
	if err != nil {
		return 0
	}
	_, n, _ := fileID(fi)
	return n
}

// takeFree opens a pooled file for a new instance, or returns nil when the
// pool has none that may be reused yet.
func (d *backendDir) takeFree() *os.File {
	for {
		d.freeMu.Lock()
		if len(d.free) == 0 {
			d.freeMu.Unlock()
			return nil
		}
		// done first: a failed fsync numbered at most done stored failed
		// before done was stored.
		need, done := d.free[0].need, d.sync.done.Load()
		if need != 0 && need <= d.sync.failed.Load() {
			// An fsync of queue/ after it left failed: its old name may
			// never reach the disk gone. It stays in free/, empty, not
			// reused by this run.
			d.free = d.free[1:]
			d.freeMu.Unlock()
			continue
		}
		if need > done {
			d.freeMu.Unlock()
			return nil
		}
		path := d.free[0].path
		d.free = d.free[1:]
		d.freeMu.Unlock()
		// Not O_TRUNC: the link count is checked before anything of the
		// file is touched.
		f, err := os.OpenFile(path, os.O_WRONLY, fileMode)
		if err != nil {
			continue
		}
		if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() || !singleLink(fi) {
			// Another name holds this inode: leave it to that name.
			f.Close()
			continue
		}
		if err := f.Truncate(0); err != nil {
			f.Close()
			_ = os.Remove(path)
			continue
		}
		return f
	}
}

// recycle retires a spent instance file at path: from queue/, renamed
// into free/ and pooled (truncated by settle, reused, after the next fsync
// of queue/); deleted when it comes from failed/ or expired/, when the
// forwarder is reading it, or when the pool is full. Once it returns,
// path is gone; gone reports whether this call took it (false: it was
// gone already, delivered and purged at once).
func (s *Spool) recycle(d *backendDir, path string) (gone bool, err error) {
	if d == nil || !recycling || filepath.Dir(path) != filepath.Join(d.root, dirQueue) {
		return removeFile(path)
	}
	name := filepath.Join(d.root, dirFree, fmt.Sprintf("%s-%012d", s.start, s.seq.Add(1)))
	d.freeMu.Lock()
	if len(d.free) >= maxFree || d.sending[path] {
		d.freeMu.Unlock()
		return removeFile(path)
	}
	// Renamed under the lock the forwarder marks its files under: once it
	// has marked path it is deleted above; once renamed, the forwarder
	// finds no file to open.
	err = os.Rename(path, name)
	d.freeMu.Unlock()
	if err != nil {
		return removeFile(path)
	}
	// Read after the rename: an fsync numbered above it began after it.
	need := d.sync.started.Load() + 1
	d.freeMu.Lock()
	d.free = append(d.free, spent{path: name, need: need, full: true})
	d.freeMu.Unlock()
	return true, nil
}

// settle makes the spent files of backend that left queue/ so far safe to
// empty: an fsync of queue/ (the group commit's, shared with the writers
// meanwhile), then each of them is truncated, so no delivered instance
// stays at rest in free/. The forwarder runs it after each batch it
// delivered, a purge after it purged.
func (s *Spool) settle(backend string) error {
	d := s.openDir(backend)
	if d == nil {
		return nil
	}
	d.freeMu.Lock()
	full := false
	for _, e := range d.free {
		full = full || e.full
	}
	d.freeMu.Unlock()
	if !full {
		return nil
	}
	if err := d.sync.sync(); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	done, failed := d.sync.done.Load(), d.sync.failed.Load()
	// Under the lock: a file in the pool is not being written, and none is
	// taken while it is emptied.
	d.freeMu.Lock()
	defer d.freeMu.Unlock()
	for i := range d.free {
		if e := &d.free[i]; e.full && e.need <= done && e.need > failed {
			e.full = false
			_ = os.Truncate(e.path, 0)
		}
	}
	return nil
}

// markSending marks the files of batch as being read by the forwarder (on)
// or no more (off): a purge meanwhile deletes them instead of reusing
// them.
func (s *Spool) markSending(backend string, batch []*Entry, on bool) {
	d := s.openDir(backend)
	if d == nil {
		return
	}
	d.freeMu.Lock()
	defer d.freeMu.Unlock()
	if d.sending == nil {
		d.sending = map[string]bool{}
	}
	for _, e := range batch {
		if on {
			d.sending[e.Path] = true
		} else {
			delete(d.sending, e.Path)
		}
	}
}

// openDir is backend's open directory, nil when it is not open.
func (s *Spool) openDir(backend string) *backendDir {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dirs[backend]
}

func removeFile(path string) (gone bool, err error) {
	if err := os.Remove(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("spool: %w", err)
	}
	return true, nil
}

// openDirOf is the open backend directory a queued, failed or expired
// file is in; nil when that backend is not open (a closed spool, or one
// the command line inspects), whose spent files are deleted.
func (s *Spool) openDirOf(path string) *backendDir {
	name, ok := unescapeName(filepath.Base(filepath.Dir(filepath.Dir(path))))
	if !ok {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.dirs[name]; d != nil && filepath.Dir(filepath.Dir(path)) == d.root {
		return d
	}
	return nil
}
