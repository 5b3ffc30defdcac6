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
	files := Files(file)
	for _, p := range files[:len(files)-1] {
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
			st, err := os.Stat(file)
			if err == nil && !os.SameFile(st, curSt) || errors.Is(err, os.ErrNotExist) {
				// Rotated: finish the old file, then any files rotated after it.
				if err := drain(); err != nil {
					return err
				}
				files := Files(file)
				seen := false
				for _, p := range files[:len(files)-1] {
					pst, err := os.Stat(p)
					if err != nil {
						continue
					}
					if seen {
						if err := s.readFile(p); err != nil {
							return err
						}
					} else if os.SameFile(pst, curSt) {
						seen = true
					}
				}
				cur.Close()
				cur = nil
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
