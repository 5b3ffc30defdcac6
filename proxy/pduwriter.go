package proxy

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/policy"
)

// pduWriter serializes whole PDUs onto one connection: the relay's two
// pumps (and the edge's own refusal responses) share the client side.
//
// A pump forwarding P-DATA-TF queues them (writeQueued) and the queue goes
// out in one write when the pump's own input has nothing more waiting (its
// waitHook calls flush), when it is full, or before any other PDU: fewer
// write syscalls and fewer wake-ups of the receiver, and never a PDU held
// back waiting for more input.
type pduWriter struct {
	mu    sync.Mutex
	c     net.Conn
	q     []byte  // queued whole PDUs, not yet written
	qbox  *[]byte // q's box from queuePool
	err   error   // a failed flush; later writes return it
	bytes atomic.Int64
	// timeout bounds each write so a peer that stops reading cannot hold
	// the association forever; the idle timeout is the natural bound.
	timeout time.Duration
	// aborting is set by abort: no PDU is written after the A-ABORT.
	aborting atomic.Bool
	// g, when c is a tls.Conn over a hookConn, is that hookConn: each
	// write's records reach the socket in one write call.
	g *hookConn
}

// abortGrace is how long a write in progress may still run when abort
// wants the connection; abortWriteTimeout bounds the A-ABORT's own write.
const (
	abortGrace        = 100 * time.Millisecond
	abortWriteTimeout = policy.FinalWriteTimeout
)

// queueMax bounds the queue (memory per direction of a busy association)
// and so the size of one write; PDUs of more than half of it are written
// directly, without a copy.
const queueMax = 256 << 10

var queuePool = sync.Pool{New: func() any { b := make([]byte, 0, queueMax); return &b }}

func (w *pduWriter) writeRaw(b []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writeLocked(b)
}

// writeLocked writes what is queued, then b.
func (w *pduWriter) writeLocked(b []byte) error {
	if err := w.flushLocked(); err != nil {
		return err
	}
	return w.send(b)
}

func (w *pduWriter) send(b []byte) error {
	if w.timeout > 0 {
		_ = w.c.SetWriteDeadline(time.Now().Add(w.timeout))
	}
	// Checked after the deadline is set: abort sets the flag before it
	// shortens the deadline, so either this write sees the flag or abort's
	// deadline is the one in force.
	if w.aborting.Load() {
		return errEnded
	}
	if w.g != nil {
		w.g.out.begin()
	}
	n, err := w.c.Write(b)
	if w.g != nil {
		if gerr := w.g.out.end(w.g.Conn); err == nil {
			err = gerr
		}
	}
	w.bytes.Add(int64(n))
	if err != nil {
		w.err = err // part of a PDU may be out: nothing may follow it
	}
	return err
}

// abort writes a final A-ABORT; no PDU follows it. A write in progress,
// which may be blocked on a peer that has stopped reading for up to the
// idle timeout, gets abortGrace to finish and is then cut short, so
// Shutdown and failures elsewhere never wait behind it.
func (w *pduWriter) abort(src association.AbortSource, reason association.AbortReason) {
	b, err := association.Append(nil, &association.Abort{Source: src, Reason: reason})
	if err != nil {
		return
	}
	w.writeAbort(b)
}

// writeAbort is abort for an encoded A-ABORT PDU (one relayed unchanged).
func (w *pduWriter) writeAbort(b []byte) {
	w.aborting.Store(true)
	if !w.mu.TryLock() {
		_ = w.c.SetWriteDeadline(time.Now().Add(abortGrace))
		w.mu.Lock()
	}
	defer w.mu.Unlock()
	w.dropQueue() // moot after A-ABORT
	w.err = errEnded
	_ = w.c.SetWriteDeadline(time.Now().Add(abortWriteTimeout))
	_, _ = w.c.Write(b)
}

// writeQueued queues one whole PDU (copied: b is the reader's buffer).
func (w *pduWriter) writeQueued(b []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if len(b) > queueMax/2 {
		return w.writeLocked(b) // after what is queued, without a copy
	}
	if len(w.q)+len(b) > queueMax {
		if err := w.flushLocked(); err != nil {
			return err
		}
	}
	if w.qbox == nil {
		w.qbox = queuePool.Get().(*[]byte)
		w.q = (*w.qbox)[:0]
	}
	w.q = append(w.q, b...)
	return nil
}

// flush writes what is queued and gives the queue's buffer back, so an
// association waiting for input holds none.
func (w *pduWriter) flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flushLocked()
}

func (w *pduWriter) flushLocked() error {
	if w.err != nil || w.qbox == nil {
		return w.err
	}
	var err error
	if len(w.q) > 0 {
		err = w.send(w.q)
	}
	w.dropQueue()
	if err != nil {
		w.err = err
	}
	return err
}

// dropQueue discards what is queued (an A-ABORT makes it moot).
func (w *pduWriter) dropQueue() {
	if w.qbox != nil {
		*w.qbox = w.q[:0]
		queuePool.Put(w.qbox)
		w.qbox, w.q = nil, nil
	}
}

// encodePool holds the buffers PDUs the edge builds itself are encoded
// into: taken for one write, so an idle association holds none.
var encodePool = sync.Pool{New: func() any { return new([]byte) }}

func (w *pduWriter) write(p association.PDU) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	box := encodePool.Get().(*[]byte)
	b, err := association.Append((*box)[:0], p)
	if err == nil {
		err = w.writeLocked(b)
	}
	if cap(b) <= 64<<10 { // larger ones are rare: not worth keeping
		*box = b[:0]
		encodePool.Put(box)
	}
	return err
}

// writeMessage writes a DIMSE message the edge builds itself (a refusal, an
// answer) on ctxID, in PDUs no longer than max, after what is queued; it
// returns the bytes it wrote. The message's PDUs go out in one write: a
// peer that announced the PS3.8 minimum of 7 bytes gets a command in
// one-byte PDVs, and a write (a TLS record, a system call) per 13-byte PDU
// would cost the edge more than the message itself. The message is a
// command set only, a few hundred bytes, so the buffer stays small.
func (w *pduWriter) writeMessage(ctxID uint8, cmd *dimse.Command, max uint32) (int64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	box := encodePool.Get().(*[]byte)
	b := (*box)[:0]
	before := w.bytes.Load()
	err := dimse.WriteMessage(writerFunc(func(p []byte) error { b = append(b, p...); return nil }), ctxID, cmd, nil, max)
	if err == nil {
		err = w.writeLocked(b)
	}
	if cap(b) <= 64<<10 {
		*box = b[:0]
		encodePool.Put(box)
	}
	return w.bytes.Load() - before, err
}

// writerFunc adapts a function to io.Writer.
type writerFunc func([]byte) error

func (f writerFunc) Write(b []byte) (int, error) {
	if err := f(b); err != nil {
		return 0, err
	}
	return len(b), nil
}
