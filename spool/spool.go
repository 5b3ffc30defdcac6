package spool

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dicomedge/dicomedge/audit"
)

// Directory and file names of the layout (docs/spool.md).
const (
	dirQueue   = "queue"
	dirFailed  = "failed"
	dirExpired = "expired"
	dirTmp     = "tmp"
	// pendingPrefix names an unnamed file linked into queue/ and not yet
	// committed: passed over by every reader, removed at start.
	pendingPrefix = ".pending-"
	extDICOM      = ".dcm"
	extMeta       = ".json"
	stateFile     = "state.json"
	// purgeRequest is how `dicomedge spool purge` asks a running edge,
	// which holds the audit log, to purge and audit on its behalf.
	purgeRequest = "purge.request"
	purgeResult  = "purge.result"
	dirMode      = 0o700
	fileMode     = 0o600
)

// ErrFull is returned by Create and Writer.Write when the spool holds
// max_size bytes: the sender hears 0xA700 (out of resources).
var ErrFull = errors.New("spool: full (max_size reached)")

// Config configures a Spool.
type Config struct {
	Dir     string
	MaxSize int64         // bytes, all backends together; 0 = no bound
	MaxAge  time.Duration // 0 = never expire
	// Audit records spool.* events; nil records nothing.
	Audit func(audit.Event)
	// Now replaces time.Now (tests).
	Now func() time.Time
}

// Meta is what the edge knows of an instance besides its bytes: kept as
// JSON in the Part 10 file's File Meta (Private Information (0002,0102),
// which leaves the edge with no instance); why an instance failed or
// expired is added in a sidecar beside it in failed/ or expired/.
type Meta struct {
	Backend        string    `json:"backend"`
	SOPClass       string    `json:"sop_class"`
	SOPInstance    string    `json:"sop_instance"`
	TransferSyntax string    `json:"transfer_syntax"`
	CallingAE      string    `json:"calling_ae,omitempty"`
	CalledAE       string    `json:"called_ae,omitempty"`
	Listener       string    `json:"listener,omitempty"`
	Client         string    `json:"client,omitempty"` // certificate fingerprint or source address
	Rule           string    `json:"rule,omitempty"`
	Received       time.Time `json:"received"`
	Size           int64     `json:"size,omitempty"` // bytes of the whole Part 10 file (from the file)
	// Attempts and LastError are kept in failed/ and expired/ copies, so an
	// operator sees why.
	Attempts  int    `json:"attempts,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

// Spool is the directory of per-backend queues. It is safe for concurrent
// use; one edge process owns a spool directory.
type Spool struct {
	cfg Config
	// queued is the bytes in queue/ of every backend; inflight those of
	// writes in progress. max_size bounds their sum.
	queued, inflight atomic.Int64
	seq              atomic.Uint64
	mu               sync.Mutex
	dirs             map[string]*backendDir
	start            string // per-process prefix of names, so two runs never collide
	// fileSyncs and dirSyncs count fsyncs of instance files and of queue
	// directories: the benchmark shows the group commit with them.
	fileSyncs, dirSyncs atomic.Int64
	// unnamed: writers open files with no name (O_TMPFILE) and link them
	// into queue/; else they create them in tmp/ and rename them.
	unnamed bool
}

// SyncCounts returns how many instance files and queue directories were
// fsync'd since Open.
func (s *Spool) SyncCounts() (files, dirs int64) { return s.fileSyncs.Load(), s.dirSyncs.Load() }

// backendDir is one backend's directories and the group committer of its
// queue directory.
type backendDir struct {
	name, root string
	sync       *dirSyncer
	// wake is signalled when an instance is committed, so an idle
	// forwarder starts at once.
	wake chan struct{}
	// free is the pool of spent files in free/, truncated, that new
	// instances are written into, oldest first; sending the queued files
	// the forwarder is reading (recycle.go).
	freeMu  sync.Mutex
	free    []spent
	sending map[string]bool
}

// Open creates the spool directory (0700) when missing, removes what a
// crash left half written, and counts the queued bytes.
func Open(cfg Config) (*Spool, error) {
	if cfg.Dir == "" {
		return nil, errors.New("spool: no directory")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := os.MkdirAll(cfg.Dir, dirMode); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	// An existing directory keeps its mode unless it is looser than 0700.
	if fi, err := os.Stat(cfg.Dir); err == nil && fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(cfg.Dir, dirMode); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
	}
	s := &Spool{cfg: cfg, dirs: map[string]*backendDir{}}
	s.start = fmt.Sprintf("%d", cfg.Now().UnixNano())
	names, err := s.Backends()
	if err != nil {
		return nil, err
	}
	var total int64
	for _, b := range names {
		d, err := s.dir(b)
		if err != nil {
			return nil, err
		}
		// The pool's names are checked against every file the queues
		// hold (recycle.go): recover, which lists them anyway, collects
		// their inodes when there is a pool to check.
		free, err := os.ReadDir(filepath.Join(d.root, dirFree))
		if err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		var held map[uint64]bool
		if len(free) > 0 {
			held = map[uint64]bool{}
		}
		n, err := d.recover(held)
		if err != nil {
			return nil, err
		}
		d.loadFree(free, held)
		total += n
	}
	s.queued.Store(total)
	s.unnamed = probeUnnamed(cfg.Dir)
	return s, nil
}

// probeUnnamed reports whether dir's file system makes and links unnamed
// files (Linux O_TMPFILE, and /proc or AT_EMPTY_PATH to link them).
func probeUnnamed(dir string) bool {
	f, err := openUnnamed(dir)
	if err != nil {
		return false
	}
	defer f.Close()
	name := filepath.Join(dir, fmt.Sprintf(".probe-%d", os.Getpid()))
	if err := linkUnnamed(f, name); err != nil {
		return false
	}
	return os.Remove(name) == nil
}

// Inspect opens an existing spool directory for the command line (list,
// retry, purge) beside a running edge: nothing is created or recovered.
func Inspect(dir string, maxSize int64, maxAge time.Duration) (*Spool, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &Spool{cfg: Config{Dir: dir, MaxSize: maxSize, MaxAge: maxAge, Now: time.Now}, dirs: map[string]*backendDir{}}
	s.start = fmt.Sprintf("%d", time.Now().UnixNano())
	s.recount()
	return s, nil
}

// SetAudit sets where spool.* records go (the command line's purge).
func (s *Spool) SetAudit(f func(audit.Event)) { s.cfg.Audit = f }

// Dir is the spool's directory.
func (s *Spool) Dir() string { return s.cfg.Dir }

// Close stops the directory committers.
func (s *Spool) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.dirs {
		d.sync.close()
	}
	s.dirs = map[string]*backendDir{}
}

// escapeName makes a backend name a safe directory name: letters, digits,
// '-', '_' and '.' stay; every other byte becomes %XX. "." and ".." never
// reach the file system as themselves.
func escapeName(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || (c == '.' && i > 0) {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func unescapeName(s string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		var c byte
		if _, err := fmt.Sscanf(s[i+1:i+3], "%02X", &c); err != nil {
			return "", false
		}
		b.WriteByte(c)
		i += 2
	}
	return b.String(), true
}

// Backends lists the backends that have a directory in the spool.
func (s *Spool) Backends() ([]string, error) {
	ents, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if n, ok := unescapeName(e.Name()); ok {
			out = append(out, n)
		}
	}
	return out, nil
}

// dir returns backend's directories, creating them (0700) on first use.
func (s *Spool) dir(backend string) (*backendDir, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.dirs[backend]; d != nil {
		return d, nil
	}
	root := filepath.Join(s.cfg.Dir, escapeName(backend))
	for _, sub := range []string{"", dirQueue, dirFailed, dirExpired, dirTmp, dirFree} {
		if err := os.MkdirAll(filepath.Join(root, sub), dirMode); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
	}
	syncer, err := newDirSyncer(filepath.Join(root, dirQueue), &s.dirSyncs)
	if err != nil {
		return nil, err
	}
	d := &backendDir{name: backend, root: root, sync: syncer, wake: make(chan struct{}, 1)}
	s.dirs[backend] = d
	return d, nil
}

// recover removes what a crash left: temporary and pending files, and
// sidecars whose Part 10 file is gone (a crash in the middle of a move).
// It returns the bytes queued; held, unless nil, gets the inode of every
// file left in queue/, failed/ and expired/.
func (d *backendDir) recover(held map[uint64]bool) (int64, error) {
	tmp := filepath.Join(d.root, dirTmp)
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	for _, e := range ents {
		_ = os.Remove(filepath.Join(tmp, e.Name()))
	}
	var total int64
	for _, sub := range []string{dirQueue, dirFailed, dirExpired} {
		dir := filepath.Join(d.root, sub)
		ents, err := os.ReadDir(dir)
		if err != nil {
			return 0, fmt.Errorf("spool: %w", err)
		}
		have := map[string]bool{}
		for _, e := range ents {
			dcm := strings.HasSuffix(e.Name(), extDICOM)
			if dcm {
				have[strings.TrimSuffix(e.Name(), extDICOM)] = true
			}
			if !(dcm && sub == dirQueue) && held == nil {
				continue
			}
			fi, err := e.Info()
			if err != nil {
				continue
			}
			if dcm && sub == dirQueue {
				total += fi.Size()
			}
			if ino, _, ok := fileID(fi); ok && held != nil {
				held[ino] = true
			}
		}
		for _, e := range ents {
			if id, ok := strings.CutSuffix(e.Name(), extMeta); ok && !have[id] || strings.HasPrefix(e.Name(), pendingPrefix) {
				// A sidecar whose instance is gone, or an instance never
				// committed.
				_ = os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	return total, nil
}

// Used is the bytes the queues hold, with writes in progress.
func (s *Spool) Used() int64 { return s.queued.Load() + s.inflight.Load() }

// Full reports whether a new instance would be refused now.
func (s *Spool) Full() bool { return s.cfg.MaxSize > 0 && s.Used() >= s.cfg.MaxSize }

func (s *Spool) audit(name string, m *Meta, detail string) {
	if s.cfg.Audit == nil {
		return
	}
	s.cfg.Audit(audit.Event{Event: name, Backend: m.Backend, SOPInstance: m.SOPInstance, SOPClass: m.SOPClass,
		CallingAE: m.CallingAE, CalledAE: m.CalledAE, Listener: m.Listener, Rule: m.Rule, Detail: detail})
}

// newID names an arrival at now: names sort in arrival order, the time
// first, then the process start and a sequence number, all fixed width.
func (s *Spool) newID(now time.Time) string {
	return fmt.Sprintf("%020d-%s-%012d", now.UnixNano(), s.start, s.seq.Add(1))
}

// Writer streams one instance into backend's queue. Nothing it wrote is
// visible to a forwarder, or survives a crash, until Commit returns nil.
type Writer struct {
	s       *Spool
	d       *backendDir
	meta    Meta
	id      string
	f       *os.File
	path    string // f's name, in free/, tmp/ or queue/ (pending); "" while it has none (unnamed)
	bw      *bufio.Writer
	n       int64 // bytes written, counted in s.inflight until committed
	err     error
	closed  bool
	started time.Time
}

// writeBuffer is what a Writer holds of an instance: the data set streams
// through it to the file.
const writeBuffer = 64 << 10

var bufPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBuffer) }}

// Create starts an instance for backend. m names its SOP class, instance
// and transfer syntax; the File Meta is written from it. ErrFull when the
// spool is at max_size.
func (s *Spool) Create(backend string, m Meta) (*Writer, error) {
	if s.Full() {
		return nil, ErrFull
	}
	d, err := s.dir(backend)
	if err != nil {
		return nil, err
	}
	m.Backend = backend
	now := s.cfg.Now()
	if m.Received.IsZero() {
		m.Received = now.UTC()
	}
	id := s.newID(now)
	// A spent file from the pool first, then a new one: unnamed where the
	// system makes them, else named in tmp/.
	f := d.takeFree()
	switch {
	case f != nil:
	case s.unnamed:
		f, err = openUnnamed(filepath.Join(d.root, dirQueue))
	default:
		f, err = os.OpenFile(filepath.Join(d.root, dirTmp, id+extDICOM), os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
	}
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	bw := bufPool.Get().(*bufio.Writer)
	bw.Reset(f)
	w := &Writer{s: s, d: d, meta: m, id: id, f: f, bw: bw, started: now}
	if f.Name() != filepath.Join(d.root, dirQueue) { // an unnamed file's is its directory's
		w.path = f.Name()
	}
	if _, err := w.Write(fileMeta(&m)); err != nil {
		w.Abort()
		return nil, err
	}
	return w, nil
}

// Write appends data-set bytes. Past max_size it fails with ErrFull.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n := int64(len(p))
	if max := w.s.cfg.MaxSize; max > 0 && w.s.inflight.Add(n)+w.s.queued.Load() > max {
		w.s.inflight.Add(-n)
		w.err = ErrFull
		return 0, w.err
	} else if max <= 0 {
		w.s.inflight.Add(n)
	}
	w.n += n
	if _, err := w.bw.Write(p); err != nil {
		w.err = fmt.Errorf("spool: %w", err)
		return 0, w.err
	}
	return len(p), nil
}

// Size is the bytes written so far, File Meta included.
func (w *Writer) Size() int64 { return w.n }

// Abort drops the instance.
func (w *Writer) Abort() {
	if w.closed {
		return
	}
	w.closed = true
	w.release()
	w.f.Close()
	if w.path != "" {
		_ = os.Remove(w.path)
	}
	w.s.inflight.Add(-w.n)
}

func (w *Writer) release() {
	w.bw.Reset(nil)
	bufPool.Put(w.bw)
	w.bw = nil
}

// Commit makes the instance durable and visible to the forwarder: flush,
// name an unnamed file in queue/ as pending, fsync the file (its File Meta
// holds the Meta), rename it into queue/ as an instance (from free/, tmp/
// or its pending name), fsync queue/ (shared with the writers committing
// at the same time). Only after a nil return may the sender be told
// success; on error nothing was queued.
func (w *Writer) Commit() error {
	if w.closed {
		return errors.New("spool: writer already closed")
	}
	if w.err != nil {
		w.Abort()
		return w.err
	}
	fail := func(err error) error {
		w.Abort()
		return fmt.Errorf("spool: %w", err)
	}
	if err := w.bw.Flush(); err != nil {
		return fail(err)
	}
	if w.path == "" {
		// An unnamed file gets a name the forwarder passes over before its
		// fsync, so that the fsync writes the link as well: on ext4
		// without a journal an fsync of the directory does not write the
		// file's link count, and after a crash its queue/ name could
		// point at a file with none.
		pending := filepath.Join(w.d.root, dirQueue, pendingPrefix+w.id)
		if err := linkUnnamed(w.f, pending); err != nil {
			return fail(err)
		}
		w.path = pending
	}
	if err := w.f.Sync(); err != nil {
		return fail(err)
	}
	w.s.fileSyncs.Add(1)
	w.meta.Size = w.n
	// The file's own fsync covers what the edge knows of it: the Meta is
	// in its File Meta (Private Information, part10.go).
	q := filepath.Join(w.d.root, dirQueue, w.id)
	if err := os.Rename(w.path, q+extDICOM); err != nil {
		return fail(err)
	}
	w.closed = true
	w.release()
	w.f.Close()
	w.s.inflight.Add(-w.n)
	w.s.queued.Add(w.n)
	if err := w.d.sync.sync(); err != nil {
		// The rename may or may not survive a crash: it is not
		// acknowledged, and the sender resends the same SOP Instance UID
		// (the receiver keeps one).
		// Its bytes are freed by whoever takes it: here, or the forwarder
		// (or an expiry or a purge) that found it in queue/ meanwhile.
		if os.Remove(q+extDICOM) == nil {
			w.s.queued.Add(-w.n)
		}
		return fmt.Errorf("spool: %w", err)
	}
	select {
	case w.d.wake <- struct{}{}:
	default:
	}
	w.s.audit(audit.EventSpoolStored, &w.meta, fmt.Sprintf("%d bytes", w.n))
	return nil
}

// writeFileSync writes b to a new file (0600) and fsyncs it.
func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
