package audit

import (
	"context"
	"errors"
	"io"
	"os"
	"time"
)

// Follow calls fn for every record of file's chain that f selects, oldest
// first, then keeps polling the current file every poll interval for new
// records, following rotations, until ctx is done (which returns nil). The
// writer closes a file before renaming it, so a rotated file is complete
// once its successor appears.
func Follow(ctx context.Context, file string, f Filter, poll time.Duration, fn func(Event, []byte) error) error {
	s := newScanner(f, fn)
	var (
		cur    *os.File
		curSt  os.FileInfo
		off    int64
		lineNo int
	)
	defer func() {
		if cur != nil {
			cur.Close()
		}
	}()
	// The current file is opened before the rotated ones are listed and
	// read: a rotation meanwhile then leaves it readable through cur (and
	// the loop below follows it), where opening it afterwards would skip
	// the file rotated away in between.
	if fh, err := os.Open(file); err == nil {
		cur = fh
		if curSt, err = fh.Stat(); err != nil {
			return err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, p := range rotatedFiles(file) {
		if cur != nil {
			if pst, err := os.Stat(p); err == nil && os.SameFile(pst, curSt) {
				break // cur was rotated already; the loop reads it and what followed
			}
		}
		if err := s.readFile(p); err != nil {
			return err
		}
	}
	// drain reads cur from off to its current end.
	drain := func() error {
		n, last, err := s.read(io.NewSectionReader(cur, off, 1<<62), cur.Name(), lineNo)
		off += n
		lineNo = last
		return err
	}
	for {
		if cur == nil {
			fh, err := os.Open(file)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			if err == nil {
				cur, off, lineNo = fh, 0, 0
				if curSt, err = fh.Stat(); err != nil {
					return err
				}
			}
		}
		if cur != nil {
			if err := drain(); err != nil {
				return err
			}
			// Rotated once the current name is another file. While the name
			// is missing (between the writer's rename and create) wait: the
			// successor must be open before the rotated files are listed, or
			// a rotation in between would be skipped, as at the start.
			next, err := os.Open(file)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			var nextSt os.FileInfo
			if next != nil {
				if nextSt, err = next.Stat(); err != nil {
					next.Close()
					return err
				}
				if os.SameFile(nextSt, curSt) {
					next.Close()
					next = nil
				}
			}
			if next != nil {
				// Finish the old file, then any files rotated after it, up to
				// the successor (itself perhaps rotated already: the loop
				// goes on from it).
				if err := drain(); err != nil {
					next.Close()
					return err
				}
				seen := false
				for _, p := range rotatedFiles(file) {
					pst, err := os.Stat(p)
					if err != nil {
						continue
					}
					if os.SameFile(pst, nextSt) {
						break
					}
					if seen {
						if err := s.readFile(p); err != nil {
							next.Close()
							return err
						}
					} else if os.SameFile(pst, curSt) {
						seen = true
					}
				}
				cur.Close()
				cur, curSt, off, lineNo = next, nextSt, 0, 0
				continue
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		}
	}
}

// rotatedFiles is Files without the current file. Files lists the current
// file only while it exists, and the writer renames it before creating the
// next one: dropping the last entry instead would, in that gap, drop the
// file just rotated.
func rotatedFiles(file string) []string {
	files := Files(file)
	if n := len(files); n > 0 && files[n-1] == file {
		files = files[:n-1]
	}
	return files
}
