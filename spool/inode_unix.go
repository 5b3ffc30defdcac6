//go:build unix

package spool

import (
	"os"
	"syscall"
)

// fileID is fi's inode number and link count.
func fileID(fi os.FileInfo) (ino, nlink uint64, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return uint64(st.Ino), uint64(st.Nlink), true
}

// recycling: spent files are pooled for reuse (recycle.go).
const recycling = true
