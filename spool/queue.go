package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dicomedge/dicomedge/audit"
)

// Entry is one instance in a backend's queue, failed/ or expired/.
type Entry struct {
	ID   string // the file name without extension; sorts in arrival order
	Path string // the Part 10 file
	Meta Meta
}

// Where an entry is.
const (
	Queued  = dirQueue
	Failed  = dirFailed
	Expired = dirExpired
)

// List returns backend's entries in where (Queued, Failed or Expired), in
// arrival order. Entries whose sidecar cannot be read are listed with what
// the file name tells.
func (s *Spool) List(backend, where string) ([]Entry, error) { return s.list(backend, where, 0) }

// list is List of at most limit entries (0 = all); only their headers
// are read, so the forwarder's look at a long queue stays cheap.
func (s *Spool) list(backend, where string, limit int) ([]Entry, error) {
	n := 0
	return s.listWhile(backend, where, func(string) bool {
		n++
		return limit <= 0 || n <= limit
	})
}

// listWhile is List of the entries, in order, up to the first whose ID
// keep refuses.
func (s *Spool) listWhile(backend, where string, keep func(id string) bool) ([]Entry, error) {
	dir := filepath.Join(s.cfg.Dir, escapeName(backend), where)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	var out []Entry
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), extDICOM)
		if !ok {
			continue
		}
		if !keep(id) {
			break // os.ReadDir sorts by name: arrival order
		}
		en := Entry{ID: id, Path: filepath.Join(dir, e.Name())}
		readMeta(&en)
		if b, err := os.ReadFile(filepath.Join(dir, id+extMeta)); err == nil {
			// failed/ and expired/: why, and how often it was tried.
			var why Meta
			if json.Unmarshal(b, &why) == nil {
				en.Meta.LastError, en.Meta.Attempts = why.LastError, why.Attempts
			}
		}
		en.Meta.Backend = backend
		if fi, err := e.Info(); err == nil {
			en.Meta.Size = fi.Size()
		}
		if en.Meta.Received.IsZero() {
			en.Meta.Received = idTime(id)
		}
		out = append(out, en)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// readMeta fills e.Meta from the file's File Meta (the edge's Private
// Information); a file without it keeps what its name tells.
func readMeta(e *Entry) {
	f, err := os.Open(e.Path)
	if err != nil {
		return
	}
	defer f.Close()
	fm, err := ReadFileMeta(f)
	if err != nil {
		return
	}
	if fm.Meta != nil {
		e.Meta = *fm.Meta
	}
	e.Meta.SOPClass, e.Meta.SOPInstance, e.Meta.TransferSyntax = fm.SOPClass, fm.SOPInstance, fm.TransferSyntax
}

// State is what a forwarder last saw, kept in the backend's state.json
// for `dicomedge spool list`.
type State struct {
	LastError     string    `json:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_time,omitzero"`
	LastSuccess   time.Time `json:"last_success,omitzero"`
	NextAttempt   time.Time `json:"next_attempt,omitzero"`
}

// Stats is one backend's queue at a glance.
type Stats struct {
	Backend   string
	Instances int
	Bytes     int64
	Oldest    time.Time // zero when the queue is empty
	Failed    int
	Expired   int
	State     State
}

// Stats returns the figures of every backend with a directory.
func (s *Spool) Stats() ([]Stats, error) {
	names, err := s.Backends()
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []Stats
	for _, b := range names {
		st, err := s.BackendStats(b)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// BackendStats returns one backend's figures.
func (s *Spool) BackendStats(backend string) (Stats, error) {
	st := Stats{Backend: backend}
	q, err := s.List(backend, Queued)
	if err != nil {
		return st, err
	}
	st.Instances = len(q)
	for _, e := range q {
		st.Bytes += e.Meta.Size
		if r := e.Meta.Received; !r.IsZero() && (st.Oldest.IsZero() || r.Before(st.Oldest)) {
			st.Oldest = r
		}
	}
	st.Failed = countDICOM(filepath.Join(s.cfg.Dir, escapeName(backend), dirFailed))
	st.Expired = countDICOM(filepath.Join(s.cfg.Dir, escapeName(backend), dirExpired))
	if b, err := os.ReadFile(filepath.Join(s.cfg.Dir, escapeName(backend), stateFile)); err == nil {
		_ = json.Unmarshal(b, &st.State)
	}
	return st, nil
}

func countDICOM(dir string) int {
	ents, _ := os.ReadDir(dir)
	n := 0
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), extDICOM) {
			n++
		}
	}
	return n
}

// setState writes backend's state.json (temporary file and rename: a
// reader never sees half of it; it is advisory, so not fsync'd).
func (s *Spool) setState(backend string, st State) {
	b, err := json.Marshal(st)
	if err != nil {
		return
	}
	root := filepath.Join(s.cfg.Dir, escapeName(backend))
	tmp := filepath.Join(root, dirTmp, stateFile)
	if err := os.WriteFile(tmp, b, fileMode); err == nil {
		_ = os.Rename(tmp, filepath.Join(root, stateFile))
	}
}

// move takes an entry out of the queue into where, recording why in its
// sidecar, and fsyncs the target directory.
func (s *Spool) move(e *Entry, where, why string) error {
	root := filepath.Join(s.cfg.Dir, escapeName(e.Meta.Backend))
	from := filepath.Dir(e.Path)
	to := filepath.Join(root, where)
	e.Meta.LastError = why
	if where == dirQueue {
		// Back into the queue: the reason no longer applies.
		_ = os.Remove(filepath.Join(from, e.ID+extMeta))
	} else if b, err := json.Marshal(Meta{LastError: why, Attempts: e.Meta.Attempts}); err == nil {
		// The reason first, fsync'd, then the file: a crash between
		// the two leaves a sidecar without its file, removed at start.
		tmp := filepath.Join(root, dirTmp, e.ID+extMeta)
		if writeFileSync(tmp, b) == nil {
			_ = os.Rename(tmp, filepath.Join(to, e.ID+extMeta))
		} else {
			_ = os.Remove(tmp)
		}
	}
	id := e.ID
	if where == dirQueue {
		// Back in the queue it is a new arrival, behind what is queued
		// (in the order retried): max_age counts from now, and the
		// forwarder's order stays the order of the names.
		id = s.newID(s.cfg.Now())
	}
	if err := os.Rename(e.Path, filepath.Join(to, id+extDICOM)); err != nil {
		if where != dirQueue {
			// Not moved (gone meanwhile): no sidecar without its file.
			_ = os.Remove(filepath.Join(to, e.ID+extMeta))
		}
		return fmt.Errorf("spool: %w", err)
	}
	syncDir(to)
	if from == filepath.Join(root, dirQueue) {
		s.queued.Add(-e.Meta.Size)
	}
	e.ID, e.Path = id, filepath.Join(to, id+extDICOM)
	return nil
}

// remove deletes a queued entry (delivered or purged).
func (s *Spool) remove(e *Entry) error {
	queued := filepath.Base(filepath.Dir(e.Path)) == dirQueue
	gone, err := s.recycle(s.openDirOf(e.Path), e.Path)
	if err != nil {
		return err
	}
	_ = os.Remove(strings.TrimSuffix(e.Path, extDICOM) + extMeta)
	// Gone already (delivered and purged, or expired, at once): its bytes
	// were subtracted by whoever took it.
	if queued && gone {
		s.queued.Add(-e.Meta.Size)
	}
	return nil
}

func syncDir(path string) {
	if d, err := os.Open(path); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// Expire moves every queued instance older than max_age to expired/ and
// audits spool.expired for each; it returns how many moved.
func (s *Spool) Expire() (int, error) {
	if s.cfg.MaxAge <= 0 {
		return 0, nil
	}
	names, err := s.Backends()
	if err != nil {
		return 0, err
	}
	cut := s.cfg.Now().Add(-s.cfg.MaxAge)
	n := 0
	for _, b := range names {
		// Names begin with the arrival time and sort by it: only the
		// expired head of the queue is opened.
		q, err := s.listWhile(b, Queued, func(id string) bool { return idTime(id).Before(cut) })
		if err != nil {
			return n, err
		}
		for i := range q {
			e := &q[i]
			if e.Meta.Received.IsZero() || !e.Meta.Received.Before(cut) {
				continue
			}
			why := fmt.Sprintf("older than max_age %s (received %s)", s.cfg.MaxAge, e.Meta.Received.Format(time.RFC3339))
			if err := s.move(e, dirExpired, why); err != nil {
				return n, err
			}
			s.audit(audit.EventSpoolExpired, &e.Meta, why)
			n++
		}
	}
	return n, nil
}

// Retry moves backend's failed/ (and, with expired, expired/) instances
// back into the queue, in their original order. "" = every backend.
func (s *Spool) Retry(backend string, expired bool) (int, error) {
	names := []string{backend}
	if backend == "" {
		var err error
		if names, err = s.Backends(); err != nil {
			return 0, err
		}
	}
	n := 0
	for _, b := range names {
		wheres := []string{dirFailed}
		if expired {
			wheres = append(wheres, dirExpired)
		}
		for _, where := range wheres {
			list, err := s.List(b, where)
			if err != nil {
				return n, err
			}
			for i := range list {
				e := &list[i]
				e.Meta.Attempts, e.Meta.LastError = 0, ""
				if err := s.move(e, dirQueue, ""); err != nil {
					return n, err
				}
				s.queued.Add(e.Meta.Size)
				n++
			}
		}
		if d, err := s.dir(b); err == nil {
			select {
			case d.wake <- struct{}{}:
			default:
			}
		}
	}
	return n, nil
}

// Purge removes backend's instances ("" = every backend) received before
// olderThan ago (0 = all) from the queue, failed/ and expired/, auditing
// spool.purged for each.
func (s *Spool) Purge(backend string, olderThan time.Duration) (int, error) {
	names := []string{backend}
	if backend == "" {
		var err error
		if names, err = s.Backends(); err != nil {
			return 0, err
		}
	}
	cut := s.cfg.Now().Add(-olderThan)
	n := 0
	for _, b := range names {
		for _, where := range []string{dirQueue, dirFailed, dirExpired} {
			list, err := s.List(b, where)
			if err != nil {
				return n, err
			}
			for i := range list {
				e := &list[i]
				if olderThan > 0 && !e.Meta.Received.Before(cut) {
					continue
				}
				if err := s.remove(e); err != nil {
					return n, err
				}
				detail := "purged from " + where
				if olderThan > 0 {
					detail += fmt.Sprintf(" (older than %s)", olderThan)
				}
				s.audit(audit.EventSpoolPurged, &e.Meta, detail)
				n++
			}
		}
		// The queue's fsync, then the files purged from it are emptied
		// (recycle.go).
		if s.openDir(b) != nil {
			if err := s.settle(b); err != nil {
				return n, err
			}
		} else {
			syncDir(filepath.Join(s.cfg.Dir, escapeName(b), dirQueue))
		}
	}
	return n, nil
}

// Counts is a backend's queue depth, bytes and oldest arrival, from the
// directory listing alone (names begin with the arrival time): cheap
// enough for every metrics scrape.
func (s *Spool) Counts(backend string) (n int, bytes int64, oldest time.Time) {
	ents, _ := os.ReadDir(filepath.Join(s.cfg.Dir, escapeName(backend), dirQueue))
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), extDICOM)
		if !ok {
			continue
		}
		if n == 0 {
			oldest = idTime(id)
		}
		n++
		if fi, err := e.Info(); err == nil {
			bytes += fi.Size()
		}
	}
	return n, bytes, oldest
}

// idTime is the arrival time an entry's name begins with.
func idTime(id string) time.Time {
	if len(id) < 20 {
		return time.Time{}
	}
	ns, err := strconv.ParseInt(id[:20], 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}
