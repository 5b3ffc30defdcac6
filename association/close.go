package association

import (
	"io"
	"net"
	"time"
)

// maxLingerDrain bounds what CloseWithAbort reads and discards.
const maxLingerDrain = 1 << 20

// CloseWithAbort sends a (if not nil) and closes c so that the peer actually
// receives it: closing a socket with unread input makes TCP send RST, which
// can destroy the A-ABORT in flight. It half-closes the write side (TCP FIN,
// or TLS close_notify), discards at most 1 MiB of input for up to linger,
// then closes. PS3.8 9.2 has the acceptor wait for the peer's close (ARTIM)
// after an A-ABORT in the same way.
func CloseWithAbort(c net.Conn, a *Abort, linger time.Duration) error {
	var err error
	if a != nil {
		err = WritePDU(c, a)
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok && linger > 0 {
		_ = cw.CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(linger))
		_, _ = io.Copy(io.Discard, io.LimitReader(c, maxLingerDrain))
	}
	if cerr := c.Close(); err == nil {
		err = cerr
	}
	return err
}
