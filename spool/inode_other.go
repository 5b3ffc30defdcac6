//go:build !unix

package spool

import "os"

// fileID is unknown here: spent files are deleted, not reused, since a
// pooled file could not be told apart from a queued one after a crash.
func fileID(os.FileInfo) (ino, nlink uint64, ok bool) { return 0, 0, false }

// recycling is off here: spent files are deleted.
const recycling = false
