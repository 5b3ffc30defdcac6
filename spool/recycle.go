package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Spent instance files (delivered or purged) are not deleted: each is
// renamed into its backend's free/, truncated, and the next instance is
// written into it. A steady flow then allocates and frees no inodes, which
// on ext4 without a journal is most of an instance's cost: every new inode
// is searched for past each inode freed in the last 5 to 35 seconds (the
// kernel will not reuse those yet), and a busy queue frees one per
// instance delivered.
const (
	dirFree = "free"
	// maxFree bounds a backend's pool; past it spent files are deleted.
	// A pooled file holds no data, only its inode.
	maxFree = 8192
)

// loadFree fills d's pool from free/, as a previous run left it. A name
// there that also names a queued, failed or expired instance (a crash in
// the middle of a rename, on a file system that does not journal its
// directories) is never reused: writing into it would overwrite that
// instance. Every pooled file is truncated, so no data a previous run left
// stays at rest in free/.
func (d *backendDir) loadFree() error {
	dir := filepath.Join(d.root, dirFree)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if len(ents) == 0 {
		return nil
	}
	held := map[uint64]bool{}
	for _, sub := range []string{dirQueue, dirFailed, dirExpired} {
		es, _ := os.ReadDir(filepath.Join(d.root, sub))
		for _, e := range es {
			if ino, ok := inode(e); ok {
				held[ino] = true
			}
		}
	}
	for _, e := range ents {
		path := filepath.Join(dir, e.Name())
		ino, ok := inode(e)
		switch {
		case !ok || !e.Type().IsRegular():
			continue
		case held[ino]:
			if linkCount(path) > 1 {
				// The file system counts both names: dropping this one
				// leaves the instance whole.
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
		d.free = append(d.free, path)
	}
	return nil
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
// pool is empty.
func (d *backendDir) takeFree() *os.File {
	for {
		d.freeMu.Lock()
		n := len(d.free)
		if n == 0 {
			d.freeMu.Unlock()
			return nil
		}
		path := d.free[n-1]
		d.free = d.free[:n-1]
		d.freeMu.Unlock()
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, fileMode)
		if err != nil {
			continue
		}
		if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() || !singleLink(fi) {
			// Another name holds this inode: leave it to that name.
			f.Close()
			continue
		}
		return f
	}
}

// recycle retires a spent instance file at path (in queue/, failed/ or
// expired/): renamed into free/ and truncated, or deleted when the pool
// is full. Once it returns, path is gone.
func (s *Spool) recycle(d *backendDir, path string) error {
	if d == nil {
		return removeFile(path)
	}
	d.freeMu.Lock()
	full := len(d.free) >= maxFree
	d.freeMu.Unlock()
	if !full && recycling {
		name := filepath.Join(d.root, dirFree, fmt.Sprintf("%s-%012d", s.start, s.seq.Add(1)))
		if err := os.Rename(path, name); err == nil {
			if os.Truncate(name, 0) == nil {
				d.freeMu.Lock()
				d.free = append(d.free, name)
				d.freeMu.Unlock()
			} else {
				_ = os.Remove(name)
			}
			return nil
		}
	}
	return removeFile(path)
}

func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
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
