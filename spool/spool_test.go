package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/audit"
)

type recorder struct {
	mu     sync.Mutex
	events []audit.Event
}

func (r *recorder) log(e audit.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) count(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Event == name {
			n++
		}
	}
	return n
}

func openTest(t *testing.T, cfg Config) (*Spool, *recorder) {
	t.Helper()
	rec := &recorder{}
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(t.TempDir(), "spool")
	}
	cfg.Audit = rec.log
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, rec
}

func meta(i int) Meta {
	return Meta{SOPClass: "1.2.840.10008.5.1.4.1.1.7", SOPInstance: fmt.Sprintf("2.25.1.%d", i),
		TransferSyntax: "1.2.840.10008.1.2.1", CallingAE: "MODALITY", CalledAE: "PACS"}
}

func store(t *testing.T, s *Spool, backend string, i int, data []byte) {
	t.Helper()
	w, err := s.Create(backend, meta(i))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

func TestCommitWritesPart10InArrivalOrderWithPrivateModes(t *testing.T) {
	s, rec := openTest(t, Config{})
	for i := range 5 {
		store(t, s, "pacs", i, bytes.Repeat([]byte{byte(i)}, 1000+i))
	}
	list, err := s.List("pacs", Queued)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 5 {
		t.Fatalf("queued %d, want 5", len(list))
	}
	for i, e := range list {
		if e.Meta.SOPInstance != meta(i).SOPInstance {
			t.Errorf("entry %d is %s: not in arrival order", i, e.Meta.SOPInstance)
		}
		f, err := os.Open(e.Path)
		if err != nil {
			t.Fatal(err)
		}
		fm, err := ReadFileMeta(f)
		if err != nil {
			t.Fatal(err)
		}
		if fm.SOPInstance != e.Meta.SOPInstance || fm.TransferSyntax != "1.2.840.10008.1.2.1" || fm.SOPClass != e.Meta.SOPClass {
			t.Errorf("file meta %+v does not match %+v", fm, e.Meta)
		}
		b, _ := os.ReadFile(e.Path)
		if want := bytes.Repeat([]byte{byte(i)}, 1000+i); !bytes.Equal(b[fm.DataOffset:], want) {
			t.Errorf("entry %d: data set differs", i)
		}
		if int64(len(b)) != e.Meta.Size {
			t.Errorf("entry %d: sidecar size %d, file %d", i, e.Meta.Size, len(b))
		}
		f.Close()
		if fm.Meta == nil || fm.Meta.CallingAE != "MODALITY" || fm.Meta.CalledAE != "PACS" || fm.Meta.Received.IsZero() {
			t.Errorf("entry %d: the File Meta's Private Information is %+v", i, fm.Meta)
		}
		if pub := PublicFileMeta(fm); bytes.Contains(pub, []byte(PrivateInfoCreatorUID)) {
			t.Error("the public File Meta carries the edge's Private Information")
		}
		for _, p := range []string{e.Path} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s mode %v, want 0600", p, fi.Mode().Perm())
			}
		}
	}
	for _, d := range []string{s.Dir(), filepath.Join(s.Dir(), "pacs"), filepath.Join(s.Dir(), "pacs", dirQueue)} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("%s mode %v, want 0700", d, fi.Mode().Perm())
		}
	}
	if n := rec.count(audit.EventSpoolStored); n != 5 {
		t.Errorf("%d spool.stored records, want 5", n)
	}
}

func TestAbortedAndCrashedWritesLeaveNothingQueued(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s, _ := openTest(t, Config{Dir: dir})
	w, err := s.Create("pacs", meta(1))
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("half"))
	w.Abort()
	// A crash mid-write leaves a temporary file; one in the middle of a
	// move to failed/ a sidecar without its Part 10 file.
	w2, _ := s.Create("pacs", meta(2))
	w2.Write([]byte("crash"))
	w2.bw.Flush()
	os.WriteFile(filepath.Join(dir, "pacs", dirFailed, "00000000000000000001-x-000000000001"+extMeta), []byte("{}"), 0o600)
	store(t, s, "pacs", 3, []byte("whole"))
	s.Close()

	s2, _ := openTest(t, Config{Dir: dir})
	list, _ := s2.List("pacs", Queued)
	if len(list) != 1 || list[0].Meta.SOPInstance != meta(3).SOPInstance {
		t.Fatalf("after restart queued %+v, want only the committed instance", list)
	}
	for _, sub := range []string{dirTmp, dirFailed} {
		ents, _ := os.ReadDir(filepath.Join(dir, "pacs", sub))
		for _, e := range ents {
			if sub == dirTmp || filepath.Ext(e.Name()) == extMeta {
				t.Errorf("left over after recovery: %s/%s", sub, e.Name())
			}
		}
	}
	if s2.Used() != list[0].Meta.Size {
		t.Errorf("used %d, want %d", s2.Used(), list[0].Meta.Size)
	}
}

func TestFullSpoolRefusesAndAcceptsOnceDrained(t *testing.T) {
	s, _ := openTest(t, Config{MaxSize: 6000})
	store(t, s, "pacs", 1, make([]byte, 3000))
	w, err := s.Create("pacs", meta(2))
	if err != nil {
		t.Fatal(err) // 3,6xx of 6,000 used: still room to start
	}
	if _, err := w.Write(make([]byte, 3000)); !errors.Is(err, ErrFull) {
		t.Fatalf("write past max_size: %v, want ErrFull", err)
	}
	if err := w.Commit(); !errors.Is(err, ErrFull) {
		t.Fatalf("commit of a refused write: %v, want ErrFull", err)
	}
	store(t, s, "pacs", 3, make([]byte, 1500))
	if _, err := s.Create("pacs", meta(4)); !errors.Is(err, ErrFull) {
		t.Fatalf("create at max_size: %v, want ErrFull", err)
	}
	list, _ := s.List("pacs", Queued)
	for i := range list {
		if err := s.remove(&list[i]); err != nil {
			t.Fatal(err)
		}
	}
	if s.Used() != 0 {
		t.Fatalf("used %d after draining, want 0", s.Used())
	}
	store(t, s, "pacs", 5, make([]byte, 3000))
}

func TestExpiryMovesAndAudits(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	s, rec := openTest(t, Config{MaxAge: time.Hour, Now: clock})
	store(t, s, "pacs", 1, []byte("old"))
	now = now.Add(50 * time.Minute)
	store(t, s, "pacs", 2, []byte("new"))
	now = now.Add(20 * time.Minute)
	n, err := s.Expire()
	if err != nil || n != 1 {
		t.Fatalf("Expire = %d, %v; want 1", n, err)
	}
	q, _ := s.List("pacs", Queued)
	x, _ := s.List("pacs", Expired)
	if len(q) != 1 || len(x) != 1 || x[0].Meta.SOPInstance != meta(1).SOPInstance {
		t.Fatalf("queued %d expired %d", len(q), len(x))
	}
	if x[0].Meta.LastError == "" {
		t.Error("expired sidecar does not say why")
	}
	if rec.count(audit.EventSpoolExpired) != 1 {
		t.Errorf("spool.expired records: %d, want 1", rec.count(audit.EventSpoolExpired))
	}
	if n, _ := s.Retry("pacs", true); n != 1 {
		t.Errorf("retry moved %d, want 1", n)
	}
	// Retried, it is a new arrival: behind what is queued, and not
	// expired again at once.
	if q, _ := s.List("pacs", Queued); len(q) != 2 || q[1].Meta.SOPInstance != meta(1).SOPInstance {
		t.Errorf("after retry the queue is %d long, the retried instance last expected", len(q))
	}
	if n, _ := s.Expire(); n != 0 {
		t.Errorf("the retried instance expired again at once")
	}
}

func TestPurgeAuditsEachInstance(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	s, rec := openTest(t, Config{Now: func() time.Time { return now }})
	store(t, s, "pacs", 1, []byte("a"))
	store(t, s, "cloud", 2, []byte("b"))
	now = now.Add(2 * time.Hour)
	store(t, s, "pacs", 3, []byte("c"))
	n, err := s.Purge("pacs", time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("Purge = %d, %v; want 1", n, err)
	}
	if rec.count(audit.EventSpoolPurged) != 1 {
		t.Fatalf("spool.purged records %d, want 1", rec.count(audit.EventSpoolPurged))
	}
	if n, _ := s.Purge("", 0); n != 2 {
		t.Fatalf("purge of everything removed %d, want 2", n)
	}
	if s.Used() != 0 {
		t.Errorf("used %d after purge", s.Used())
	}
}

func TestPurgeRequestServedByTheRunningEdge(t *testing.T) {
	s, rec := openTest(t, Config{})
	store(t, s, "pacs", 1, []byte("a"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Maintain(ctx, 50*time.Millisecond, nil)
	n, err := RequestPurge(s.Dir(), "pacs", 0, 5*time.Second)
	if err != nil || n != 1 {
		t.Fatalf("RequestPurge = %d, %v", n, err)
	}
	if rec.count(audit.EventSpoolPurged) != 1 {
		t.Error("the purge was not audited by the edge")
	}
}

func TestConcurrentCommitsShareDirectoryFsyncs(t *testing.T) {
	s, rec := openTest(t, Config{})
	var wg sync.WaitGroup
	const writers, each = 8, 25
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				w, err := s.Create("pacs", meta(g*1000+i))
				if err != nil {
					t.Error(err)
					return
				}
				w.Write(make([]byte, 512))
				if err := w.Commit(); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if list, _ := s.List("pacs", Queued); len(list) != writers*each {
		t.Fatalf("queued %d, want %d", len(list), writers*each)
	}
	if rec.count(audit.EventSpoolStored) != writers*each {
		t.Fatal("spool.stored count differs")
	}
}

func TestBackendNamesAreEscaped(t *testing.T) {
	for _, name := range []string{"pacs", "../etc", ".", "a/b", "vendor cloud", "ü"} {
		esc := escapeName(name)
		if esc == "." || esc == ".." || filepath.Base(esc) != esc {
			t.Errorf("%q escapes to unsafe %q", name, esc)
		}
		if back, ok := unescapeName(esc); !ok || back != name {
			t.Errorf("%q → %q → %q", name, esc, back)
		}
	}
}

// fakeSender stands in for a backend in the forwarder's unit tests (the
// real peers are in the proxy's and cmd's integration tests).
type fakeSender struct {
	mu     sync.Mutex
	fail   map[string]error // by SOP instance; removed when used once if once
	down   bool
	got    []string
	closed int
}

func (f *fakeSender) Batch() (int, int64) { return 3, 1 << 20 }
func (f *fakeSender) Close() error        { f.mu.Lock(); f.closed++; f.mu.Unlock(); return nil }
func (f *fakeSender) Send(_ context.Context, batch []*Entry) []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	errs := make([]error, len(batch))
	for i, e := range batch {
		switch {
		case f.down:
			errs[i] = errors.New("connection refused")
		case f.fail[e.Meta.SOPInstance] != nil:
			errs[i] = f.fail[e.Meta.SOPInstance]
		default:
			f.got = append(f.got, e.Meta.SOPInstance)
		}
	}
	return errs
}

func (f *fakeSender) delivered() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.got...)
}

func TestForwarderDrainsInOrderRetriesAndFailsPermanent(t *testing.T) {
	s, rec := openTest(t, Config{})
	for i := range 7 {
		store(t, s, "pacs", i, []byte("x"))
	}
	fs := &fakeSender{down: true, fail: map[string]error{meta(4).SOPInstance: Permanent(errors.New("status 0xC000"))}}
	var mu sync.Mutex
	results := map[string]int{}
	fw := &Forwarder{Spool: s, Backend: "pacs", Sender: fs, MinBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond,
		Result: func(_, r string) { mu.Lock(); results[r]++; mu.Unlock() }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { fw.Run(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _ := s.BackendStats("pacs")
		if st.State.LastError != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the forwarder never recorded the backend being down")
		}
		time.Sleep(10 * time.Millisecond)
	}
	fs.mu.Lock()
	fs.down = false
	fs.mu.Unlock()
	for len(fs.delivered()) < 6 {
		if time.Now().After(deadline) {
			t.Fatalf("delivered %v", fs.delivered())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	got := fs.delivered()
	for i, want := range []int{0, 1, 2, 3, 5, 6} {
		if got[i] != meta(want).SOPInstance {
			t.Fatalf("delivered %v: not in arrival order", got)
		}
	}
	failed, _ := s.List("pacs", Failed)
	if len(failed) != 1 || failed[0].Meta.SOPInstance != meta(4).SOPInstance || failed[0].Meta.LastError == "" {
		t.Fatalf("failed/ holds %+v", failed)
	}
	if q, _ := s.List("pacs", Queued); len(q) != 0 {
		t.Fatalf("%d still queued", len(q))
	}
	if rec.count(audit.EventSpoolForwarded) != 6 || rec.count(audit.EventSpoolFailed) != 1 {
		t.Errorf("forwarded %d failed %d records", rec.count(audit.EventSpoolForwarded), rec.count(audit.EventSpoolFailed))
	}
	st, _ := s.BackendStats("pacs")
	if st.State.LastError != "" || st.Failed != 1 {
		t.Errorf("state after recovery %+v", st)
	}
	// Delivered files wait, empty, in free/ for the next instances.
	if recycling {
		free, _ := os.ReadDir(filepath.Join(s.Dir(), "pacs", dirFree))
		if len(free) != 6 {
			t.Errorf("free/ holds %d files after 6 deliveries", len(free))
		}
		for _, e := range free {
			if fi, _ := e.Info(); fi.Size() != 0 {
				t.Errorf("free/%s keeps %d bytes of a delivered instance", e.Name(), fi.Size())
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if results[ResultDelivered] != 6 || results[ResultFailed] != 1 || results[ResultRetry] == 0 {
		t.Errorf("results %v", results)
	}
}
