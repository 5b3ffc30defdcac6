package audit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Defaults applied by Open to zero Config fields.
const (
	DefaultQueueSize  = 4096
	DefaultRotateSize = 256 << 20
	// maxLine bounds one record when reading a log back; the writer never
	// produces lines near it (the largest are a few KiB).
	maxLine = 1 << 20
)

// Config configures a Writer. The policy's audit block maps onto it.
type Config struct {
	// File is the current log file (required; the policy's audit.file);
	// rotated files are File.1, File.2, ... (oldest first).
	File string
	// Fsync is how often written records are synced to disk; zero syncs
	// after every batch. Records are always synced at Close and rotation.
	Fsync time.Duration
	// OnFull is "block" (default: Log waits, nothing is lost) or "drop"
	// (Log returns false at once and the event is counted in Dropped).
	OnFull     string
	QueueSize  int    // events buffered between Log and the writer; default DefaultQueueSize
	RotateSize int64  // rotate before a write would exceed this many bytes; default DefaultRotateSize, <0 never
	PatientIDs string // "omit" | "hash" (default) | "plain"
	Logger     hclog.Logger

	// Now replaces time.Now for record timestamps (tests use a fixed clock).
	Now func() time.Time

	// Syslog, when set, forwards the trail to a collector: a Forwarder
	// reads this file from its cursor (see Forwarder), never blocking the
	// writer; Close lets it deliver the backlog for a bounded time.
	Syslog *SyslogConfig

	// wrap, when set by in-package tests, wraps the file writer (slow disks).
	wrap func(io.Writer) io.Writer
	// syncDir, when set by in-package tests, replaces the fsync of the
	// log's directory.
	syncDir func(dir string) error
	// closeGrace is how long Close keeps retrying a failing disk before it
	// gives the queued records up; zero means defaultCloseGrace.
	closeGrace time.Duration
}

// Writer appends hash-chained records to the audit file from one goroutine,
// fed through a bounded queue so that the PDU path never waits on the disk
// unless the queue is full and OnFull is "block".
type Writer struct {
	cfg  Config
	log  hclog.Logger
	drop bool
	key  []byte    // HMAC key for patient IDs in "hash" mode
	macs sync.Pool // of hash.Hash keyed with key: PatientID runs per C-STORE
	lock *os.File  // holds File.lock while open
	// waiters are the LogWritten calls whose records are in buf.
	waiters []chan struct{}
	fwd     *Forwarder // nil without Syslog

	mu     sync.RWMutex // guards closed against sends on a closed queue
	closed bool
	queue  chan queued
	done   chan struct{}

	dropped     atomic.Uint64
	writeErrors atomic.Uint64
	failing     atomic.Bool   // the last write or fsync failed; records wait in buf
	stop        chan struct{} // closed by Close: stop retrying a failing disk
	stopOnce    sync.Once
	lastDropLog atomic.Int64

	// owned by the writer goroutine
	f         *os.File
	out       io.Writer
	size      int64
	seq       uint64
	prev      [sha256.Size]byte
	prevHex   []byte
	dirty     bool
	lastHead  time.Time
	headStale bool // records synced since the anchor was written
	buf       []byte
	err       error  // first write error, returned by Close
	lost      bool   // records given up at Close: the anchor must not claim them
	mismatch  string // set by openCurrent: the detail of the audit.anchor_mismatch to write first
	giveUpAt  time.Time
}

// Retry bounds for a failing disk: the batch is kept and written again after
// retryMin, doubling to retryMax, until it succeeds or Close gives up.
const (
	retryMin          = 10 * time.Millisecond
	retryMax          = 2 * time.Second
	defaultCloseGrace = 5 * time.Second
)

// Open opens (or creates) the audit file and starts the writer goroutine. It
// reads the last record of the file, or of the newest rotated file when the
// current one is empty, so that seq and prev continue the existing chain.
func Open(cfg Config) (*Writer, error) {
	if cfg.File == "" {
		return nil, errors.New("audit: no file")
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.RotateSize == 0 {
		cfg.RotateSize = DefaultRotateSize
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	w := &Writer{cfg: cfg, log: cfg.Logger}
	if cfg.Syslog != nil {
		sc := *cfg.Syslog
		if err := checkSyslog(&sc); err != nil {
			return nil, err
		}
		w.cfg.Syslog = &sc
	}
	switch cfg.OnFull {
	case "", "block":
	case "drop":
		w.drop = true
	default:
		return nil, fmt.Errorf("audit: on_full %q: want block or drop", cfg.OnFull)
	}
	switch cfg.PatientIDs {
	case "", "hash":
		w.cfg.PatientIDs = "hash"
	case "omit", "plain":
	default:
		return nil, fmt.Errorf("audit: patient_ids %q: want omit, hash or plain", cfg.PatientIDs)
	}
	if err := os.MkdirAll(filepath.Dir(cfg.File), 0o750); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	lock, err := lockFile(cfg.File + ".lock")
	if err != nil {
		return nil, err
	}
	w.lock = lock
	if w.cfg.PatientIDs == "hash" {
		key, err := loadOrCreateKey(cfg.File + ".key")
		if err != nil {
			lock.Close()
			return nil, err
		}
		w.key = key
		w.macs.New = func() any { return hmac.New(sha256.New, key) }
	}
	if err := w.openCurrent(); err != nil {
		lock.Close()
		return nil, err
	}
	if w.cfg.Syslog != nil {
		fwd, err := startForwarder(*w.cfg.Syslog, cfg.File, w.seq, string(w.prevHex))
		if err != nil {
			w.f.Close()
			lock.Close()
			return nil, err
		}
		w.fwd = fwd
	}
	w.queue = make(chan queued, cfg.QueueSize)
	if w.mismatch != "" {
		// The first record of this run, before anything Log queues.
		w.queue <- queued{e: Event{Event: EventAnchorMismatch, Detail: w.mismatch}}
	}
	w.done = make(chan struct{})
	w.stop = make(chan struct{})
	go w.run()
	return w, nil
}

// loadOrCreateKey reads the HMAC key, creating it once with 32 random bytes.
// O_EXCL makes two starting processes agree on one key.
func loadOrCreateKey(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if err == nil {
		if len(key) < 16 {
			return nil, fmt.Errorf("audit: patient ID key %s is too short (%d bytes)", path, len(key))
		}
		return key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("audit: %w", err)
	}
	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return loadOrCreateKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return key, nil
}

// openCurrent opens cfg.File for appending and loads the chain state from
// its last record (or the newest rotated file's).
func (w *Writer) openCurrent() error {
	f, err := os.OpenFile(w.cfg.File, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("audit: %w", err)
	}
	w.f, w.size = f, st.Size()
	w.seq, w.prev = 0, [sha256.Size]byte{}
	w.prevHex = append(w.prevHex[:0], ZeroHash...)

	last, torn, err := lastLine(f, st.Size())
	if err != nil {
		f.Close()
		return fmt.Errorf("audit: %s: %w", w.cfg.File, err)
	}
	if torn {
		// A crash cut the last write short. Keep the evidence, end it with a
		// newline so new records start cleanly; verify reports the torn line.
		w.log.Warn("audit file ends with an incomplete record; continuing after the last complete one", "file", w.cfg.File)
		if _, err := f.Write([]byte{'\n'}); err != nil {
			f.Close()
			return fmt.Errorf("audit: %w", err)
		}
		w.size++
	}
	if last == nil {
		// Empty current file: the chain may continue from the newest rotated file.
		if files := Files(w.cfg.File); len(files) > 1 {
			rf, err := os.Open(files[len(files)-2])
			if err != nil {
				f.Close()
				return fmt.Errorf("audit: %w", err)
			}
			rst, err := rf.Stat()
			if err == nil {
				last, _, err = lastLine(rf, rst.Size())
			}
			rf.Close()
			if err != nil {
				f.Close()
				return fmt.Errorf("audit: %s: %w", files[len(files)-2], err)
			}
		}
	}
	if last != nil {
		var r struct {
			Seq *uint64 `json:"seq"`
		}
		if err := json.Unmarshal(last, &r); err != nil || r.Seq == nil {
			f.Close()
			return fmt.Errorf("audit: %s: the last record is not a valid audit record, so the chain cannot be continued (run `dicomedge audit verify`)", w.cfg.File)
		}
		w.seq = *r.Seq
		w.prev = sha256.Sum256(last)
		w.prevHex = hex.AppendEncode(w.prevHex[:0], w.prev[:])
	}
	detail, err := anchorMismatch(w.cfg.File, w.seq, string(w.prevHex))
	if err != nil {
		f.Close()
		return err
	}
	w.setOut(f)
	if detail != "" {
		// Continuing quietly (a new anchor over the old one) would hide
		// the cut. The trail goes on, so the edge keeps serving, but its
		// first record says what was found, and audit verify fails on it
		// (docs/audit.md). The anchor is rewritten only once that record
		// is synced: a crash before then finds the mismatch again.
		w.log.Error("audit log does not match its head anchor: records were cut or the anchor removed; writing audit.anchor_mismatch",
			"file", w.cfg.File, "detail", detail)
		w.mismatch = detail
		return nil
	}
	return w.writeHead()
}

// anchorMismatch compares the log's end (seq and hash of its last record)
// with the head anchor written by the previous run and describes a
// disagreement: what it found, what it expected. An anchor behind the log
// is not one: the anchor is refreshed after the records it names are
// synced, so a crash can leave it a little behind.
func anchorMismatch(file string, seq uint64, hash string) (string, error) {
	b, err := os.ReadFile(headPath(file))
	if errors.Is(err, os.ErrNotExist) {
		if seq == 0 {
			return "", nil // a new log
		}
		return fmt.Sprintf("found no head anchor %s while the log ends at seq %d (hash %s); expected the anchor of the log's last record: "+
			"it was removed, so records cut from the end cannot be ruled out", headPath(file), seq, hash), nil
	}
	if err != nil {
		return "", fmt.Errorf("audit: %w", err)
	}
	h, err := parseHead(b)
	if err != nil {
		return fmt.Sprintf("found %s unreadable (%d bytes) while the log ends at seq %d (hash %s); expected the anchor of the log's last record",
			headPath(file), len(b), seq, hash), nil
	}
	switch {
	case h.Seq > seq:
		return fmt.Sprintf("found the log ending at seq %d (hash %s); expected seq %d (hash %s) as %s records: %d record(s) were cut from the end",
			seq, hash, h.Seq, h.Hash, headPath(file), h.Seq-seq), nil
	case h.Seq == seq && h.Hash != hash:
		return fmt.Sprintf("found the last record, seq %d, with hash %s; expected hash %s as %s records: the last record was altered or replaced",
			seq, hash, h.Hash, headPath(file)), nil
	}
	return "", nil
}

func readHead(file string) (*head, error) {
	b, err := os.ReadFile(headPath(file))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	h, err := parseHead(b)
	if err != nil {
		return nil, fmt.Errorf("audit: %s: %w", headPath(file), err)
	}
	return h, nil
}

func parseHead(b []byte) (*head, error) {
	var h head
	if err := json.Unmarshal(b, &h); err != nil || len(h.Hash) != 64 {
		return nil, errors.New("not a valid head anchor")
	}
	return &h, nil
}

// lastLine returns the last complete line of f (without its newline) and
// whether bytes follow it that do not end in a newline (a torn write).
func lastLine(f *os.File, size int64) (line []byte, torn bool, err error) {
	if size == 0 {
		return nil, false, nil
	}
	const chunk = 64 << 10
	var tail []byte
	end := size
	for {
		start := max(end-chunk, 0)
		b := make([]byte, end-start)
		if _, err := f.ReadAt(b, start); err != nil && err != io.EOF {
			return nil, false, err
		}
		tail = append(b, tail...)
		end = start
		// Look for the newline ending the last complete line, then the one before it.
		if i := bytes.LastIndexByte(tail, '\n'); i >= 0 {
			torn = i != len(tail)-1
			if j := bytes.LastIndexByte(tail[:i], '\n'); j >= 0 || start == 0 {
				return tail[j+1 : i], torn, nil
			}
		} else if start == 0 {
			return nil, true, nil // one torn line and nothing else
		}
		if int64(len(tail)) > maxLine+chunk {
			return nil, false, errors.New("last record is longer than 1 MiB")
		}
	}
}

// Log queues e for writing and reports whether it was accepted. The writer
// goroutine sets Time, Seq and Prev, so file order is seq order. With
// OnFull "drop" a full queue makes Log return false at once.
func (w *Writer) Log(e Event) bool { return w.log1(queued{e: e}) }

// queued is a record waiting for the writer goroutine; written, when set,
// is closed once the record is in the file (LogWritten).
type queued struct {
	e       Event
	written chan struct{}
}

func (w *Writer) log1(q queued) bool {
	e := q.e
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		w.dropped.Add(1)
		return false
	}
	if !w.drop {
		w.queue <- q
		return true
	}
	select {
	case w.queue <- q:
		return true
	default:
	}
	n := w.dropped.Add(1)
	// Rate-limit the warning to one every 10 s: a full queue means a flood.
	now := time.Now().UnixNano()
	last := w.lastDropLog.Load()
	if now-last >= int64(10*time.Second) && w.lastDropLog.CompareAndSwap(last, now) {
		w.log.Warn("audit queue full: dropping events", "dropped_total", n, "queue_size", cap(w.queue), "event", e.Event)
	}
	return false
}

// LogWritten is Log that returns once the record is written to the file
// (fsync'd on the Fsync interval like every record): a caller about to
// delete the only other trace of what it records (the spool, after a
// delivery) must not leave the record in a queue a crash would lose. It
// waits for ctx at most; false when the record was not written.
func (w *Writer) LogWritten(ctx context.Context, e Event) bool {
	q := queued{e: e, written: make(chan struct{})}
	if !w.log1(q) {
		return false
	}
	select {
	case <-q.written:
		return true
	case <-ctx.Done():
		return false
	}
}

// PatientID formats a raw Patient ID (0010,0020) per PatientIDs: "" for
// omit, "hmac-sha256:<hex>" (keyed, so equal IDs correlate without being
// revealed) for hash, the trimmed value for plain.
func (w *Writer) PatientID(raw string) string {
	raw = strings.TrimRight(raw, " \x00")
	if raw == "" {
		return ""
	}
	switch w.cfg.PatientIDs {
	case "plain":
		return raw
	case "hash":
		m := w.macs.Get().(hash.Hash)
		m.Reset()
		m.Write([]byte(raw))
		var sum [sha256.Size]byte
		out := hex.AppendEncode([]byte("hmac-sha256:"), m.Sum(sum[:0]))
		w.macs.Put(m)
		return string(out)
	default:
		return ""
	}
}

// Forwarder is the syslog forwarder, nil without Config.Syslog.
func (w *Writer) Forwarder() *Forwarder { return w.fwd }

// QueueDepth is the number of events waiting to be written.
func (w *Writer) QueueDepth() int { return len(w.queue) }

// Dropped is the number of events Log refused (queue full in drop mode, or
// after Close).
func (w *Writer) Dropped() uint64 { return w.dropped.Load() }

// WriteErrors counts failed attempts to write or sync the trail. A failed
// batch is kept and retried with back-off, so the queue stalls (Log blocks
// with OnFull "block", drops with "drop") rather than losing records.
func (w *Writer) WriteErrors() uint64 { return w.writeErrors.Load() }

// Failing reports whether the trail cannot be written right now: the last
// write or fsync attempt failed and records wait for a retry. Readiness
// checks use it so that a load balancer stops sending associations that
// could not be audited.
func (w *Writer) Failing() bool { return w.failing.Load() }

// Close stops accepting events, writes everything queued, syncs and closes
// the file. It returns the first write error, if any.
func (w *Writer) Close() error {
	// First stop retrying a failing disk: Log calls blocked on a full queue
	// hold w.mu, and only a writer that moves on can free them.
	w.stopOnce.Do(func() { close(w.stop) })
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.done
		return w.err
	}
	w.closed = true
	close(w.queue)
	w.mu.Unlock()
	<-w.done
	if w.fwd != nil {
		w.fwd.close(w.seq)
	}
	return w.err
}

// run is the writer goroutine: it batches whatever is queued into one write,
// and syncs on the Fsync interval.
func (w *Writer) run() {
	defer close(w.done)
	// Without an fsync interval the ticker only refreshes a stale anchor.
	every := w.cfg.Fsync
	if every <= 0 {
		every = 250 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case q, ok := <-w.queue:
			if !ok {
				w.finish()
				return
			}
			w.add(q)
			// Take what else is already queued, up to a bound, for one write.
		batch:
			for len(w.buf) < 256<<10 {
				select {
				case q, ok := <-w.queue:
					if !ok {
						w.flush()
						w.finish()
						return
					}
					w.add(q)
				default:
					break batch
				}
			}
			w.flush()
			if w.cfg.Fsync <= 0 {
				w.sync()
			}
		case <-t.C:
			w.sync()
			if w.headStale {
				w.updateHead()
			}
		}
	}
}

// add encodes e as the next record into the batch, rotating first when the
// record would push the file past RotateSize.
func (w *Writer) add(q queued) {
	e := q.e
	e.Time = w.cfg.Now()
	e.Seq = w.seq + 1
	e.Prev = string(w.prevHex) // string() copies: prevHex is reused
	start := len(w.buf)
	w.buf = e.appendJSON(w.buf)
	line := w.buf[start:]
	// pending: bytes the current file holds once the batch so far is written.
	if pending := w.size + int64(start); w.cfg.RotateSize > 0 && pending > 0 && pending+int64(len(line))+1 > w.cfg.RotateSize {
		// Write what precedes this record into the old file, then rotate.
		rec := append([]byte(nil), line...)
		w.buf = w.buf[:start]
		w.flush()
		w.rotate()
		w.buf = append(w.buf[:0], rec...)
		line = w.buf
	}
	w.seq = e.Seq
	if w.fwd != nil {
		w.fwd.written(e.Seq)
	}
	w.prev = sha256.Sum256(line)
	w.prevHex = hex.AppendEncode(w.prevHex[:0], w.prev[:])
	w.buf = append(w.buf, '\n')
	if q.written != nil {
		w.waiters = append(w.waiters, q.written)
	}
}

// flush writes the batch. On failure it keeps what was not written and
// retries with back-off: the records are already chained (seq, prev), so
// dropping them would leave a hole that verify reports as tampering, and
// with OnFull "block" the operator chose to stall rather than lose records.
// Once Close is called it tries once more and then gives the batch up.
func (w *Writer) flush() {
	delay := retryMin
	buf := w.buf
	for len(buf) > 0 {
		if w.out == nil {
			w.reopen()
		}
		var n int
		var err error
		if w.out != nil {
			n, err = w.out.Write(buf)
		} else {
			err = errNoFile
		}
		w.size += int64(n)
		buf = buf[n:]
		if n > 0 {
			w.dirty = true
		}
		if err == nil {
			if len(buf) == 0 {
				break
			}
			err = io.ErrShortWrite
		}
		w.writeErrors.Add(1)
		if !w.failing.Swap(true) {
			w.log.Error("audit write failed; keeping the records and retrying", "file", w.cfg.File, "error", err)
		}
		if w.stopping() {
			left := time.Until(w.giveUpAt)
			if left <= 0 {
				if w.err == nil {
					w.err = fmt.Errorf("audit: write %s: %w", w.cfg.File, err)
				}
				w.log.Error("audit write failed at shutdown; records lost", "file", w.cfg.File, "bytes", len(buf), "error", err)
				w.lost = true
				w.buf = w.buf[:0]
				return
			}
			time.Sleep(min(delay, left))
		} else {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-w.stop: // Close: retry now, then until giveUpAt
				t.Stop()
			}
		}
		delay = min(2*delay, retryMax)
	}
	w.buf = w.buf[:0]
	for _, c := range w.waiters {
		close(c)
	}
	clear(w.waiters)
	w.waiters = w.waiters[:0]
	if w.failing.Swap(false) {
		w.log.Info("audit writes succeed again", "file", w.cfg.File)
	}
}

var errNoFile = errors.New("audit file not open")

// stopping reports whether Close was called, and fixes the moment after
// which a failing disk's records are given up.
func (w *Writer) stopping() bool {
	select {
	case <-w.stop:
	default:
		return false
	}
	if w.giveUpAt.IsZero() {
		grace := w.cfg.closeGrace
		if grace <= 0 {
			grace = defaultCloseGrace
		}
		w.giveUpAt = time.Now().Add(grace)
	}
	return true
}

// reopen retries opening the current file after a failed rotation left the
// writer without one.
func (w *Writer) reopen() {
	_ = w.openAppend()
}

// openAppend opens cfg.File for appending and makes it the current file,
// its size taken from the file; on error the writer is left as it was.
func (w *Writer) openAppend() error {
	f, err := os.OpenFile(w.cfg.File, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	st, _ := f.Stat()
	w.f, w.size = f, 0
	if st != nil {
		w.size = st.Size()
	}
	w.setOut(f)
	return nil
}

// setOut routes records to f, through the configured wrapper if any.
func (w *Writer) setOut(f *os.File) {
	w.out = f
	if w.cfg.wrap != nil {
		w.out = w.cfg.wrap(f)
	}
}

func (w *Writer) sync() {
	if !w.dirty {
		return
	}
	w.dirty = false
	if w.f == nil {
		return
	}
	if err := w.f.Sync(); err != nil {
		w.writeErrors.Add(1)
		w.failing.Store(true)
		w.dirty = true // try again on the next tick
		w.log.Error("audit fsync failed", "file", w.cfg.File, "error", err)
		if w.err == nil {
			w.err = fmt.Errorf("audit: fsync %s: %w", w.cfg.File, err)
		}
		return
	}
	w.failing.Store(false)
	if w.lost {
		return // the anchor keeps the last state the file really holds
	}
	// The anchor costs a write, an fsync and a rename: with a per-batch
	// fsync, refresh it at most every 250 ms (finish writes it regardless).
	if time.Since(w.lastHead) < 250*time.Millisecond && w.cfg.Fsync < 250*time.Millisecond {
		w.headStale = true
		return
	}
	w.updateHead()
}

func (w *Writer) updateHead() {
	if err := w.writeHead(); err != nil {
		w.log.Error("audit head update failed", "error", err)
		return
	}
	w.lastHead, w.headStale = time.Now(), false
}

// rotate renames the current file to the next free File.N and starts a new
// current file; the chain (seq, prev) simply continues into it.
func (w *Writer) rotate() {
	w.sync()
	next := 1
	if files := Files(w.cfg.File); len(files) > 1 {
		_, n := rotatedIndex(w.cfg.File, files[len(files)-2])
		next = n + 1
	}
	name := fmt.Sprintf("%s.%d", w.cfg.File, next)
	if err := w.f.Close(); err != nil {
		w.log.Error("audit close before rotation failed", "error", err)
	}
	if err := os.Rename(w.cfg.File, name); err != nil {
		w.log.Error("audit rotation failed; continuing in the same file", "error", err)
	}
	if err := w.openAppend(); err != nil {
		// Nowhere to write: flush keeps the records and retries the open.
		w.log.Error("audit reopen after rotation failed", "error", err)
		w.out, w.f = nil, nil
		return
	}
	// The rename and the new file are entries of the directory: until it
	// is synced a crash may lose them, and with them records fsync'd into
	// the new file that the anchor then claims (a cut the next start would
	// report, of records that were reported synced).
	sync := w.cfg.syncDir
	if sync == nil {
		sync = syncDirectory
	}
	if err := sync(filepath.Dir(w.cfg.File)); err != nil {
		w.log.Error("audit directory fsync after rotation failed", "error", err)
	}
	w.log.Info("audit file rotated", "rotated_to", name, "seq", w.seq)
}

func (w *Writer) finish() {
	w.flush()
	w.sync()
	if w.headStale && !w.lost {
		// With records given up the chain in memory is ahead of the file;
		// the anchor keeps the last state the file really holds.
		w.updateHead()
	}
	if w.lock != nil {
		defer w.lock.Close()
	}
	if w.f != nil {
		if err := w.f.Close(); err != nil && w.err == nil {
			w.err = fmt.Errorf("audit: close %s: %w", w.cfg.File, err)
		}
	}
}

// head is the anchor kept next to the log (File.head): the seq and hash of
// the last record known to be synced. Without it, deleting the newest
// records at a line boundary, or editing the very last record, would leave a
// chain that still verifies. It is replaced atomically after each fsync.
type head struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

func headPath(file string) string { return file + ".head" }

func (w *Writer) writeHead() error {
	if w.f == nil {
		return nil
	}
	b, _ := json.Marshal(head{Seq: w.seq, Hash: string(w.prevHex)})
	// The batch in the file may be ahead of the last synced state only
	// between a flush and its sync; sync() calls us after f.Sync, and
	// openCurrent before any write, so head never claims unsynced records.
	tmp := headPath(w.cfg.File) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, headPath(w.cfg.File))
}
