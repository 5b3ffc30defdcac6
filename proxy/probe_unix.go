//go:build unix

package proxy

import "syscall"

// prober reads what is already waiting on a socket without waiting. Its
// callback is made once, so a probe (one per wait, many per second on a
// busy association) allocates nothing.
type prober struct {
	rc syscall.RawConn
	fn func(fd uintptr) bool
	b  []byte
	n  int
}

func newProber(rc syscall.RawConn) *prober {
	p := &prober{rc: rc}
	p.fn = p.read
	return p
}

func (p *prober) read(fd uintptr) bool {
	for {
		m, err := syscall.Read(int(fd), p.b)
		if err != syscall.EINTR {
			p.n = max(m, 0)
			return true // never wait here
		}
	}
}

// probe reads into b: 0 when nothing is waiting (EAGAIN), at end of
// stream, or on an error or deadline, which the ordinary read that follows
// then reports.
func (p *prober) probe(b []byte) int {
	p.b, p.n = b, 0
	_ = p.rc.Read(p.fn)
	p.b = nil
	return p.n
}
