package audit

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// SyslogConfig configures forwarding to a central collector (the policy's
// audit.syslog block).
type SyslogConfig struct {
	Address string // host:port of the collector (RFC 5425: 6514)
	Format  string // "atna" (default: DICOM PS3.15 A.5 AuditMessage XML) | "json" (the chained line)
	// TLS is the client side towards the collector: protocol versions and
	// suites of the PS3.15 profile, the roots that sign the collector and the
	// certificate the edge presents (RFC 5425 collectors normally require
	// one). tlslayer builds it. ServerName defaults to Address's host.
	TLS      *tls.Config
	Hostname string // HOSTNAME field and AuditSourceID; default os.Hostname()
	// The timings below are required (Open refuses zero): the edge fills
	// them from the policy package's Syslog* values (proxy.AuditConfig).

	// Poll is how often the audit file is checked for records the writer
	// appended.
	Poll time.Duration
	// ReadAhead bounds the records read from the file ahead of the sender;
	// default 256.
	ReadAhead int
	// InFlight bounds the records the sender holds: waiting to be written
	// or written and not yet confirmed (they are sent again if the
	// connection breaks first); default 4096, at most InFlight/ConfirmAfter
	// records a second. With ReadAhead it bounds the memory forwarding
	// takes, however long the collector is away.
	InFlight int
	// ConfirmAfter is how long a connection must stay up after a record was
	// written to it before the record counts as delivered.
	// RFC 5425 has no acknowledgement: a collector that goes away may not
	// have read the last records written, so those are sent again.
	ConfirmAfter time.Duration
	DialTimeout  time.Duration // connecting, TLS handshake included
	WriteTimeout time.Duration // one write to a collector that stopped reading
	MaxBackoff   time.Duration // reconnect back-off cap
	// CloseTimeout bounds how long Close keeps delivering the backlog while
	// the collector is reachable. During an outage Close does not wait.
	// What is left is sent after the next start.
	CloseTimeout time.Duration
	Logger       hclog.Logger
}

// CursorPath is where the forwarder keeps its position for the audit file
// file: the seq and hash of the last record the collector received.
func CursorPath(file string) string { return file + ".forward" }

// Forwarder sends the audit trail to a central collector as RFC 5424 syslog
// messages over TLS with RFC 5425 octet-counting framing. The local file is
// its queue: it reads the records from a cursor persisted beside the log
// (CursorPath: seq and hash of the last record delivered), following
// rotations, so a collector outage or an edge restart loses nothing and
// the backlog follows in order. Only ReadAhead + InFlight records are held
// in memory, as framed messages.
//
// Delivery: a record counts as delivered once the connection it was
// written to has stayed up for ConfirmAfter afterwards (or the collector
// closed the connection in answer to ours at Close, having read all before
// it). When a connection breaks, the records not yet confirmed are sent
// again on the next one, so in normal operation nothing is sent twice, and
// a collector that fails while records are in flight may receive the last
// second's records twice rather than miss them.
type Forwarder struct {
	cfg        SyslogConfig
	file       string
	cursorPath string
	log        hclog.Logger
	pid        string
	start      cursor // where reading starts

	latest        atomic.Uint64 // seq of the newest record written
	delivered     atomic.Uint64 // seq of the last record confirmed delivered
	lastDelivered atomic.Int64  // unix nanos of the last confirmation, 0 = none
	sent          atomic.Uint64
	connected     atomic.Bool

	items     chan fwdItem // read ahead from the file, in order
	stopRead  context.CancelFunc
	readCtx   context.Context
	readDone  chan struct{}
	sendDone  chan struct{}
	closing   chan struct{} // closed by close: deliver up to target, then stop
	stopNow   chan struct{} // closed when CloseTimeout passed
	target    atomic.Uint64
	closeOnce sync.Once
}

type fwdItem struct {
	seq   uint64
	hash  string    // hex SHA-256 of the record's line: the cursor once delivered
	frame []byte    // the RFC 5425 frame, as sent (and sent again)
	at    time.Time // when written to the current connection
}

// cursor is the persisted position: the last record delivered. Seq 0 is
// "nothing yet": forwarding starts with the first record of the log.
type cursor struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// checkSyslog validates cfg and fills defaults.
func checkSyslog(cfg *SyslogConfig) error {
	if cfg.Address == "" {
		return errors.New("audit: syslog address is empty")
	}
	host, _, err := net.SplitHostPort(cfg.Address)
	if err != nil {
		return fmt.Errorf("audit: syslog address %q: %w", cfg.Address, err)
	}
	switch cfg.Format {
	case "":
		cfg.Format = "atna"
	case "atna", "json":
	default:
		return fmt.Errorf("audit: syslog format %q: want atna or json", cfg.Format)
	}
	if cfg.TLS == nil {
		cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	} else {
		cfg.TLS = cfg.TLS.Clone()
	}
	if cfg.TLS.ServerName == "" {
		cfg.TLS.ServerName = host
	}
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
	}
	if cfg.ReadAhead <= 0 {
		cfg.ReadAhead = 256
	}
	if cfg.InFlight <= 0 {
		cfg.InFlight = 4096
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"Poll", cfg.Poll}, {"ConfirmAfter", cfg.ConfirmAfter}, {"DialTimeout", cfg.DialTimeout},
		{"WriteTimeout", cfg.WriteTimeout}, {"MaxBackoff", cfg.MaxBackoff}, {"CloseTimeout", cfg.CloseTimeout}} {
		if d.v <= 0 {
			return fmt.Errorf("audit: syslog %s not set", d.name)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return nil
}

// startForwarder starts forwarding file, whose chain now ends at seq with
// the record hashing to hash (ZeroHash-like "" or the hex of an empty
// chain's prev when seq is 0). Without a cursor, forwarding starts after
// that record: the collector receives what is written from now on, not a
// history that predates its configuration.
func startForwarder(cfg SyslogConfig, file string, seq uint64, hash string) (*Forwarder, error) {
	f := &Forwarder{
		cfg:        cfg,
		file:       file,
		cursorPath: CursorPath(file),
		log:        cfg.Logger,
		pid:        strconv.Itoa(os.Getpid()),
		items:      make(chan fwdItem, cfg.ReadAhead),
		readDone:   make(chan struct{}),
		sendDone:   make(chan struct{}),
		closing:    make(chan struct{}),
		stopNow:    make(chan struct{}),
	}
	c, err := readCursor(f.cursorPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		c = cursor{Seq: seq, Hash: hash}
		if err := writeCursor(f.cursorPath, c); err != nil {
			return nil, err
		}
	case err != nil:
		f.log.Error("audit forward cursor unreadable; sending the whole log again", "cursor", f.cursorPath, "error", err)
		c = cursor{}
	case c.Seq > seq || (c.Seq == seq && c.Seq > 0 && c.Hash != hash):
		// The log was replaced or reset under the cursor: its records are
		// not the ones the collector has.
		f.log.Warn("audit forward cursor does not match the log; sending the whole log", "cursor_seq", c.Seq, "log_seq", seq)
		c = cursor{}
	}
	f.start = c
	f.delivered.Store(c.Seq)
	f.latest.Store(seq)
	f.readCtx, f.stopRead = context.WithCancel(context.Background())
	go f.read()
	go f.send()
	return f, nil
}

// written tells the forwarder the writer appended record seq (the backlog
// metric counts from it).
func (f *Forwarder) written(seq uint64) { f.latest.Store(seq) }

// Backlog is the number of records written but not yet delivered.
func (f *Forwarder) Backlog() uint64 {
	l, d := f.latest.Load(), f.delivered.Load()
	if l <= d {
		return 0
	}
	return l - d
}

// LastDelivered is when a record was last confirmed delivered (zero: none
// since the start).
func (f *Forwarder) LastDelivered() time.Time {
	if n := f.lastDelivered.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Delivered is the seq of the last record confirmed delivered.
func (f *Forwarder) Delivered() uint64 { return f.delivered.Load() }

// Sent counts messages written to the collector, resent ones included.
func (f *Forwarder) Sent() uint64 { return f.sent.Load() }

// Connected reports whether a connection to the collector is up.
func (f *Forwarder) Connected() bool { return f.connected.Load() }

// close delivers the records up to target (the writer's last seq), for up
// to CloseTimeout, then stops; the cursor is saved either way.
func (f *Forwarder) close(target uint64) {
	f.closeOnce.Do(func() {
		f.target.Store(target)
		close(f.closing)
		t := time.AfterFunc(f.cfg.CloseTimeout, func() { close(f.stopNow) })
		<-f.sendDone
		if t.Stop() {
			close(f.stopNow)
		}
		f.stopRead()
		<-f.readDone
	})
}

var errCursorMismatch = errors.New("audit forward cursor does not match the log")

// read follows the audit file from the cursor and hands the records on,
// blocking while ReadAhead records wait: the file is the queue.
func (f *Forwarder) read() {
	defer close(f.readDone)
	from := f.start
	for {
		// A rotated file whose last record is at or before the cursor holds
		// nothing to send: it is passed over without decoding it.
		skip := func(path string) bool {
			seq, ok := lastSeq(path)
			return ok && seq < from.Seq
		}
		err := follow(f.readCtx, f.file, Filter{}, f.cfg.Poll, skip, func(e Event, line []byte) error {
			if e.Seq <= from.Seq {
				if e.Seq == from.Seq && from.Hash != "" && hashHex(line) != from.Hash {
					return errCursorMismatch
				}
				return nil
			}
			it := fwdItem{seq: e.Seq, hash: hashHex(line), frame: f.frame(nil, &e, line)}
			select {
			case f.items <- it:
				from = cursor{Seq: e.Seq, Hash: it.hash}
				return nil
			case <-f.readCtx.Done():
				return f.readCtx.Err()
			}
		})
		if f.readCtx.Err() != nil {
			return
		}
		if errors.Is(err, errCursorMismatch) {
			f.log.Warn("audit forward cursor does not match the log; sending the whole log", "cursor_seq", from.Seq)
			from = cursor{}
			continue
		}
		var bad *BadLinesError
		if err != nil && !errors.As(err, &bad) {
			f.log.Error("audit forward cannot read the log; retrying", "file", f.file, "error", err)
		}
		select {
		case <-f.readCtx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// lastSeq is the seq of path's last complete record.
func lastSeq(path string) (uint64, bool) {
	fh, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return 0, false
	}
	line, _, err := lastLine(fh, st.Size())
	if err != nil || line == nil {
		return 0, false
	}
	var r struct {
		Seq *uint64 `json:"seq"`
	}
	if json.Unmarshal(line, &r) != nil || r.Seq == nil {
		return 0, false
	}
	return *r.Seq, true
}

func hashHex(line []byte) string {
	sum := sha256.Sum256(line)
	return hex.EncodeToString(sum[:])
}

// collectorConn is one TLS connection to the collector. A goroutine reads
// from it (collectors send nothing) only to learn when it ends.
type collectorConn struct {
	tc   *tls.Conn
	raw  net.Conn
	dead chan struct{}
	err  error // why it ended, valid once dead is closed
}

func (c *collectorConn) watch() {
	buf := make([]byte, 512)
	for {
		if _, err := c.tc.Read(buf); err != nil {
			c.err = err
			close(c.dead)
			return
		}
	}
}

func (c *collectorConn) isDead() bool {
	select {
	case <-c.dead:
		return true
	default:
		return false
	}
}

func (c *collectorConn) close() {
	c.raw.Close()
	<-c.dead
}

// sender owns the connection and the records between file and collector;
// only the send goroutine touches it.
type sender struct {
	f        *Forwarder
	conn     *collectorConn
	pending  []fwdItem // to write, oldest first (resends before new ones)
	inflight []fwdItem // written, not yet confirmed
	taken    uint64    // seq of the newest record taken from the reader
	closing  bool

	backoff   time.Duration
	nextDial  time.Time
	down      bool // in an outage: warned once, quiet until it ends
	downSince time.Time

	saved     cursor
	savedAt   time.Time
	confirmed cursor
	buf       []byte
}

const minBackoff = 100 * time.Millisecond

func (f *Forwarder) send() {
	defer close(f.sendDone)
	s := &sender{f: f, backoff: minBackoff, saved: f.start, confirmed: f.start, taken: f.start.Seq}
	tick := time.NewTicker(f.cfg.ConfirmAfter / 4)
	defer tick.Stop()
	defer func() {
		if s.conn != nil {
			s.conn.close()
			f.connected.Store(false)
		}
		s.save(true)
	}()
	for {
		s.check(time.Now())
		if !s.closing {
			select {
			case <-f.closing:
				s.closing = true
			default:
			}
		}
		if s.closing && len(s.pending) == 0 && s.taken >= f.target.Load() {
			s.finish()
			return
		}
		if s.closing && s.down {
			// The collector is away: a stop need not wait for it, the
			// backlog stays in the file for the next start.
			return
		}
		if len(s.pending) == 0 {
			var in <-chan fwdItem
			if len(s.inflight) < f.cfg.InFlight {
				in = f.items
			}
			var dead <-chan struct{}
			if s.conn != nil {
				dead = s.conn.dead
			}
			var closing <-chan struct{}
			if !s.closing {
				closing = f.closing
			}
			select {
			case it := <-in:
				s.take(it)
			case <-tick.C:
			case <-dead:
			case <-closing:
				s.closing = true
			case <-f.stopNow:
				return
			}
			continue
		}
		if s.conn == nil && !s.dial() {
			var closing <-chan struct{}
			if !s.closing {
				closing = f.closing
			}
			select {
			case <-time.After(time.Until(s.nextDial)):
			case <-closing:
			case <-f.stopNow:
				return
			}
			continue
		}
		s.write()
	}
}

// take adds it and whatever else the reader has ready, up to the bound.
func (s *sender) take(it fwdItem) {
	s.pending = append(s.pending, it)
	s.taken = it.seq
	for len(s.pending)+len(s.inflight) < s.f.cfg.InFlight {
		select {
		case it := <-s.f.items:
			s.pending = append(s.pending, it)
			s.taken = it.seq
		default:
			return
		}
	}
}

// check confirms what has been on a live connection for ConfirmAfter, and
// queues everything unconfirmed again when the connection has ended.
func (s *sender) check(now time.Time) {
	if s.conn != nil && s.conn.isDead() {
		s.lost(s.conn.err)
	}
	n := 0
	for n < len(s.inflight) && now.Sub(s.inflight[n].at) >= s.f.cfg.ConfirmAfter {
		n++
	}
	s.confirm(n)
	s.save(false)
}

// confirm marks the first n in-flight records delivered.
func (s *sender) confirm(n int) {
	if n == 0 {
		return
	}
	// The outage ends when records get through, not when a dial succeeds:
	// a collector that completes the handshake and then drops the sender
	// (a refused client certificate shows that way under TLS 1.3) is down.
	if s.down {
		s.f.log.Info("audit collector reachable again; sending the backlog", "address", s.f.cfg.Address,
			"outage", time.Since(s.downSince).Round(time.Millisecond), "backlog", s.f.Backlog())
	}
	s.down, s.backoff = false, minBackoff
	last := s.inflight[n-1]
	s.confirmed = cursor{Seq: last.seq, Hash: last.hash}
	s.f.delivered.Store(last.seq)
	s.f.lastDelivered.Store(time.Now().UnixNano())
	s.inflight = append(s.inflight[:0], s.inflight[n:]...)
}

// lost drops the connection; its unconfirmed records go first in line.
func (s *sender) lost(err error) {
	s.conn.close()
	s.conn = nil
	s.f.connected.Store(false)
	if len(s.inflight) > 0 {
		s.pending = append(append(make([]fwdItem, 0, len(s.inflight)+len(s.pending)), s.inflight...), s.pending...)
		s.inflight = s.inflight[:0]
	}
	s.failed("connection to the audit collector lost", err)
}

// failed logs the first failure of an outage as a warning and the retries
// at debug level, and schedules the next dial with capped back-off.
func (s *sender) failed(msg string, err error) {
	if !s.down {
		s.down, s.downSince = true, time.Now()
		s.f.log.Warn(msg+"; records wait in the audit file and follow when it is back",
			"address", s.f.cfg.Address, "error", err, "backlog", s.f.Backlog())
	} else {
		s.f.log.Debug(msg, "address", s.f.cfg.Address, "error", err, "retry_in", s.backoff)
	}
	s.nextDial = time.Now().Add(s.backoff)
	s.backoff = min(2*s.backoff, s.f.cfg.MaxBackoff)
}

// dial connects when the back-off allows; it reports whether a connection
// is up.
func (s *sender) dial() bool {
	if time.Now().Before(s.nextDial) {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.f.cfg.DialTimeout)
	defer cancel()
	dialed := make(chan struct{})
	defer close(dialed)
	go func() { // Close's deadline ends a dial that hangs
		select {
		case <-s.f.stopNow:
			cancel()
		case <-dialed:
		}
	}()
	d := &tls.Dialer{NetDialer: &net.Dialer{}, Config: s.f.cfg.TLS}
	c, err := d.DialContext(ctx, "tcp", s.f.cfg.Address)
	if err != nil {
		s.failed("audit collector unreachable", err)
		return false
	}
	tc := c.(*tls.Conn)
	s.conn = &collectorConn{tc: tc, raw: tc.NetConn(), dead: make(chan struct{})}
	go s.conn.watch()
	s.f.connected.Store(true)
	return true
}

// write sends pending records, up to 64 KiB in one write.
func (s *sender) write() {
	s.buf = s.buf[:0]
	n := 0
	for n < len(s.pending) && (n == 0 || len(s.buf) < 64<<10) {
		s.buf = append(s.buf, s.pending[n].frame...)
		n++
	}
	s.conn.raw.SetWriteDeadline(time.Now().Add(s.f.cfg.WriteTimeout))
	if _, err := s.conn.tc.Write(s.buf); err != nil {
		s.lost(err)
		return
	}
	now := time.Now()
	for i := range n {
		s.pending[i].at = now
		s.inflight = append(s.inflight, s.pending[i])
	}
	s.pending = append(s.pending[:0], s.pending[n:]...)
	s.f.sent.Add(uint64(n))
}

// finish ends the connection at Close so that the collector confirms it
// read everything: after our close_notify and FIN it reads to the end and
// closes its side, which the watcher sees.
func (s *sender) finish() {
	if s.conn == nil || len(s.inflight) == 0 {
		s.confirm(len(s.inflight))
		return
	}
	c := s.conn
	if err := c.tc.CloseWrite(); err == nil {
		if tcp, ok := c.raw.(interface{ CloseWrite() error }); ok {
			_ = tcp.CloseWrite()
		}
		select {
		case <-c.dead:
			// An orderly end (close_notify or FIN) comes after everything we
			// sent was read; a reset may have discarded some of it.
			if errors.Is(c.err, io.EOF) || errors.Is(c.err, io.ErrUnexpectedEOF) {
				s.confirm(len(s.inflight))
			}
		case <-s.f.stopNow:
		}
	}
}

// save persists the confirmed cursor: at most once a second while running
// (a crash repeats at most that second's records), and at the end.
func (s *sender) save(final bool) {
	if s.confirmed == s.saved || (!final && time.Since(s.savedAt) < time.Second) {
		return
	}
	if err := writeCursor(s.f.cursorPath, s.confirmed); err != nil {
		s.f.log.Error("audit forward cursor not saved", "cursor", s.f.cursorPath, "error", err)
		return
	}
	s.saved, s.savedAt = s.confirmed, time.Now()
}

func readCursor(path string) (cursor, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return cursor{}, err
	}
	var c cursor
	if err := json.Unmarshal(b, &c); err != nil {
		return cursor{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// writeCursor replaces the cursor file atomically and durably.
func writeCursor(path string, c cursor) error {
	b, _ := json.Marshal(c)
	tmp := path + ".tmp"
	fh, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if _, err := fh.Write(append(b, '\n')); err != nil {
		fh.Close()
		return fmt.Errorf("audit: %w", err)
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return fmt.Errorf("audit: %w", err)
	}
	if err := fh.Close(); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}
