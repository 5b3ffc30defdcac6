package spool

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// openUnnamed opens a file in dir that has no name yet (O_TMPFILE): it
// vanishes with the process unless linkUnnamed names it. Creating it
// touches no directory, so concurrent writers do not queue on the lock of
// a shared tmp/ directory, and its fsync has no parent entry to sync (on
// ext4 without a journal, fsync of a newly named file also syncs the
// directory that names it).
func openUnnamed(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, fileMode)
	if err != nil {
		return nil, &os.PathError{Op: "open O_TMPFILE", Path: dir, Err: err}
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// linkUnnamed gives f, opened by openUnnamed, the name path: like a
// rename into place, the name appears whole or not at all.
func linkUnnamed(f *os.File, path string) error {
	fd := int(f.Fd())
	err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW)
	if err != nil {
		// Without /proc, AT_EMPTY_PATH names the descriptor itself (it
		// needs CAP_DAC_READ_SEARCH before Linux 6.10).
		if err2 := unix.Linkat(fd, "", unix.AT_FDCWD, path, unix.AT_EMPTY_PATH); err2 == nil {
			return nil
		}
		return &os.LinkError{Op: "link", Old: f.Name(), New: path, Err: err}
	}
	return nil
}
