//go:build unix

package proxy

import "syscall"

// probeRead reads what is already waiting on the socket into b without
// waiting: 0 when nothing is waiting (EAGAIN), at end of stream, or on an
// error or deadline, which the ordinary read that follows then reports.
func probeRead(rc syscall.RawConn, b []byte) int {
	n := 0
	_ = rc.Read(func(fd uintptr) bool {
		for {
			m, err := syscall.Read(int(fd), b)
			if err != syscall.EINTR {
				n = max(m, 0)
				return true // never wait here
			}
		}
	})
	return n
}
