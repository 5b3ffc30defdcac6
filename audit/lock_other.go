//go:build !unix

package audit

import "os"

// lockFile is a no-op where flock is unavailable.
func lockFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}

// syncDirectory does nothing here: directories cannot be opened for an
// fsync on every platform (Windows).
func syncDirectory(string) error { return nil }
