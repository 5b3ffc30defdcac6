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
//
// Each time Follow takes a new current file it first reads the rotated files
// between the last file it finished and that one. The new file is opened
// before the rotated files are listed, so a rotation meanwhile shows up in
// the listing (and stops it at the file Follow holds open); without that
// order a file rotated away during the catch-up, or while the name was
// missing between the writer's rename and create, would be skipped.
func Follow(ctx context.Context, file string, f Filter, poll time.Duration, fn func(Event, []byte) error) error {
	return follow(ctx, file, f, poll, nil, fn)
}

// FollowAt is Follow that also says where each record's line is, so that a
// reader can index the log and read a record again later (the console).
func FollowAt(ctx context.Context, file string, f Filter, poll time.Duration, fn func(Event, []byte, Position) error) error {
	return followScanner(ctx, file, poll, nil, &scanner{f: f, at: fn, tr: tracker{}})
}

// follow is Follow; skip, when set, is asked about each rotated file before
// it is read, and a file it skips counts as read (the forwarder passes the
// files that end before its cursor instead of decoding them again).
func follow(ctx context.Context, file string, f Filter, poll time.Duration, skip func(path string) bool, fn func(Event, []byte) error) error {
	return followScanner(ctx, file, poll, skip, newScanner(f, fn))
}

func followScanner(ctx context.Context, file string, poll time.Duration, skip func(path string) bool, s *scanner) error {
	var (
		cur    *os.File
		curSt  os.FileInfo
		last   os.FileInfo // the last file read to its end; nil before the first
		off    int64
		lineNo int
	)
	defer func() {
		if cur != nil {
			cur.Close()
		}
	}()
	// catchUp reads the rotated files after last and before upTo (a file
	// just opened as the next current one, or nil when none exists yet).
	catchUp := func(upTo os.FileInfo) error {
		reading := last == nil
		for _, p := range rotatedFiles(file) {
			pst, err := os.Stat(p)
			if err != nil {
				continue // removed by retention meanwhile
			}
			if upTo != nil && os.SameFile(pst, upTo) {
				break
			}
			if reading {
				if skip == nil || !skip(p) {
					if err := s.readFile(p); err != nil {
						return err
					}
				}
				last = pst
			} else if os.SameFile(pst, last) {
				reading = true
			}
		}
		return nil
	}
	// drain reads cur from off to its current end.
	drain := func() error {
		s.base = off
		n, ln, err := s.read(io.NewSectionReader(cur, off, 1<<62), cur.Name(), lineNo)
		s.base = 0
		off += n
		lineNo = ln
		return err
	}
	// next takes the file now under the name as the current one when it is
	// not cur: cur was rotated, and the writer closed it first, so one more
	// drain reads it to its end; then the files rotated since, up to the new
	// one. It returns whether there was a new file.
	next := func() (bool, error) {
		fh, err := os.Open(file)
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		st, err := fh.Stat()
		if err == nil && curSt != nil && os.SameFile(st, curSt) {
			fh.Close()
			return false, nil
		}
		if err == nil && cur != nil {
			if err = drain(); err == nil {
				last = curSt
			}
		}
		if err == nil {
			err = catchUp(st)
		}
		if err != nil {
			fh.Close()
			return false, err
		}
		if cur != nil {
			cur.Close()
		}
		cur, curSt, off, lineNo = fh, st, 0, 0
		return true, nil
	}
	opened, err := next()
	if err != nil {
		return err
	}
	if !opened {
		// No current file yet: read what was rotated, and take the current
		// file (after whatever was rotated meanwhile) once it appears.
		if err := catchUp(nil); err != nil {
			return err
		}
	}
	for {
		if cur != nil {
			if err := drain(); err != nil {
				return err
			}
		}
		switched, err := next()
		if err != nil {
			return err
		}
		if switched {
			continue
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
