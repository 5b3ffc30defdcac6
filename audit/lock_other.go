//go:build !unix

package audit

import "os"

// lockFile is a no-op where flock is unavailable.
func lockFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}
