package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/tlslayer"
)

// processID distinguishes connection ids of this process from those of an
// earlier run in the same audit file.
var processID = func() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()

// conn is one client connection: TLS handshake, A-ASSOCIATE-RQ, decision,
// then the answer or relay path.
type conn struct {
	s      *Server
	raw    net.Conn
	tc     *tls.Conn
	id     string
	log    hclog.Logger
	start  time.Time
	remote string
	source netip.Addr

	pre      *probeConn      // beneath TLS: the relay hooks its reads
	in       *countingReader // client bytes read (PDUs, after TLS)
	identity tlslayer.Identity
	client   *audit.Client
	rq       *association.AssociateRQ

	// state moves pre (0) → established (1) or closing (2) exactly once
	state atomic.Int32
	// abortFn aborts the established association (both sides); set by the
	// answer or relay path before it becomes established.
	abortFn atomic.Pointer[func()]

	closeOnce sync.Once
	preOnce   sync.Once // gives back the pre-association slots once
	// srcKey is the source whose pre-association slot this conn holds
	// (when srcHeld); only the conn's goroutine sets them.
	srcKey  netip.Prefix
	srcHeld bool
}

// releasePre gives back the pre-association slots taken by Serve (global)
// and serve (per source).
func (c *conn) releasePre() {
	c.preOnce.Do(func() {
		c.s.preActive.Add(-1)
		if c.srcHeld {
			c.s.releasePreSource(c.srcKey)
		}
	})
}

const (
	statePre = iota
	stateEstablished
	stateClosing
)

func (s *Server) newConn(raw net.Conn) *conn {
	n := s.connID.Add(1)
	id := fmt.Sprintf("%s-%d", processID, n)
	return &conn{s: s, raw: raw, id: id, start: time.Now(), log: s.log.With("conn", id)}
}

// drain is called by Shutdown: a connection that has no association yet is
// closed now; an established one may finish.
func (c *conn) drain() {
	if c.state.CompareAndSwap(statePre, stateClosing) {
		c.raw.Close()
	}
}

// abort ends an established association with A-ABORT to both sides.
func (c *conn) abort() {
	if f := c.abortFn.Load(); f != nil {
		(*f)()
	}
	c.raw.Close()
}

func (c *conn) close() {
	c.closeOnce.Do(func() { c.raw.Close() })
}

// establish marks the association established unless Shutdown got here
// first.
func (c *conn) establish(abort func()) bool {
	c.abortFn.Store(&abort)
	return c.state.CompareAndSwap(statePre, stateEstablished)
}

func (c *conn) serve(ctx context.Context) {
	defer c.close()
	defer c.releasePre()
	run, held := c.open(ctx)
	if held {
		defer c.s.release()
	}
	if run != nil {
		// The association's life runs after open's large frame (handshake,
		// decision) has returned: a goroutine waiting for its peer then
		// uses under 4 KiB of stack, which the GC can shrink to 8 KiB.
		run()
	}
}

// open takes the connection up to the decision: the TLS handshake, the
// A-ASSOCIATE-RQ, the policy and the association slot (held: the caller
// releases it). run, when not nil, is the rest of the association.
func (c *conn) open(ctx context.Context) (run func(), held bool) {
	cfg := c.s.current()
	artim := cfg.Edge.ARTIMTimeout
	if artim <= 0 {
		artim = 30 * time.Second
	}
	// ARTIM covers the PROXY header, the TLS handshake and the A-ASSOCIATE-RQ.
	deadline := time.Now().Add(artim)
	_ = c.raw.SetDeadline(deadline)
	ap, err := clientAddr(c.raw, deadline)
	if ap.IsValid() {
		c.remote, c.source = ap.String(), ap.Addr()
	}
	c.log = c.log.With("remote", c.remote)
	if err != nil {
		if errors.Is(err, errNoBytes) {
			c.log.Debug("connection closed before its PROXY header (TCP check)")
			c.close()
			return nil, false
		}
		c.s.refuse(c.raw, refusal{Conn: c.id, Remote: ap, Listener: EdgeListener, Reason: RefusedProxyHeader,
			Detail: "PROXY header from a trusted load balancer: " + err.Error()})
		return nil, false
	}
	// The source is known only now (after a PROXY header): one source may
	// hold only part of the pre-association slots.
	c.srcKey = sourceKey(c.source)
	if !c.s.acquirePreSource(c.srcKey, cfg.Edge.MaxAssociations) {
		c.s.refuse(c.raw, refusal{Conn: c.id, Remote: ap, Listener: EdgeListener, Reason: RefusedTooManyConnections,
			Detail: fmt.Sprintf("%d connections before association from this source, its share", perSourcePreLimit(cfg.Edge.MaxAssociations))})
		return nil, false
	}
	c.srcHeld = true

	pre := &probeConn{Conn: c.raw}
	c.pre = pre
	c.tc = tls.Server(pre, c.s.TLS.ServerConfig())
	hctx, cancel := context.WithDeadline(ctx, deadline)
	id, err := tlslayer.Handshake(hctx, c.tc)
	cancel()
	if err != nil {
		reason := tlslayer.Classify(err)
		if proxyHeaderRefused(err) {
			c.s.refuse(c.raw, refusal{Conn: c.id, Remote: ap, Listener: EdgeListener, Reason: RefusedProxyHeader,
				Detail: "PROXY header from an address not in edge.proxy_protocol"})
			return nil, false
		}
		if !pre.read.Load() && reason == tlslayer.ReasonEOF {
			// Closed without sending a byte: a load balancer's or monitor's
			// TCP check, not a failed handshake; not worth an audit record.
			c.log.Debug("connection closed before any byte (TCP check)")
			return nil, false
		}
		c.s.Metrics.TLSFailures.WithLabelValues(reason).Inc() // every one is metered
		if !c.s.tlsFail.allow(c.source, reason) {
			c.log.Debug("tls handshake failed; record suppressed (rate limit)", "reason", reason, "error", err)
			return nil, false
		}
		c.log.Info("tls handshake failed", "reason", reason, "error", err)
		c.s.auditEvent(audit.Event{Event: audit.EventTLSFailed, Conn: c.id, Remote: c.remote, Reason: reason})
		return nil, false
	}
	c.identity = id
	c.client = &audit.Client{Subject: id.Subject, CN: id.CN, DNS: id.DNS, URI: id.URI, Email: id.Email,
		Fingerprint: id.Fingerprint, Issuer: id.Issuer}
	c.log = c.log.With("client_cn", id.CN)

	c.in = &countingReader{r: c.tc}
	r := association.NewReader(c.in, cfg.Edge.MaxPDULength)
	typ, raw, err := r.Next()
	if err != nil {
		c.preAssociationError(err)
		return nil, false
	}
	if typ != association.TypeAssociateRQ {
		// PS3.8 state Sta2: any PDU but A-ASSOCIATE-RQ is unexpected (AA-1),
		// except A-ABORT, which just closes (AA-2).
		if typ != association.TypeAbort {
			c.sendAbort(c.tc, association.AbortSourceServiceProvider, association.AbortUnexpectedPDU)
			c.log.Info("unexpected PDU before A-ASSOCIATE-RQ; aborted", "type", typ)
			c.waitPeerClose(c.tc)
		}
		return nil, false
	}
	p, err := association.Decode(typ, raw[association.HeaderLen:])
	if err != nil {
		c.preAssociationError(err)
		return nil, false
	}
	rq := p.(*association.AssociateRQ)
	c.rq = rq
	c.log = c.log.With("calling_ae", rq.CallingAE, "called_ae", rq.CalledAE)
	c.log.Trace("A-ASSOCIATE-RQ", "contexts", len(rq.PresentationContexts), "max_length", rq.UserInfo.MaxLength,
		"implementation", rq.UserInfo.ImplementationClassUID)

	in := policy.Input{
		CN: id.CN, DNS: id.DNS, URI: id.URI, Email: id.Email, Fingerprint: id.Fingerprint,
		SourceIP: c.source, CallingAE: association.TrimAE(rq.CallingAE), CalledAE: association.TrimAE(rq.CalledAE),
	}
	d := cfg.Policy.Evaluate(&in)
	switch d.Action {
	case policy.ActionReject:
		c.reject(d.Rule, association.RejectResult(d.Reject.Result), association.RejectSource(d.Reject.Source),
			association.RejectReason(d.Reject.Reason), d.Reject.ReasonName)
		return nil, false
	case policy.ActionAnswer, policy.ActionRelay:
	default:
		c.reject(d.Rule, association.RejectPermanent, association.RejectSourceServiceUser, association.RejectUserNoReason, "")
		return nil, false
	}
	if !c.s.tryAcquire(cfg.Edge.MaxAssociations) {
		c.reject(d.Rule, association.RejectTransient, association.RejectSourceServiceProviderPresentation, association.RejectPresentationLocalLimitExceeded, "")
		return nil, false
	}
	c.releasePre() // now counted against max_associations instead
	_ = c.raw.SetDeadline(time.Time{})
	if d.Action == policy.ActionAnswer {
		a := &answerer{c: c, cfg: cfg, r: r, rule: d.Rule}
		return a.run, true
	}
	rl := &relay{c: c, cfg: cfg, d: d, cr: r}
	if !rl.run(ctx, deadline) {
		return nil, true
	}
	return rl.pump, true
}

// preAssociationError handles a failure to read the A-ASSOCIATE-RQ: a
// protocol error gets the A-ABORT PS3.8 prescribes; a timeout (ARTIM) or a
// closed connection just closes.
func (c *conn) preAssociationError(err error) {
	var pe *association.ProtocolError
	switch {
	case errors.As(err, &pe):
		ab := association.AbortFor(err)
		c.writePDU(c.tc, ab)
		c.log.Info("malformed PDU before association; aborted", "error", err, "reason", ab.Reason)
		c.waitPeerClose(c.tc) // PS3.8 Sta13: wait (ARTIM) for the peer to close
	case isTimeout(err):
		c.log.Info("ARTIM expired before A-ASSOCIATE-RQ; closed")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		c.log.Debug("closed before A-ASSOCIATE-RQ")
	default:
		c.log.Debug("read A-ASSOCIATE-RQ failed", "error", err)
	}
}

// reject sends A-ASSOCIATE-RJ, audits it, and waits briefly for the peer to
// close first (PS3.8 AA-... : the requestor closes the transport after an
// RJ; closing at once could lose the RJ in a TCP reset).
func (c *conn) reject(rule string, result association.RejectResult, source association.RejectSource, reason association.RejectReason, name string) {
	if name == "" {
		name = association.RejectReasonName(source, reason)
	}
	rj := &association.AssociateRJ{Result: result, Source: source, Reason: reason}
	c.writePDU(c.tc, rj)
	c.s.Metrics.Associations.WithLabelValues("reject", rule).Inc()
	e := c.event(audit.EventRejected)
	e.Rule = rule
	e.Result, e.Source, e.ReasonCode = int(result), int(source), int(reason)
	e.Reason = name
	e.ResultName, e.SourceName = result.String(), source.String()
	c.s.auditEvent(e)
	c.log.Info("association rejected", "decision", "reject", "rule", rule, "result", int(result),
		"source", int(source), "reason", name, "duration", time.Since(c.start))
	c.waitPeerClose(c.tc)
}

// waitPeerClose reads (and discards, bounded) until the peer closes or a
// short timer expires.
func (c *conn) waitPeerClose(r net.Conn) {
	wait := 2 * time.Second
	if a := c.s.current().Edge.ARTIMTimeout; a > 0 && a < wait {
		wait = a
	}
	_ = r.SetReadDeadline(time.Now().Add(wait))
	_, _ = io.Copy(io.Discard, io.LimitReader(r, 1<<20))
}

// event starts an audit record with what is known about the connection.
func (c *conn) event(name string) audit.Event {
	e := audit.Event{Event: name, Conn: c.id, Remote: c.remote, Client: c.client}
	if c.rq != nil {
		e.Assoc = c.id
		e.CallingAE = association.TrimAE(c.rq.CallingAE)
		e.CalledAE = association.TrimAE(c.rq.CalledAE)
	}
	return e
}

// writePDU writes one PDU with a short write deadline (so a peer that does
// not read cannot hold the goroutine) and ignores the error: it is only used
// for final PDUs (RJ, A-ABORT) before closing.
func (c *conn) writePDU(w net.Conn, p association.PDU) {
	b, err := association.Append(nil, p)
	if err != nil {
		c.log.Error("encode PDU", "error", err)
		return
	}
	_ = w.SetWriteDeadline(time.Now().Add(2 * time.Second))
	_, _ = w.Write(b)
}

func (c *conn) sendAbort(w net.Conn, src association.AbortSource, reason association.AbortReason) {
	c.writePDU(w, &association.Abort{Source: src, Reason: reason})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

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
}

// abortGrace is how long a write in progress may still run when abort
// wants the connection; abortWriteTimeout bounds the A-ABORT's own write.
const (
	abortGrace        = 100 * time.Millisecond
	abortWriteTimeout = 2 * time.Second
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
	n, err := w.c.Write(b)
	w.bytes.Add(int64(n))
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

// waitHook runs a function before a read of a connection would block: a
// non-blocking read is tried first (TCP connections only), and only when
// nothing is waiting does hook run (flush queued output, release buffers)
// before the ordinary, blocking read. On other connections (PROXY protocol
// wrappers, test pipes) hook runs before every read.
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

	tlsRecords bool
	hdr        [tlsHeaderLen]byte // the current record's header bytes seen so far (hn of them)
	hn         int
	left       int                // bytes of the current record's body not yet returned; 0: in a header
	ahead      [tlsHeaderLen]byte // the next record's first bytes, read with the end of the current one
	an         int
	pend       []byte  // read ahead from the socket, not yet returned (in pbox)
	pbox       *[]byte // from readAheadPool while pend has bytes
}

// tlsHeaderLen is a TLS record header: type, version, 16-bit length.
const tlsHeaderLen = 5

func newWaitHook(nc net.Conn, hook func()) *waitHook {
	h := &waitHook{hook: hook}
	if tc, ok := nc.(*net.TCPConn); ok {
		h.rc, _ = tc.SyscallConn()
	}
	if h.rc != nil {
		h.prober = newProber(h.rc)
	}
	return h
}

// newTLSWaitHook is newWaitHook for the connection beneath a tls.Conn that
// has finished its handshake (the stream is at a record boundary).
func newTLSWaitHook(nc net.Conn, hook func()) *waitHook {
	h := newWaitHook(nc, hook)
	h.tlsRecords = true
	return h
}

func (h *waitHook) read(nc net.Conn, b []byte) (int, error) {
	if len(b) == 0 || !h.tlsRecords && h.an == 0 && len(h.pend) == 0 {
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
	if len(h.pend) == 0 && h.rc != nil && h.tlsRecords {
		// Whatever is waiting, in one read into a pooled buffer (held
		// only while it has bytes for tls.Conn): few reads per record
		// while data streams, nothing held while the association waits.
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

func (c *conn) bytesIn() int64 {
	if c.in == nil {
		return 0
	}
	return c.in.n.Load()
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
