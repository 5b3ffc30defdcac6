package proxy

import (
	"net"
	"sync"
)

// gather collects the TLS records that one tls.Conn.Write makes of a
// queue of PDUs and hands them to the socket in one write. crypto/tls
// writes each record (at most 16 KiB of plaintext) with its own write
// call: a 256 KiB flush of the pduWriter's queue would be 17 system calls,
// each waking the receiver for one record. Gathered, it is one, as the
// same PDUs are on a plain connection.
//
// The tls.Conn's own lock keeps its records in order; gather's lock keeps
// a record that tls.Conn writes from its reading side (a TLS 1.3
// KeyUpdate answer) from racing with begin and end.
type gather struct {
	mu  sync.Mutex
	on  bool
	buf []byte
	box *[]byte // buf's box from gatherPool while it holds bytes
}

// gatherMax bounds what is held: a flush of the pduWriter's queue and its
// records' overhead (22 bytes a record under TLS 1.3). A longer write (one
// large PDU) goes out in pieces of about this size.
const gatherMax = queueMax + 8<<10

var gatherPool = sync.Pool{New: func() any { b := make([]byte, 0, gatherMax); return &b }}

// begin starts gathering the writes to the connection.
func (g *gather) begin() {
	g.mu.Lock()
	g.on = true
	g.mu.Unlock()
}

// end writes what was gathered to c in one call and stops gathering; the
// buffer goes back to the pool, so an idle association holds none.
func (g *gather) end(c net.Conn) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.on = false
	return g.flushLocked(c)
}

func (g *gather) flushLocked(c net.Conn) error {
	if g.box == nil {
		return nil
	}
	var err error
	if len(g.buf) > 0 {
		_, err = c.Write(g.buf)
	}
	*g.box = g.buf[:0]
	gatherPool.Put(g.box)
	g.box, g.buf = nil, nil
	return err
}

// write keeps b while gathering (ok); when not gathering it does nothing
// and ok is false.
func (g *gather) write(c net.Conn, b []byte) (n int, err error, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.on {
		return 0, nil, false
	}
	if len(g.buf)+len(b) > gatherMax {
		if err := g.flushLocked(c); err != nil {
			return 0, err, true
		}
		if len(b) > gatherMax {
			n, err := c.Write(b)
			return n, err, true
		}
	}
	if g.box == nil {
		g.box = gatherPool.Get().(*[]byte)
		g.buf = (*g.box)[:0]
	}
	g.buf = append(g.buf, b...)
	return len(b), nil, true
}
