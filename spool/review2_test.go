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

// failDirSync makes the queue directory fsyncs fail while fail returns
// true; before runs first, in the fsync's place.
func failDirSync(t *testing.T, before func(), fail func() bool) {
	t.Helper()
	orig := syncDirFile
	t.Cleanup(func() { syncDirFile = orig })
	syncDirFile = func(f *os.File) error {
		if before != nil {
			before()
		}
		if fail() {
			return errors.New("injected: input/output error")
		}
		return orig(f)
	}
}

// A spent file whose leaving queue/ was covered by a failed fsync is
// never reused, even once a later fsync succeeds: after a write error
// the kernel drops the dirty directory block rather than retry it, so a
// later fsync proves nothing about the earlier change, and a crash could
// keep the old name pointing at the next instance written into the inode.
func TestSpentFileIsNotReusedAfterAFailedQueueFsync(t *testing.T) {
	if !recycling {
		t.Skip("spent files are deleted on this system")
	}
	s, _ := openTest(t, Config{})
	var failing bool
	failDirSync(t, nil, func() bool { return failing })
	store(t, s, "pacs", 1, []byte("delivered"))
	list, _ := s.List("pacs", Queued)
	if err := s.remove(&list[0]); err != nil {
		t.Fatal(err)
	}
	d := s.dirs["pacs"]
	failing = true
	w, err := s.Create("pacs", meta(2))
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("refused"))
	if err := w.Commit(); err == nil {
		t.Fatal("the commit succeeded with a failing fsync")
	}
	failing = false
	store(t, s, "pacs", 3, []byte("a later commit whose fsync succeeds"))
	if f := d.takeFree(); f != nil {
		f.Close()
		t.Fatal("a spent file was reused though the queue fsync after it left failed")
	}
}

// A commit whose directory fsync fails frees the instance's bytes only
// when it removes the file itself: the forwarder may have delivered and
// removed it meanwhile (it is in queue/ from the rename on), freeing them
// already. Freed twice, Used() falls below what the queues hold and
// max_size no longer bounds them.
func TestFailedCommitDoesNotFreeBytesTwice(t *testing.T) {
	s, _ := openTest(t, Config{MaxSize: 1 << 20})
	var once sync.Once
	delivered := false
	failDirSync(t, func() {
		once.Do(func() {
			// The forwarder, between the rename and the fsync's end.
			list, _ := s.List("pacs", Queued)
			if len(list) == 1 && s.remove(&list[0]) == nil {
				delivered = true
			}
		})
	}, func() bool { return true })
	w, err := s.Create("pacs", meta(1))
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bytes.Repeat([]byte("x"), 1000))
	if err := w.Commit(); err == nil {
		t.Fatal("the commit succeeded with a failing fsync")
	}
	if !delivered {
		t.Fatal("the instance was not removed during the fsync")
	}
	if got := s.Used(); got != 0 {
		t.Errorf("Used() = %d after the only instance went, want 0", got)
	}
}

// purgingSender purges the first instance of its first batch while it
// is being sent, then opens each file as the real senders do (a file it
// cannot open is a permanent error).
type purgingSender struct {
	s    *Spool
	once sync.Once
}

func (p *purgingSender) Batch() (int, int64) { return 2, 1 << 20 }
func (p *purgingSender) Close() error        { return nil }
func (p *purgingSender) Send(_ context.Context, batch []*Entry) []error {
	p.once.Do(func() {
		e := *batch[0]
		if err := p.s.remove(&e); err != nil {
			panic(err)
		}
		p.s.audit(audit.EventSpoolPurged, &e.Meta, "purged from queue")
	})
	errs := make([]error, len(batch))
	for i, e := range batch {
		f, err := os.Open(e.Path)
		if err != nil {
			errs[i] = Permanent(fmt.Errorf("spooled file unreadable: %w", err))
			continue
		}
		f.Close()
	}
	return errs
}

// An instance purged (or expired) while the forwarder sends it is not
// also recorded as refused by the backend, and leaves no sidecar in
// failed/.
func TestForwarderPassesOverAnInstancePurgedWhileSent(t *testing.T) {
	s, rec := openTest(t, Config{})
	store(t, s, "pacs", 1, []byte("purged while sent"))
	store(t, s, "pacs", 2, []byte("delivered"))
	delivered := make(chan struct{}, 4)
	fw := &Forwarder{Spool: s, Backend: "pacs", Sender: &purgingSender{s: s}, MinBackoff: 10 * time.Millisecond,
		Result: func(_, r string) {
			if r == ResultDelivered {
				delivered <- struct{}{}
			}
		}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { fw.Run(ctx); close(done) }()
	select {
	case <-delivered:
	case <-time.After(5 * time.Second):
		t.Fatal("the second instance was never delivered")
	}
	cancel()
	<-done
	if n := rec.count(audit.EventSpoolFailed); n != 0 {
		t.Errorf("%d spool.failed records for an instance purged, not refused", n)
	}
	ents, _ := os.ReadDir(filepath.Join(s.Dir(), "pacs", dirFailed))
	for _, e := range ents {
		t.Errorf("failed/ holds %s", e.Name())
	}
}
