package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// waitHook runs a function before a read of a connection would block: a
// non-blocking read is tried first (TCP connections, also beneath a PROXY
// protocol wrapper), and only when nothing is waiting does hook run (flush
// queued output, release buffers) before the ordinary, blocking read. On
// other connections (test pipes) hook runs before every read.
//
// Beneath crypto/tls (tlsRecords), reads also end at TLS record
// boundaries: tls.Conn keeps its raw input buffer for the life of the
// connection and grows it (doubling) whenever a read returns more than the
// record it wants, so after a large PDU an idle association would hold
// 32-64 KiB there; bounded reads keep it at one record (about 17 KiB).
// What a socket read brings beyond the record waits in a pooled buffer
// that goes back to the pool as soon as tls.Conn has taken it all.
type waitHook struct {
	rc     syscall.RawConn
	prober *prober // on rc
	hook   func()
	direct net.Conn // when set, read from it instead of the connection passed to read (the socket beneath a PROXY wrapper)

	tlsRecords bool
	// noReadAhead: small reads of a plain connection go to the socket
	// as asked (the benchmark's before).
	noReadAhead bool
	hdr         [tlsHeaderLen]byte // the current record's header bytes seen so far (hn of them)
	hn          int
	left        int                // bytes of the current record's body not yet returned; 0: in a header
	ahead       [tlsHeaderLen]byte // the next record's first bytes, read with the end of the current one
	an          int
	pend        []byte  // read ahead from the socket, not yet returned (in pbox)
	pbox        *[]byte // from readAheadPool while pend has bytes
}

// tlsHeaderLen is a TLS record header: type, version, 16-bit length.
const tlsHeaderLen = 5

func newWaitHook(nc net.Conn, hook func()) *waitHook {
	h := &waitHook{hook: hook}
	tc, ok := nc.(*net.TCPConn)
	if pc, isPP := nc.(*proxyproto.Conn); isPP {
		tc, ok = h.unwrapProxy(pc)
	}
	if ok {
		h.rc, _ = tc.SyscallConn()
	}
	if h.rc != nil {
		h.prober = newProber(h.rc)
	}
	return h
}

// unwrapProxy makes reads bypass a PROXY protocol wrapper whose header has
// been read (clientAddr): the wrapper reads through a small bufio.Reader,
// so whatever it buffered beyond the header is taken first (a read under
// an expired deadline returns buffered bytes and reads nothing from the
// socket) and returned before anything read from the socket itself. It
// must be called while no one else reads pc; pc's read deadline is left
// cleared, as the pumps set their own.
func (h *waitHook) unwrapProxy(pc *proxyproto.Conn) (*net.TCPConn, bool) {
	tc, ok := pc.TCPConn()
	if !ok {
		return nil, false
	}
	if err := pc.SetReadDeadline(time.Unix(1, 0)); err != nil {
		return nil, false
	}
	defer pc.SetReadDeadline(time.Time{})
	box := readAheadPool.Get().(*[]byte)
	buf := (*box)[:cap(*box)]
	n := 0
	for n < len(buf) {
		// A read of at least the wrapper's buffer size returns only what
		// it holds, or goes to the socket (and times out) when it is empty.
		m, err := pc.Read(buf[n:])
		n += m
		if m == 0 || err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				// End of stream or a failure: leave the wrapper in charge,
				// which reports it again.
				readAheadPool.Put(box)
				return nil, false
			}
			break
		}
	}
	if n > 0 {
		h.pbox, h.pend = box, buf[:n]
	} else {
		readAheadPool.Put(box)
	}
	h.direct = tc
	return tc, true
}

// newTLSWaitHook is newWaitHook for the connection beneath a tls.Conn that
// has finished its handshake (the stream is at a record boundary).
func newTLSWaitHook(nc net.Conn, hook func()) *waitHook {
	h := newWaitHook(nc, hook)
	h.tlsRecords = true
	return h
}

func (h *waitHook) read(nc net.Conn, b []byte) (int, error) {
	if h.direct != nil {
		nc = h.direct
	}
	if len(b) == 0 || !h.tlsRecords && h.an == 0 && len(h.pend) == 0 && (len(b) >= plainReadAheadBelow || h.rc == nil || h.noReadAhead) {
		return h.readWait(nc, b)
	}
	// In a header, only the rest of it; in a body, only the rest of it
	// (after a fall back to plain reads, what was read ahead first).
	limit := tlsHeaderLen - h.hn
	switch {
	case !h.tlsRecords:
		limit = len(b)
	case h.left > 0:
		limit = h.left
	}
	if h.an > 0 {
		n := copy(b[:min(len(b), limit)], h.ahead[:h.an])
		h.an = copy(h.ahead[:], h.ahead[n:h.an])
		h.records(b[:n])
		return n, nil
	}
	if len(h.pend) == 0 && h.rc != nil {
		// Whatever is waiting, in one read into a pooled buffer (held
		// only while it has bytes for the reader above): few reads per
		// record while data streams, nothing held while the association
		// waits. On a plain connection this is the read of a PDU header:
		// the body (and the PDUs after it) come in the same read, where
		// reading the header alone would cost a system call of its own.
		box := readAheadPool.Get().(*[]byte)
		if n := h.prober.probe((*box)[:cap(*box)]); n > 0 {
			h.pbox, h.pend = box, (*box)[:n]
		} else {
			readAheadPool.Put(box)
		}
	}
	if len(h.pend) > 0 {
		n := copy(b[:min(len(b), limit)], h.pend)
		h.pend = h.pend[n:]
		if len(h.pend) == 0 {
			readAheadPool.Put(h.pbox)
			h.pbox, h.pend = nil, nil
		}
		h.records(b[:n])
		return n, nil
	}
	// Nothing waiting (or no socket to probe): the hook, then a blocking
	// read of this header or body, and in a body the next header too
	// (kept in ahead). A malformed stream only makes reads smaller: bytes
	// are never dropped or reordered, and tls.Conn reports the error.
	extra := 0
	if h.left > 0 {
		extra = tlsHeaderLen
	}
	h.hook()
	n, err := nc.Read(b[:min(len(b), limit+extra)])
	if n > limit {
		h.an = copy(h.ahead[:], b[limit:n])
		n = limit
	}
	h.records(b[:n])
	return n, err
}

// plainReadAheadBelow: on a plain connection, a read shorter than this (a
// PDU header) takes whatever is waiting into a pooled buffer; a longer one
// (a PDU body) reads into the caller's buffer directly, without a copy.
const plainReadAheadBelow = 1 << 10

// readAheadPool holds the buffers a waitHook beneath crypto/tls reads
// what is waiting into; 64 KiB is a few records per read.
var readAheadPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// records follows the record boundaries through p, the bytes returned.
func (h *waitHook) records(p []byte) {
	for h.tlsRecords && len(p) > 0 {
		if h.left > 0 {
			k := min(h.left, len(p))
			h.left -= k
			p = p[k:]
			continue
		}
		k := copy(h.hdr[h.hn:], p)
		h.hn += k
		p = p[k:]
		if h.hn == tlsHeaderLen {
			h.hn, h.left = 0, int(h.hdr[3])<<8|int(h.hdr[4])
			if !plausibleTLSHeader(h.hdr) {
				// Not at a boundary after all (tls.Conn had read ahead when
				// the hook was set): plain reads from now on.
				h.tlsRecords, h.left = false, 0
				return
			}
		}
	}
}

// plausibleTLSHeader: a known content type (RFC 8446 5.1: change cipher
// spec, alert, handshake, application data), major version 3 and a length
// no record may exceed (2^14 + 2048, RFC 5246 6.2.3).
func plausibleTLSHeader(hdr [tlsHeaderLen]byte) bool {
	return hdr[0] >= 20 && hdr[0] <= 23 && hdr[1] == 3 && int(hdr[3])<<8|int(hdr[4]) <= 1<<14+2048
}

func (h *waitHook) readWait(nc net.Conn, b []byte) (int, error) {
	if h.rc != nil && len(b) > 0 {
		if n := h.prober.probe(b); n > 0 {
			return n, nil
		}
		// Nothing waiting, end of stream, an error or a deadline: the
		// ordinary read below reports the latter three as net does.
	}
	h.hook()
	return nc.Read(b)
}

// hookConn is a connection whose reads go through a waitHook once set.
type hookConn struct {
	net.Conn
	wait *waitHook // set before the pumps start, by the goroutine that reads
	out  gather    // beneath a tls.Conn: the records of one write, gathered
}

// Write passes b to the connection, or, while a write through the
// tls.Conn above is being gathered, keeps it for that write's end.
func (h *hookConn) Write(b []byte) (int, error) {
	if n, err, ok := h.out.write(h.Conn, b); ok {
		return n, err
	}
	return h.Conn.Write(b)
}

func (h *hookConn) Read(b []byte) (int, error) {
	if h.wait != nil {
		return h.wait.read(h.Conn, b)
	}
	return h.Conn.Read(b)
}

// countingReader counts the bytes read through it (bytes_in of the audit).
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (cr *countingReader) Read(b []byte) (int, error) {
	n, err := cr.r.Read(b)
	cr.n.Add(int64(n))
	return n, err
}

// probeConn notes whether the peer sent anything before the handshake
// ended, to tell TCP health checks from failed handshakes.
type probeConn struct {
	net.Conn
	read atomic.Bool
	wait *waitHook // set by the relay before its pumps start
}

func (p *probeConn) Read(b []byte) (int, error) {
	if p.wait != nil {
		return p.wait.read(p.Conn, b) // after the handshake: read is set
	}
	n, err := p.Conn.Read(b)
	if n > 0 && !p.read.Load() {
		p.read.Store(true)
	}
	return n, err
}
